"""The router's re-matching of peer matches (PS3.4 C.2.2.2), without the network.

Also checks that the identifier checks of yicrouter.query keep every valid
form of matching key, so that none is rejected before it reaches a peer.
"""

from __future__ import annotations

import pytest
from pydicom import config
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.tag import Tag

from yicrouter.matching import MatchRules, dataset_matches, is_true_match
from yicrouter.query import InformationModel, parse_find

RULES = MatchRules()
CASE_SENSITIVE = MatchRules(patient_name_case_sensitive=True)
COMBINED = MatchRules(combined_datetime=True)


def dataset(**values: object) -> Dataset:
    """Build a dataset without validation, because keys such as "1.2.*" are invalid values."""
    ds = Dataset()
    for keyword, value in values.items():
        tag = Tag(keyword)
        ds.add(DataElement(tag, dictionary_VR(tag), value, validation_mode=config.IGNORE))
    return ds


def item_sequence(keyword: str, items: list[Dataset]) -> Dataset:
    ds = Dataset()
    setattr(ds, keyword, items)
    return ds


@pytest.mark.parametrize(
    ("keyword", "key", "stored", "expected"),
    [
        # Single value and universal matching.
        ("PatientID", "P1", "P1", True),
        ("PatientID", "P1", "P2", False),
        ("PatientID", "p1", "P1", False),
        ("PatientID", "", "P9", True),
        ("AccessionNumber", "A1", "A1 ", True),
        ("StudyDescription", "Chest", "  Chest  ", True),
        # Wild cards, only in VRs that allow them.
        ("PatientID", "P*", "P1", True),
        ("PatientID", "P?", "P12", False),
        ("StudyDescription", "*Chest*", "CT chest abdomen", False),
        ("StudyDescription", "*ches?*", "CT chest abdomen", True),
        ("StudyDescription", "*ches?", "CT chest abdomen", False),
        ("StudyInstanceUID", "1.2.*", "1.2.3", False),
        ("StudyInstanceUID", "*", "1.2.3", False),
        # List of UID matching.
        ("StudyInstanceUID", "1.2.3\\1.2.4", "1.2.4", True),
        ("StudyInstanceUID", "1.2.3\\1.2.4", "1.2.5", False),
        ("SOPClassesInStudy", "1.2.840.10008.5.1.4.1.1.2", ["1.2.840.10008.5.1.4.1.1.4", "1.2.840.10008.5.1.4.1.1.2"], True),
        # Multiple values in the stored attribute or the key.
        ("ModalitiesInStudy", "CT", ["MR", "CT"], True),
        ("ModalitiesInStudy", "CT", "MR", False),
        ("ModalitiesInStudy", ["CT", "PT"], ["MR", "PT"], True),
        ("ModalitiesInStudy", ["CT", "PT"], ["MR", "SR"], False),
        # Number strings compare as numbers.
        ("SeriesNumber", "7", "007", True),
        ("SeriesNumber", "7", "8", False),
        # Date ranges, open at either end, and single dates.
        ("StudyDate", "20240101-20240131", "20240131", True),
        ("StudyDate", "20240101-20240131", "20240201", False),
        ("StudyDate", "-20240115", "20240115", True),
        ("StudyDate", "-20240115", "20240116", False),
        ("StudyDate", "20240101-", "20231231", False),
        ("StudyDate", "20240101-", "20991231", True),
        ("StudyDate", "20240115", "20240115", True),
        ("StudyDate", "20240115", "20240116", False),
        # Time ranges, and single times that cover their precision.
        ("StudyTime", "080000-120000", "101500", True),
        ("StudyTime", "080000-120000", "120001", False),
        ("StudyTime", "08-12", "125959.999", True),
        ("StudyTime", "-0800", "075959", True),
        ("StudyTime", "1015", "101530.25", True),
        ("StudyTime", "1015", "1016", False),
        ("StudyTime", "080000.000000-120000.000000", "1000", True),
        # Date-time ranges, with and without UTC offsets.
        ("AcquisitionDateTime", "20240101-20240131", "20240131235959", True),
        ("AcquisitionDateTime", "20240101-20240131", "20240201000000", False),
        ("AcquisitionDateTime", "20240101-", "20240115120000-0500", True),
        ("AcquisitionDateTime", "-202312", "20240101", False),
    ],
)
def test_single_element_rules(keyword: str, key: object, stored: object, expected: bool) -> None:
    assert is_true_match(dataset(**{keyword: key}), dataset(**{keyword: stored}), RULES) is expected


