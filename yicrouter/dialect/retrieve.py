"""The C-MOVE or C-GET identifier that a peer gets, in the information model it offers."""

from __future__ import annotations

from copy import deepcopy

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from yicrouter import routing
from yicrouter.config import PeerSettings
from yicrouter.dialect.keys import parent_unique_keywords
from yicrouter.dialect.relational import fill_from_routing_table, uid_parent_levels
from yicrouter.query import UNIQUE_KEYS, InformationModel, Query, split_values


class RetrieveNotTranslatable(ValueError):
    """Raised when a retrieve can't be expressed in the information model a peer offers."""


def retrieve_request(peer: PeerSettings, query: Query) -> tuple[InformationModel, Dataset]:
    """Return the information model and identifier of a C-MOVE or C-GET to `peer`.

    With study_root_only, a Patient Root retrieve is sent in the Study Root
    model without PatientID. A PATIENT-level one becomes a STUDY-level
    retrieve of the patient's studies that the routing table has seen at this
    peer. RetrieveNotTranslatable is raised when it has seen none.

    A relational retrieve gets the parent UIDs it lacks from the routing
    table, where the table has them. With needs_parent_uids, a Patient Root one without one PatientID is
    sent in the Study Root model, since the routing table records no
    PatientID to fill in. RetrieveNotTranslatable is raised when a parent
    UID is still missing.
    """
    model = query.model
    level = query.level
    identifier = deepcopy(query.identifier)
    lacks_patient_id = len(split_values(identifier.get("PatientID", ""))) != 1
    if model is InformationModel.PATIENT_ROOT and (
        peer.study_root_only or (peer.needs_parent_uids and level != "PATIENT" and lacks_patient_id)
    ):
        model = InformationModel.STUDY_ROOT
        if level == "PATIENT":
            level = "STUDY"
            identifier = _patient_studies_identifier(peer, query)
        elif "PatientID" in identifier:
            del identifier.PatientID
    identifier.QueryRetrieveLevel = level
    if level in ("SERIES", "IMAGE"):
        # Every SCP supports the hierarchical form, so known parent UIDs are
        # added for every peer. Some, such as dcmqrscp 3.6.7, respond to a
        # relational retrieve with Success and no sub-operations.
        fill_from_routing_table(peer, identifier, uid_parent_levels(level))
        if peer.needs_parent_uids:
            _check_parent_uids_known(peer, model, level, identifier)
    return model, identifier


def _check_parent_uids_known(peer: PeerSettings, model: InformationModel, level: str, identifier: Dataset) -> None:
    # NOTE: a list of SOP Instance UIDs or Series Instance UIDs from several
    # parents is not split per parent, so such a retrieve raises here.
    for keyword in parent_unique_keywords(model, level):
        if len(split_values(identifier.get(keyword, ""))) != 1:
            raise RetrieveNotTranslatable(
                f"peer {peer.name} needs every parent UID of a retrieve, and the routing table has no "
                f"{keyword} for the requested {UNIQUE_KEYS[level]} at that peer; query it first"
            )


def _patient_studies_identifier(peer: PeerSettings, query: Query) -> Dataset:
    patient_ids = query.key_values("PatientID")
    study_uids = routing.studies_of_patients(peer.name, patient_ids)
    if not study_uids:
        raise RetrieveNotTranslatable(
            f"peer {peer.name} offers only the Study Root model, and no study of the requested "
            f"patient was seen there; query the patient's studies first"
        )
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.StudyInstanceUID = MultiValue(str, study_uids) if len(study_uids) > 1 else study_uids[0]
    return identifier
