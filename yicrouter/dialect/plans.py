"""C-FIND plans: the requests, preconditions and derived keys that one peer gets for one workstation C-FIND."""

from __future__ import annotations

from copy import deepcopy

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset

from yicrouter.config import PeerSettings
from yicrouter.dialect.derived import derived_keys_for
from yicrouter.dialect.keys import CONTROL_KEYWORDS, key_level, split_off_upper_keys, unique_keys_identifier
from yicrouter.dialect.options import finish_requests
from yicrouter.dialect.relational import lacks_parent_uid, relational_requests, translate_relational_to_study_root
from yicrouter.dialect.requests import Draft, PeerPlan
from yicrouter.query import InformationModel, Query


def plan_find(
    peer: PeerSettings, query: Query, identifier: Dataset, combined_datetime: bool = False
) -> PeerPlan:
    """Build the C-FIND requests that `peer` gets for `query`.

    `identifier` is the workstation's identifier with the unique keys the
    router needs added (see scp.find.upstream_identifier). `combined_datetime`
    is whether the workstation negotiated combined date-time matching.
    """
    draft = Draft(query.model, query.level, deepcopy(identifier))
    collapse_to = _translate_to_study_root(draft) if peer.study_root_only else None
    derive_keys = derived_keys_for(query) if collapse_to is None else ()
    if peer.needs_parent_uids and lacks_parent_uid(draft):
        translate_relational_to_study_root(draft)
    if lacks_parent_uid(draft):
        requests = relational_requests(peer, draft, combined_datetime)
        return PeerPlan(peer=peer, requests=tuple(requests), collapse_to=collapse_to, derive_keys=derive_keys)
    upper = split_off_upper_keys(draft)
    preconditions = tuple(
        finish_requests(peer, precondition, combined_datetime)[0] for precondition in _preconditions(draft, upper)
    )
    requests = finish_requests(peer, draft, combined_datetime)
    return PeerPlan(
        peer=peer,
        requests=tuple(requests),
        collapse_to=collapse_to,
        preconditions=preconditions,
        inherited_keys=tuple(keyword for keyword in upper if keyword not in CONTROL_KEYWORDS),
        derive_keys=derive_keys,
    )


def _translate_to_study_root(draft: Draft) -> str | None:
    """Rewrite a Patient Root draft in the Study Root model.

    A PATIENT-level query becomes a STUDY-level query with the same patient
    keys, and the matches are collapsed back to one per patient (the
    duplicate check of scp.find). The patient-related counts can't be
    collected from study matches, so they are not sent and come back empty.
    Returns the workstation's level when the matches need collapsing.
    """
    if draft.model is InformationModel.STUDY_ROOT:
        return None
    draft.model = InformationModel.STUDY_ROOT
    if draft.level != "PATIENT":
        return None
    draft.level = "STUDY"
    for keyword in ("NumberOfPatientRelatedStudies", "NumberOfPatientRelatedSeries",
                    "NumberOfPatientRelatedInstances"):
        if keyword in draft.identifier:
            del draft.identifier[keyword]
    if "StudyInstanceUID" not in draft.identifier:
        draft.identifier.StudyInstanceUID = ""
    return "PATIENT"


def _preconditions(draft: Draft, upper: dict[str, DataElement]) -> list[Draft]:
    """Build one hierarchical query per level above that has keys for the peer to match or return."""
    levels = draft.model.levels
    drafts = []
    for level in levels[: levels.index(draft.level)]:
        keywords = [k for k in upper if key_level(draft.model, k, draft.level) == level]
        if not keywords:
            continue
        identifier = unique_keys_identifier(draft.model, level, draft.identifier)
        for keyword in keywords:
            identifier[keyword] = deepcopy(upper[keyword])
        drafts.append(Draft(draft.model, level, identifier))
    return drafts