@pytest.mark.parametrize(
    ("key", "stored", "expected"),
    [
        ("DOE^JOHN", "DOE^JOHN", True),
        ("doe^john", "DOE^JOHN", True),
        ("DOE^JOHN", "DOE^JOHN^^^", True),
        ("DOE^JOHN^", "DOE^JOHN", True),
        ("DOE^JOHN", "DOE^JOHN==", True),
        ("DOE^JOHN", "DOE^JANE", False),
        ("DOE", "DOE^JOHN", False),
        ("DOE^*", "DOE", True),
        ("DOE^J*", "DOE^JOHN^^^", True),
        ("DOE^J*", "DOE", False),
        ("do?^john", "DOE^JOHN", True),
        ("Wang", "Wang^XiaoDong=王^小東", False),
        ("Wang*", "Wang^XiaoDong=王^小東", True),
        ("*XiaoDong*", "Wang^XiaoDong=王^小東", True),
        ("*小東*", "Wang^XiaoDong=王^小東", True),
        ("=王*", "Wang^XiaoDong=王^小東", True),
        ("=王^小東", "Wang^XiaoDong=王^小東", True),
        ("=李*", "Wang^XiaoDong=王^小東", False),
        ("Wang^XiaoDong=王^小東", "Wang^XiaoDong=王^小東", True),
        ("Wang^XiaoDong=李^小東", "Wang^XiaoDong=王^小東", False),
        ("Wang^XiaoDong", "Wang^XiaoDong=王^小東", True),
        ("müller^hans", "MÜLLER^HANS", True),
        ("*", "", True),
    ],
)
def test_person_name_rules(key: str, stored: str, expected: bool) -> None:
    assert is_true_match(dataset(PatientName=key), dataset(PatientName=stored), RULES) is expected


def test_person_name_case_sensitive() -> None:
    keys = dataset(PatientName="doe^john")
    assert not is_true_match(keys, dataset(PatientName="DOE^JOHN"), CASE_SENSITIVE)
    assert is_true_match(keys, dataset(PatientName="doe^john^^"), CASE_SENSITIVE)
    assert not is_true_match(dataset(PatientName="doe*"), dataset(PatientName="DOE^JOHN"), CASE_SENSITIVE)


def test_absent_attribute_keeps_match() -> None:
    keys = dataset(ModalitiesInStudy="CT", StudyDate="20240101-")
    assert is_true_match(keys, dataset(PatientID="P1"), RULES)


def test_absent_attribute_fails_stored_entity() -> None:
    keys = dataset(ModalitiesInStudy="CT")
    assert not dataset_matches(keys, dataset(PatientID="P1"))


def test_zero_length_value_fails_key() -> None:
    assert not is_true_match(dataset(ModalitiesInStudy="CT"), dataset(ModalitiesInStudy=""), RULES)
    assert not is_true_match(dataset(StudyDate="20240101-"), dataset(StudyDate=""), RULES)
    assert is_true_match(dataset(StudyDate=""), dataset(StudyDate=""), RULES)


def test_ignored_key_caught() -> None:
    """A peer that ignores ModalitiesInStudy returns an MR study to a CT query."""
    keys = dataset(QueryRetrieveLevel="STUDY", StudyInstanceUID="", ModalitiesInStudy="CT")
    mr_study = dataset(QueryRetrieveLevel="STUDY", StudyInstanceUID="1.2.3", ModalitiesInStudy=["MR", "SR"])
    assert not is_true_match(keys, mr_study, RULES)


def test_return_only_keys_not_matched() -> None:
    keys = dataset(
        QueryRetrieveLevel="STUDY",
        SpecificCharacterSet="ISO_IR 100",
        RetrieveAETitle="SOMEWHERE",
        NumberOfStudyRelatedInstances="5",
        InstanceAvailability="ONLINE",
        TimezoneOffsetFromUTC="+0100",
    )
    match = dataset(
        QueryRetrieveLevel="SERIES",
        SpecificCharacterSet="ISO_IR 192",
        RetrieveAETitle="PEER",
        NumberOfStudyRelatedInstances="12",
        InstanceAvailability="NEARLINE",
        TimezoneOffsetFromUTC="-0500",
    )
    assert is_true_match(keys, match, RULES)


def test_date_and_time_independent() -> None:
    """Without combined matching the date range and the time range apply separately."""
    keys = dataset(StudyDate="20240105-20240107", StudyTime="1000-1800")
    assert is_true_match(keys, dataset(StudyDate="20240106", StudyTime="1200"), RULES)
    assert not is_true_match(keys, dataset(StudyDate="20240106", StudyTime="0900"), RULES)
    assert not is_true_match(keys, dataset(StudyDate="20240108", StudyTime="1200"), RULES)


def test_date_and_time_combined() -> None:
    """With combined matching 20240105-20240107 with 1000-1800 is one span of date-times."""
    keys = dataset(StudyDate="20240105-20240107", StudyTime="1000-1800")
    assert is_true_match(keys, dataset(StudyDate="20240106", StudyTime="0900"), COMBINED)
    assert not is_true_match(keys, dataset(StudyDate="20240105", StudyTime="0900"), COMBINED)
    assert is_true_match(keys, dataset(StudyDate="20240107", StudyTime="175959"), COMBINED)
    assert not is_true_match(keys, dataset(StudyDate="20240107", StudyTime="1801"), COMBINED)


