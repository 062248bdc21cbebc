"""The keys of a C-FIND or retrieve identifier: the Query/Retrieve Level of each, and the unique keys above a level."""

from __future__ import annotations

from copy import deepcopy
from typing import Final

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset

from yicrouter.dialect.requests import Draft
from yicrouter.query import UNIQUE_KEYS, InformationModel, split_values

# Keys that never take part in matching and are never sent as "*".
CONTROL_KEYWORDS: Final = frozenset({"QueryRetrieveLevel", "SpecificCharacterSet"})

# The level that each key belongs to in the Patient Root model (PS3.4 tables
# C.6-1 to C.6-4). In the Study Root model the patient keys are STUDY keys
# (table C.6-5). A key not listed here is taken to belong to the
# Query/Retrieve Level of the request, so it is sent to the peer unchanged.
PATIENT_KEYS: Final = frozenset({
    "PatientName", "PatientID", "IssuerOfPatientID", "IssuerOfPatientIDQualifiersSequence",
    "PatientBirthDate", "PatientBirthTime", "PatientSex", "OtherPatientIDsSequence",
    "OtherPatientNames", "EthnicGroup", "PatientComments", "NumberOfPatientRelatedStudies",
    "NumberOfPatientRelatedSeries", "NumberOfPatientRelatedInstances",
})
_STUDY_KEYS: Final = frozenset({
    "StudyDate", "StudyTime", "AccessionNumber", "IssuerOfAccessionNumberSequence", "StudyID",
    "StudyInstanceUID", "ReferringPhysicianName", "StudyDescription", "ProcedureCodeSequence",
    "NameOfPhysiciansReadingStudy", "AdmittingDiagnosesDescription", "PatientAge", "PatientSize",
    "PatientWeight", "Occupation", "AdditionalPatientHistory", "OtherStudyNumbers",
    "ModalitiesInStudy", "SOPClassesInStudy", "AnatomicRegionsInStudyCodeSequence",
    "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances",
})
_SERIES_KEYS: Final = frozenset({
    "Modality", "SeriesNumber", "SeriesInstanceUID", "SeriesDescription", "SeriesDate",
    "SeriesTime", "BodyPartExamined", "Laterality", "ProtocolName", "OperatorsName",
    "PerformingPhysicianName", "PerformedProcedureStepStartDate",
    "PerformedProcedureStepStartTime", "RequestAttributesSequence",
    "NumberOfSeriesRelatedInstances",
})


def key_level(model: InformationModel, keyword: str, query_level: str) -> str:
    """Return the Query/Retrieve Level that a key belongs to in `model`."""
    if keyword in PATIENT_KEYS:
        return "PATIENT" if model is InformationModel.PATIENT_ROOT else "STUDY"
    if keyword in _STUDY_KEYS:
        return "STUDY"
    if keyword in _SERIES_KEYS:
        return "SERIES"
    if keyword == "SOPInstanceUID":
        return "IMAGE"
    return query_level


def parent_unique_keywords(model: InformationModel, level: str) -> list[str]:
    levels = model.levels
    return [UNIQUE_KEYS[parent] for parent in levels[: levels.index(level)]]


def unique_keys_identifier(model: InformationModel, level: str, source: Dataset) -> Dataset:
    """Return an identifier at `level` with the unique keys of that level and the levels above.

    Each key is copied from `source`, or sent empty as a return key when `source` lacks it.
    """
    identifier = Dataset()
    identifier.QueryRetrieveLevel = level
    levels = model.levels
    for parent in levels[: levels.index(level) + 1]:
        keyword = UNIQUE_KEYS[parent]
        if keyword in source:
            identifier[keyword] = deepcopy(source[keyword])
        else:
            setattr(identifier, keyword, "")
    return identifier


def single_value(identifier: Dataset, keyword: str) -> str:
    values = split_values(identifier.get(keyword, ""))
    return values[0] if len(values) == 1 else ""


def split_off_upper_keys(draft: Draft) -> dict[str, DataElement]:
    """Remove the keys of levels above the draft's level, except the unique keys.

    Baseline hierarchical C-FIND allows only the unique keys of the levels
    above (PS3.4 C.4.1.2.1), and peers without relational support treat the
    others in different ways. Returns the removed keys with their values.
    """
    levels = draft.model.levels
    above = set(levels[: levels.index(draft.level)])
    parent_unique = {UNIQUE_KEYS[level] for level in above}
    removed: dict[str, DataElement] = {}
    for element in list(draft.identifier):
        keyword = element.keyword
        if not keyword or keyword in CONTROL_KEYWORDS or keyword in parent_unique:
            continue
        if key_level(draft.model, keyword, draft.level) in above:
            removed[keyword] = element
            del draft.identifier[keyword]
    return removed
