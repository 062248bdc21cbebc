"""Identifier checks that decide between forwarding a request and status 0xA900."""

from __future__ import annotations

import pytest
from pydicom.dataset import Dataset

from yicrouter.query import (
    InformationModel,
    InvalidIdentifier,
    model_for_sop_class,
    parse_find,
    parse_retrieve,
)

STUDY_UID = "1.2.826.0.1.3680043.8.498.1"
SERIES_UID = "1.2.826.0.1.3680043.8.498.2"


def identifier(**keys: str) -> Dataset:
    ds = Dataset()
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds


def test_model_for_find_sop_classes() -> None:
    assert model_for_sop_class("1.2.840.10008.5.1.4.1.2.1.1") is InformationModel.PATIENT_ROOT
    assert model_for_sop_class("1.2.840.10008.5.1.4.1.2.2.1") is InformationModel.STUDY_ROOT
    assert model_for_sop_class("1.2.840.10008.1.1") is None


def test_find_study_level_universal_uid() -> None:
    query = parse_find(InformationModel.STUDY_ROOT, identifier(QueryRetrieveLevel="STUDY", StudyInstanceUID=""))
    assert query.level == "STUDY"
    assert query.unique_key == "StudyInstanceUID"


def test_find_without_level_rejected() -> None:
    with pytest.raises(InvalidIdentifier, match="Query/Retrieve Level"):
        parse_find(InformationModel.STUDY_ROOT, identifier(PatientName="DOE*"))


def test_find_patient_level_not_in_study_root() -> None:
    with pytest.raises(InvalidIdentifier, match="PATIENT"):
        parse_find(InformationModel.STUDY_ROOT, identifier(QueryRetrieveLevel="PATIENT", PatientID=""))


def test_find_unknown_level_rejected() -> None:
    with pytest.raises(InvalidIdentifier, match="FOO"):
        parse_find(InformationModel.PATIENT_ROOT, identifier(QueryRetrieveLevel="FOO"))


def test_patient_root_study_needs_patient_id() -> None:
    with pytest.raises(InvalidIdentifier, match="PatientID"):
        parse_find(InformationModel.PATIENT_ROOT, identifier(QueryRetrieveLevel="STUDY", StudyInstanceUID=""))


def test_series_level_needs_one_study_uid() -> None:
    with pytest.raises(InvalidIdentifier, match="StudyInstanceUID"):
        parse_find(InformationModel.STUDY_ROOT, identifier(QueryRetrieveLevel="SERIES", SeriesInstanceUID=""))


def test_series_level_with_study_uid_accepted() -> None:
    query = parse_find(
        InformationModel.STUDY_ROOT,
        identifier(QueryRetrieveLevel="SERIES", StudyInstanceUID=STUDY_UID, SeriesInstanceUID=""),
    )
    assert query.level == "SERIES"


def test_unique_key_wildcard_rejected() -> None:
    with pytest.raises(InvalidIdentifier, match="wildcard"):
        parse_find(InformationModel.STUDY_ROOT, identifier(QueryRetrieveLevel="STUDY", StudyInstanceUID="1.2.*"))


def test_malformed_uid_rejected() -> None:
    with pytest.raises(InvalidIdentifier, match="not a valid UID"):
        parse_find(InformationModel.STUDY_ROOT, identifier(QueryRetrieveLevel="STUDY", StudyInstanceUID="1.02.abc"))


def test_uid_list_accepted() -> None:
    query = parse_find(
        InformationModel.STUDY_ROOT,
        identifier(QueryRetrieveLevel="STUDY", StudyInstanceUID=f"{STUDY_UID}\\{SERIES_UID}"),
    )
    assert query.key_values("StudyInstanceUID") == [STUDY_UID, SERIES_UID]


def test_date_range_longer_than_vr_accepted() -> None:
    query = parse_find(
        InformationModel.STUDY_ROOT,
        identifier(QueryRetrieveLevel="STUDY", StudyInstanceUID="", StudyDate="20240101-20240131"),
    )
    assert str(query.identifier.StudyDate) == "20240101-20240131"


def test_retrieve_needs_unique_key() -> None:
    with pytest.raises(InvalidIdentifier, match="required"):
        parse_retrieve(InformationModel.STUDY_ROOT, identifier(QueryRetrieveLevel="STUDY"))


def test_retrieve_study_accepted() -> None:
    query = parse_retrieve(InformationModel.STUDY_ROOT, identifier(QueryRetrieveLevel="STUDY", StudyInstanceUID=STUDY_UID))
    assert query.key_values("StudyInstanceUID") == [STUDY_UID]