def test_combined_open_ranges() -> None:
    keys = dataset(StudyDate="20240105-", StudyTime="1000-")
    assert is_true_match(keys, dataset(StudyDate="20991231", StudyTime="0000"), COMBINED)
    assert not is_true_match(keys, dataset(StudyDate="20240105", StudyTime="0959"), COMBINED)


def test_combined_without_stored_time() -> None:
    """A peer that omits the time is judged on the date alone."""
    keys = dataset(StudyDate="20240105-20240107", StudyTime="1000-1800")
    assert is_true_match(keys, dataset(StudyDate="20240106"), COMBINED)
    assert not is_true_match(keys, dataset(StudyDate="20240108"), COMBINED)


def test_sequence_any_item_matches() -> None:
    stored = item_sequence("RequestAttributesSequence", [dataset(RequestedProcedureID="RP1"), dataset(RequestedProcedureID="RP2")])
    wanted = item_sequence("RequestAttributesSequence", [dataset(RequestedProcedureID="RP2")])
    other = item_sequence("RequestAttributesSequence", [dataset(RequestedProcedureID="RP3")])
    assert is_true_match(wanted, stored, RULES)
    assert not is_true_match(other, stored, RULES)


def test_sequence_item_keys_all_apply() -> None:
    stored = item_sequence(
        "RequestAttributesSequence",
        [dataset(RequestedProcedureID="RP1", ScheduledProcedureStepID="S1"),
         dataset(RequestedProcedureID="RP2", ScheduledProcedureStepID="S2")],
    )
    same_item = item_sequence("RequestAttributesSequence", [dataset(RequestedProcedureID="RP2", ScheduledProcedureStepID="S2")])
    across_items = item_sequence("RequestAttributesSequence", [dataset(RequestedProcedureID="RP1", ScheduledProcedureStepID="S2")])
    assert is_true_match(same_item, stored, RULES)
    assert not is_true_match(across_items, stored, RULES)


def test_sequence_universal_and_absent() -> None:
    universal = item_sequence("RequestAttributesSequence", [dataset(RequestedProcedureID="")])
    wanted = item_sequence("RequestAttributesSequence", [dataset(RequestedProcedureID="RP2")])
    empty = item_sequence("RequestAttributesSequence", [])
    assert is_true_match(universal, empty, RULES)
    assert is_true_match(wanted, dataset(PatientID="P1"), RULES)
    assert not is_true_match(wanted, empty, RULES)


def test_every_key_must_match() -> None:
    keys = dataset(PatientName="DOE*", StudyDate="2024", ModalitiesInStudy="CT")
    assert is_true_match(keys, dataset(PatientName="DOE^JOHN", StudyDate="20240607", ModalitiesInStudy=["CT"]), RULES)
    assert not is_true_match(keys, dataset(PatientName="DOE^JOHN", StudyDate="20240607", ModalitiesInStudy=["MR"]), RULES)


# --- identifier checks keep valid matching keys -----------------------------------


@pytest.mark.parametrize(
    ("keyword", "value"),
    [
        ("StudyDate", "20240101-20240131"),
        ("StudyDate", "-20240115"),
        ("StudyDate", "20240115-"),
        ("StudyTime", "080000.000000-120000.000000"),
        ("StudyTime", "-1200"),
        ("AcquisitionDateTime", "20240101000000.000000+0100-20240131235959.999999+0100"),
        ("StudyInstanceUID", "1.2.826.0.1.3680043.8.498.1\\1.2.826.0.1.3680043.8.498.2"),
        ("PatientName", "Wang^XiaoDong=王^小東"),
        ("PatientName", "=王*"),
        ("PatientName", "*XiaoDong*"),
        ("PatientName", "DOE^J?HN"),
        ("ModalitiesInStudy", "CT\\MR"),
    ],
)
def test_parse_find_keeps_key(keyword: str, value: str) -> None:
    identifier = dataset(QueryRetrieveLevel="STUDY", **{keyword: value})
    if "StudyInstanceUID" not in identifier:
        identifier.StudyInstanceUID = ""
    query = parse_find(InformationModel.STUDY_ROOT, identifier)
    assert query.identifier[keyword].value == identifier[keyword].value


def test_parse_find_keeps_sequence_key() -> None:
    identifier = dataset(QueryRetrieveLevel="STUDY", StudyInstanceUID="")
    identifier.RequestAttributesSequence = [dataset(RequestedProcedureID="RP2")]
    query = parse_find(InformationModel.STUDY_ROOT, identifier)
    assert query.identifier.RequestAttributesSequence[0].RequestedProcedureID == "RP2"