def test_retrieve_level_lowercase_accepted() -> None:
    query = parse_retrieve(InformationModel.STUDY_ROOT, identifier(QueryRetrieveLevel="study", StudyInstanceUID=STUDY_UID))
    assert query.level == "STUDY"


# --- Relational queries and retrieval ---------------------------------------------------

SOP_INSTANCE_UID = "1.2.826.0.1.3680043.8.498.3"


def test_relational_series_without_study_uid_accepted() -> None:
    query = parse_find(InformationModel.STUDY_ROOT,
                       identifier(QueryRetrieveLevel="SERIES", SeriesInstanceUID="", Modality="CT"), relational=True)
    assert query.relational
    assert query.level == "SERIES"


def test_relational_patient_root_image_without_parents() -> None:
    query = parse_find(InformationModel.PATIENT_ROOT,
                       identifier(QueryRetrieveLevel="IMAGE", SOPInstanceUID=SOP_INSTANCE_UID), relational=True)
    assert query.level == "IMAGE"


def test_relational_parent_uid_list_accepted() -> None:
    keys = identifier(QueryRetrieveLevel="SERIES", StudyInstanceUID=f"{STUDY_UID}\\{SERIES_UID}", SeriesInstanceUID="")
    query = parse_find(InformationModel.STUDY_ROOT, keys, relational=True)
    assert query.key_values("StudyInstanceUID") == [STUDY_UID, SERIES_UID]


def test_relational_parent_uid_wildcard_rejected() -> None:
    keys = identifier(QueryRetrieveLevel="SERIES", StudyInstanceUID="1.2.*", SeriesInstanceUID="")
    with pytest.raises(InvalidIdentifier, match="not a valid UID"):
        parse_find(InformationModel.STUDY_ROOT, keys, relational=True)


def test_hierarchical_flag_default_rejects_missing_parent() -> None:
    keys = identifier(QueryRetrieveLevel="SERIES", SeriesInstanceUID="")
    with pytest.raises(InvalidIdentifier, match="StudyInstanceUID must hold exactly one value"):
        parse_find(InformationModel.STUDY_ROOT, keys)


def test_relational_retrieve_sop_instance_only() -> None:
    query = parse_retrieve(InformationModel.STUDY_ROOT,
                           identifier(QueryRetrieveLevel="IMAGE", SOPInstanceUID=SOP_INSTANCE_UID), relational=True)
    assert query.relational
    assert query.key_values("SOPInstanceUID") == [SOP_INSTANCE_UID]


def test_relational_retrieve_still_needs_unique_key() -> None:
    with pytest.raises(InvalidIdentifier, match="SOPInstanceUID is required"):
        parse_retrieve(InformationModel.STUDY_ROOT, identifier(QueryRetrieveLevel="IMAGE", SeriesInstanceUID=SERIES_UID),
                       relational=True)


def test_hierarchical_retrieve_rejects_missing_parents() -> None:
    with pytest.raises(InvalidIdentifier, match="must hold exactly one value"):
        parse_retrieve(InformationModel.STUDY_ROOT, identifier(QueryRetrieveLevel="IMAGE", SOPInstanceUID=SOP_INSTANCE_UID))


@pytest.mark.parametrize("value", ["20240115", "-20240115", "20240101-", "20240101-20240131", "*", ""])
def test_date_forms_accepted(value: str) -> None:
    query = parse_find(InformationModel.STUDY_ROOT, identifier(QueryRetrieveLevel="STUDY", StudyDate=value))
    assert query.level == "STUDY"


@pytest.mark.parametrize("value", ["2024-01-15", "20241345", "20240230", "-", "20240101-20240131-20240201", "2024"])
def test_invalid_date_rejected(value: str) -> None:
    with pytest.raises(InvalidIdentifier, match="StudyDate"):
        parse_find(InformationModel.STUDY_ROOT, identifier(QueryRetrieveLevel="STUDY", StudyDate=value))


def test_parent_patient_id_wildcard_rejected() -> None:
    keys = identifier(QueryRetrieveLevel="STUDY", PatientID="PB*", StudyInstanceUID="")
    with pytest.raises(InvalidIdentifier, match="PatientID"):
        parse_find(InformationModel.PATIENT_ROOT, keys)


def test_retrieve_patient_id_wildcard_rejected() -> None:
    keys = identifier(QueryRetrieveLevel="PATIENT", PatientID="PM*")
    with pytest.raises(InvalidIdentifier, match="wildcards"):
        parse_retrieve(InformationModel.PATIENT_ROOT, keys)
