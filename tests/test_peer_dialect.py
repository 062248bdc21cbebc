"""dialect: the C-FIND and retrieve identifiers that each peer option produces."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.dataset import Dataset

from yicrouter import routing
from yicrouter.config import PeerSettings
from yicrouter.db import open_database
from yicrouter.dialect import (
    MAX_SPLIT_DEPTH,
    PeerRequest,
    RetrieveNotTranslatable,
    apply_inherited,
    collapse_match,
    derivation_request,
    derive_study_keys,
    derived_keys_for,
    fill_derived,
    needs_derivation,
    plan_find,
    repair_unique_keys,
    retrieve_request,
    series_lacking_sop_class,
    split_by_study_date,
    with_parent_uids,
)
from yicrouter.query import InformationModel, Query, parse_find, parse_retrieve
from yicrouter.scp.find import upstream_identifier

PATIENT_ROOT = InformationModel.PATIENT_ROOT
STUDY_ROOT = InformationModel.STUDY_ROOT


@pytest.fixture(autouse=True)
def routing_table(tmp_path: Path) -> Iterator[None]:
    open_database(tmp_path, [routing.Location])
    yield


def _peer(**options: object) -> PeerSettings:
    return PeerSettings(name="quirky", ae_title="QUIRKY", host="127.0.0.1", port=104, **options)  # type: ignore[arg-type]


def _query(model: InformationModel, **keys: object) -> Query:
    identifier = Dataset()
    for keyword, value in keys.items():
        setattr(identifier, keyword, value)
    return parse_find(model, identifier)


def _only_request(peer: PeerSettings, query: Query, combined: bool = False) -> PeerRequest:
    plan = plan_find(peer, query, upstream_identifier(query), combined)
    assert len(plan.requests) == 1
    return plan.requests[0]


# --- Default peer -------------------------------------------------------------------


def test_default_peer_gets_request_unchanged() -> None:
    query = _query(STUDY_ROOT, QueryRetrieveLevel="STUDY", StudyDate="20240101-20240131", PatientName="")
    request = _only_request(_peer(), query)
    assert request.model is STUDY_ROOT
    assert request.identifier.StudyDate == "20240101-20240131"
    assert request.identifier.PatientName == ""
    assert request.identifier.StudyInstanceUID == ""


# --- study_root_only ----------------------------------------------------------------


def test_study_root_only_patient_level_becomes_study() -> None:
    query = _query(PATIENT_ROOT, QueryRetrieveLevel="PATIENT", PatientID="P1", PatientName="",
                   NumberOfPatientRelatedStudies="")
    plan = plan_find(_peer(study_root_only=True), query, upstream_identifier(query))
    request = plan.requests[0]
    assert request.model is STUDY_ROOT
    assert request.level == "STUDY"
    assert request.identifier.QueryRetrieveLevel == "STUDY"
    assert request.identifier.PatientID == "P1"
    assert "StudyInstanceUID" in request.identifier
    assert "NumberOfPatientRelatedStudies" not in request.identifier
    assert plan.collapse_to == "PATIENT"


def test_study_root_only_collapses_study_match() -> None:
    query = _query(PATIENT_ROOT, QueryRetrieveLevel="PATIENT", PatientID="P1", PatientName="")
    plan = plan_find(_peer(study_root_only=True), query, upstream_identifier(query))
    match = Dataset()
    match.QueryRetrieveLevel = "STUDY"
    match.PatientID = "P1"
    match.PatientName = "Doe^Jane"
    match.StudyInstanceUID = "1.2.3"
    match.StudyDate = "20240101"
    patient = collapse_match(plan, match)
    assert patient.QueryRetrieveLevel == "PATIENT"
    assert patient.PatientName == "Doe^Jane"
    assert "StudyInstanceUID" not in patient
    assert "StudyDate" not in patient


def test_study_root_only_series_drops_patient_id() -> None:
    query = _query(PATIENT_ROOT, QueryRetrieveLevel="SERIES", PatientID="P1", StudyInstanceUID="1.2.3",
                   Modality="CT")
    plan = plan_find(_peer(study_root_only=True), query, upstream_identifier(query))
    assert plan.requests[0].model is STUDY_ROOT
    assert "PatientID" not in plan.requests[0].identifier
    # PatientID is a STUDY key in the Study Root model, so a STUDY query checks it first.
    assert len(plan.preconditions) == 1
    assert plan.preconditions[0].level == "STUDY"
    assert plan.preconditions[0].identifier.PatientID == "P1"


def test_patient_root_peer_keeps_model() -> None:
    query = _query(PATIENT_ROOT, QueryRetrieveLevel="PATIENT", PatientID="P1")
    plan = plan_find(_peer(), query, upstream_identifier(query))
    assert plan.requests[0].model is PATIENT_ROOT
    assert plan.collapse_to is None


# --- universal_matching ---------------------------------------------------------------


def test_universal_keys_become_star_for_wildcard_vrs() -> None:
    query = _query(STUDY_ROOT, QueryRetrieveLevel="STUDY", PatientName="", AccessionNumber="",
                   StudyDate="", NumberOfStudyRelatedInstances="")
    identifier = _only_request(_peer(universal_matching=False), query).identifier
    assert identifier.PatientName == "*"
    assert identifier.AccessionNumber == "*"
    # DA, IS and UI do not allow wild cards (PS3.4 C.2.2.2.4), so they stay empty.
    assert identifier["StudyDate"].VM == 0
    assert identifier["NumberOfStudyRelatedInstances"].VM == 0
    assert identifier["StudyInstanceUID"].VM == 0
    assert identifier.QueryRetrieveLevel == "STUDY"


def test_universal_matching_keeps_given_values() -> None:
    query = _query(STUDY_ROOT, QueryRetrieveLevel="STUDY", PatientName="Doe*")
    identifier = _only_request(_peer(universal_matching=False), query).identifier
    assert identifier.PatientName == "Doe*"


# --- date_ranges ----------------------------------------------------------------------


def test_date_ranges_off_empties_range_keys() -> None:
    query = _query(STUDY_ROOT, QueryRetrieveLevel="STUDY", StudyDate="20240101-20240131",
                   StudyTime="0800-", PatientBirthDate="19700101")
    identifier = _only_request(_peer(date_ranges=False), query).identifier
    assert "StudyDate" in identifier
    assert identifier.StudyDate == ""
    assert identifier.StudyTime == ""
    assert identifier.PatientBirthDate == "19700101"


# --- combined_datetime ----------------------------------------------------------------


def test_independent_date_time_sent_unchanged() -> None:
    query = _query(STUDY_ROOT, QueryRetrieveLevel="STUDY", StudyDate="20240101-20240102",
                   StudyTime="080000-090000")
    request = _only_request(_peer(), query, combined=False)
    assert request.identifier.StudyTime == "080000-090000"
    assert not request.combined_datetime


def test_combined_request_drops_time_for_peer() -> None:
    query = _query(STUDY_ROOT, QueryRetrieveLevel="STUDY", StudyDate="20240101-20240102",
                   StudyTime="080000-090000")
    request = _only_request(_peer(), query, combined=True)
    assert request.identifier.StudyDate == "20240101-20240102"
    assert request.identifier.StudyTime == ""


def test_combined_request_kept_for_capable_peer() -> None:
    query = _query(STUDY_ROOT, QueryRetrieveLevel="STUDY", StudyDate="20240101-20240102",
                   StudyTime="080000-090000")
    request = _only_request(_peer(combined_datetime=True), query, combined=True)
    assert request.identifier.StudyTime == "080000-090000"
    assert request.combined_datetime


# --- ModalitiesInStudy ----------------------------------------------------------------


def test_modalities_in_study_one_request_per_value() -> None:
    query = _query(STUDY_ROOT, QueryRetrieveLevel="STUDY", ModalitiesInStudy=["CT", "MR", "CT"])
    plan = plan_find(_peer(), query, upstream_identifier(query))
    values = [request.identifier.ModalitiesInStudy for request in plan.requests]
    assert values == ["CT", "MR"]


def test_single_modality_sent_once() -> None:
    query = _query(STUDY_ROOT, QueryRetrieveLevel="STUDY", ModalitiesInStudy="CT")
    assert _only_request(_peer(), query).identifier.ModalitiesInStudy == "CT"


# --- Keys above the Query/Retrieve Level ----------------------------------------------


def test_upper_keys_move_to_precondition() -> None:
    query = Query(PATIENT_ROOT, "STUDY", _dataset(QueryRetrieveLevel="STUDY", PatientID="P1",
                                                  PatientName="Doe*", PatientSex="", StudyDate=""))
    plan = plan_find(_peer(), query, upstream_identifier(query))
    request = plan.requests[0].identifier
    assert "PatientName" not in request
    assert "PatientSex" not in request
    assert request.PatientID == "P1"
    assert len(plan.preconditions) == 1
    precondition = plan.preconditions[0]
    assert precondition.level == "PATIENT"
    assert precondition.identifier.PatientName == "Doe*"
    assert precondition.identifier.PatientID == "P1"
    assert set(plan.inherited_keys) == {"PatientName", "PatientSex"}


def test_study_root_patient_keys_stay() -> None:
    query = _query(STUDY_ROOT, QueryRetrieveLevel="STUDY", PatientName="Doe*")
    plan = plan_find(_peer(), query, upstream_identifier(query))
    assert plan.requests[0].identifier.PatientName == "Doe*"
    assert plan.preconditions == ()


# --- needs_parent_uids ------------------------------------------------------------------


def _dataset(**keys: object) -> Dataset:
    identifier = Dataset()
    for keyword, value in keys.items():
        setattr(identifier, keyword, value)
    return identifier


def test_parent_uids_from_routing_table() -> None:
    routing.record([routing.Sighting("quirky", "SERIES", "P1", "1.2.3", "1.2.3.4")])
    # A relational IMAGE query: parse_find would reject it, so the Query is built directly.
    query = Query(STUDY_ROOT, "IMAGE", _dataset(QueryRetrieveLevel="IMAGE", SeriesInstanceUID="1.2.3.4",
                                                SOPInstanceUID=""))
    request = _only_request(_peer(needs_parent_uids=True), query)
    assert request.identifier.StudyInstanceUID == "1.2.3"
    assert request.parents_from is None


def test_parent_uids_from_higher_query() -> None:
    query = Query(STUDY_ROOT, "SERIES", _dataset(QueryRetrieveLevel="SERIES", SeriesInstanceUID="",
                                                 Modality="CT"))
    request = _only_request(_peer(needs_parent_uids=True), query)
    assert request.parents_from is not None
    assert request.parents_from.level == "STUDY"
    assert request.parents_from.identifier.StudyInstanceUID == ""


def test_parent_uids_left_alone_without_option() -> None:
    query = Query(STUDY_ROOT, "SERIES", _dataset(QueryRetrieveLevel="SERIES", SeriesInstanceUID=""))
    request = _only_request(_peer(), query)
    assert request.parents_from is None
    assert "StudyInstanceUID" not in request.identifier or request.identifier.StudyInstanceUID == ""


# --- max_matches splitting ---------------------------------------------------------------


def _date_request(study_date: str, depth: int = 0) -> PeerRequest:
    return PeerRequest(STUDY_ROOT, "STUDY", _dataset(QueryRetrieveLevel="STUDY", StudyDate=study_date),
                       split_depth=depth)


def test_split_halves_closed_range() -> None:
    halves = split_by_study_date(_date_request("20240101-20240131"))
    assert [h.identifier.StudyDate for h in halves] == ["20240101-20240116", "20240117-20240131"]
    assert [h.split_depth for h in halves] == [1, 1]


@pytest.mark.parametrize("study_date", ["", "20240101", "20240101-", "-20240131", "20240101-20240101",
                                        "20240131-20240101", "20241301-20241302"])
def test_split_refuses_unsplittable_dates(study_date: str) -> None:
    assert split_by_study_date(_date_request(study_date)) == []


def test_split_stops_at_max_depth() -> None:
    assert split_by_study_date(_date_request("20240101-20241231", depth=MAX_SPLIT_DEPTH)) == []


# --- Repairing matches ----------------------------------------------------------------


def test_repair_fills_parent_key_from_query() -> None:
    query = _query(STUDY_ROOT, QueryRetrieveLevel="SERIES", StudyInstanceUID="1.2.3", SeriesInstanceUID="")
    match = _dataset(QueryRetrieveLevel="SERIES", SeriesInstanceUID="1.2.3.4")
    assert repair_unique_keys(query, match)
    assert match.StudyInstanceUID == "1.2.3"


def test_repair_fails_without_own_unique_key() -> None:
    query = _query(STUDY_ROOT, QueryRetrieveLevel="SERIES", StudyInstanceUID="1.2.3", SeriesInstanceUID="")
    match = _dataset(QueryRetrieveLevel="SERIES", StudyInstanceUID="1.2.3")
    assert not repair_unique_keys(query, match)


# --- Retrieves ------------------------------------------------------------------------


def _retrieve(model: InformationModel, **keys: object) -> Query:
    return parse_retrieve(model, _dataset(**keys))


def test_retrieve_unchanged_for_default_peer() -> None:
    model, identifier = retrieve_request(_peer(), _retrieve(PATIENT_ROOT, QueryRetrieveLevel="STUDY",
                                                            PatientID="P1", StudyInstanceUID="1.2.3"))
    assert model is PATIENT_ROOT
    assert identifier.PatientID == "P1"


def test_retrieve_study_root_only_drops_patient_id() -> None:
    model, identifier = retrieve_request(_peer(study_root_only=True), _retrieve(
        PATIENT_ROOT, QueryRetrieveLevel="SERIES", PatientID="P1", StudyInstanceUID="1.2.3",
        SeriesInstanceUID="1.2.3.4"))
    assert model is STUDY_ROOT
    assert "PatientID" not in identifier
    assert identifier.SeriesInstanceUID == "1.2.3.4"


def test_retrieve_patient_level_uses_known_studies() -> None:
    routing.record([routing.Sighting("quirky", "STUDY", "P1", "1.2.3"), routing.Sighting("quirky", "STUDY", "P1", "1.2.4"),
                    routing.Sighting("other", "STUDY", "P1", "1.2.5")])
    model, identifier = retrieve_request(_peer(study_root_only=True), _retrieve(
        PATIENT_ROOT, QueryRetrieveLevel="PATIENT", PatientID="P1"))
    assert model is STUDY_ROOT
    assert identifier.QueryRetrieveLevel == "STUDY"
    assert list(identifier.StudyInstanceUID) == ["1.2.3", "1.2.4"]
    assert "PatientID" not in identifier


def test_retrieve_patient_level_unknown_raises() -> None:
    with pytest.raises(RetrieveNotTranslatable, match="query the patient's studies first"):
        retrieve_request(_peer(study_root_only=True), _retrieve(PATIENT_ROOT, QueryRetrieveLevel="PATIENT",
                                                                PatientID="P9"))


def test_retrieve_parent_uids_from_routing_table() -> None:
    routing.record([routing.Sighting("quirky", "IMAGE", "", "1.2.3", "1.2.3.4", "1.2.3.4.5")])
    query = Query(STUDY_ROOT, "IMAGE", _dataset(QueryRetrieveLevel="IMAGE", SOPInstanceUID="1.2.3.4.5"))
    _, identifier = retrieve_request(_peer(needs_parent_uids=True), query)
    assert identifier.StudyInstanceUID == "1.2.3"
    assert identifier.SeriesInstanceUID == "1.2.3.4"


# --- Relational queries -----------------------------------------------------------------


def _relational(model: InformationModel, **keys: object) -> Query:
    return parse_find(model, _dataset(**keys), relational=True)


def test_relational_upper_key_runs_parent_query_first() -> None:
    query = _relational(STUDY_ROOT, QueryRetrieveLevel="SERIES", SeriesInstanceUID="", StudyDate="20240101-20240131")
    request = _only_request(_peer(), query)
    assert "StudyDate" not in request.identifier
    assert request.parents_from is not None
    assert request.parents_from.level == "STUDY"
    assert request.parents_from.identifier.StudyDate == "20240101-20240131"
    assert set(request.inherit_keys) == {"StudyDate", "StudyInstanceUID"}


def test_relational_without_upper_keys_sent_as_is() -> None:
    query = _relational(STUDY_ROOT, QueryRetrieveLevel="SERIES", SeriesInstanceUID="", Modality="CT")
    request = _only_request(_peer(), query)
    assert request.parents_from is None
    assert request.identifier.Modality == "CT"
    assert request.identifier.StudyInstanceUID == ""


def test_relational_image_chain_two_levels() -> None:
    query = _relational(STUDY_ROOT, QueryRetrieveLevel="IMAGE", SOPInstanceUID="")
    request = _only_request(_peer(needs_parent_uids=True), query)
    series = request.parents_from
    assert series is not None
    assert series.level == "SERIES"
    assert series.parents_from is not None
    assert series.parents_from.level == "STUDY"


def test_relational_patient_root_needs_parents_uses_study_root() -> None:
    query = _relational(PATIENT_ROOT, QueryRetrieveLevel="SERIES", SeriesInstanceUID="", Modality="MR")
    request = _only_request(_peer(needs_parent_uids=True), query)
    assert request.model is STUDY_ROOT
    assert "PatientID" not in request.identifier
    assert request.parents_from is not None
    assert request.parents_from.model is STUDY_ROOT
    assert "PatientID" in request.parents_from.identifier
    assert "PatientID" in request.inherit_keys


def test_with_parent_uids_sets_inherited_keys() -> None:
    query = _relational(STUDY_ROOT, QueryRetrieveLevel="SERIES", SeriesInstanceUID="", StudyDate="20240101-20240131")
    request = _only_request(_peer(), query)
    parent_match = _dataset(StudyInstanceUID="1.2.3", StudyDate="20240110", QueryRetrieveLevel="STUDY")
    expanded = with_parent_uids(request, parent_match)
    assert expanded is not None
    assert expanded.identifier.StudyInstanceUID == "1.2.3"
    assert expanded.parents_from is None
    match = apply_inherited(expanded, _dataset(SeriesInstanceUID="1.2.3.4"))
    assert match.StudyDate == "20240110"
    assert match.StudyInstanceUID == "1.2.3"


def test_with_parent_uids_replaces_uid_list() -> None:
    query = _relational(STUDY_ROOT, QueryRetrieveLevel="SERIES", StudyInstanceUID="1.2.3\\1.2.4", SeriesInstanceUID="")
    request = _only_request(_peer(needs_parent_uids=True), query)
    assert request.parents_from is not None
    expanded = with_parent_uids(request, _dataset(StudyInstanceUID="1.2.4"))
    assert expanded is not None
    assert expanded.identifier.StudyInstanceUID == "1.2.4"


def test_with_parent_uids_none_without_uid() -> None:
    query = _relational(STUDY_ROOT, QueryRetrieveLevel="SERIES", SeriesInstanceUID="")
    request = _only_request(_peer(needs_parent_uids=True), query)
    assert with_parent_uids(request, _dataset(StudyDate="20240110")) is None


def test_repair_relational_leaves_parent_missing() -> None:
    query = _relational(STUDY_ROOT, QueryRetrieveLevel="SERIES", SeriesInstanceUID="")
    match = _dataset(SeriesInstanceUID="1.2.3.4")
    assert repair_unique_keys(query, match)
    assert repair_unique_keys(query, _dataset(StudyInstanceUID="1.2.3")) is False


# --- Derived study keys -------------------------------------------------------------------


def test_derived_keys_only_when_constrained() -> None:
    constrained = _query(STUDY_ROOT, QueryRetrieveLevel="STUDY", ModalitiesInStudy="CT", SOPClassesInStudy="")
    assert derived_keys_for(constrained) == ("ModalitiesInStudy", "SOPClassesInStudy")
    returned_only = _query(STUDY_ROOT, QueryRetrieveLevel="STUDY", ModalitiesInStudy="")
    assert derived_keys_for(returned_only) == ()
    series = _query(STUDY_ROOT, QueryRetrieveLevel="SERIES", StudyInstanceUID="1.2.3", Modality="CT")
    assert derived_keys_for(series) == ()


def test_plan_carries_derive_keys() -> None:
    query = _query(STUDY_ROOT, QueryRetrieveLevel="STUDY", ModalitiesInStudy="CT\\MR")
    plan = plan_find(_peer(), query, upstream_identifier(query))
    assert plan.derive_keys == ("ModalitiesInStudy",)
    assert len(plan.requests) == 2


def test_derivation_request_series_level() -> None:
    query = _query(PATIENT_ROOT, QueryRetrieveLevel="STUDY", PatientID="P1", ModalitiesInStudy="CT")
    plan = plan_find(_peer(universal_matching=False), query, upstream_identifier(query))
    request = derivation_request(plan, _dataset(PatientID="P1", StudyInstanceUID="1.2.3"), "SERIES")
    assert request is not None
    assert request.model is PATIENT_ROOT
    assert request.identifier.QueryRetrieveLevel == "SERIES"
    assert request.identifier.PatientID == "P1"
    assert request.identifier.StudyInstanceUID == "1.2.3"
    assert request.identifier.Modality == "*"
    assert "SOPClassUID" not in request.identifier
    assert derivation_request(plan, _dataset(StudyInstanceUID="1.2.3"), "SERIES") is None


def test_derive_study_keys_from_series() -> None:
    query = _query(STUDY_ROOT, QueryRetrieveLevel="STUDY", ModalitiesInStudy="CT", SOPClassesInStudy="")
    plan = plan_find(_peer(), query, upstream_identifier(query))
    series = [_dataset(Modality="MR", SOPClassUID="1.2.840.10008.5.1.4.1.1.4"), _dataset(Modality="CT"),
              _dataset(Modality="MR")]
    assert series_lacking_sop_class(plan, [*series, _dataset(SeriesInstanceUID="1.2.3.9")]) == ["1.2.3.9"]
    derived = derive_study_keys(plan, series)
    assert list(derived.ModalitiesInStudy) == ["CT", "MR"]
    assert derived.SOPClassesInStudy == "1.2.840.10008.5.1.4.1.1.4"
    match = _dataset(StudyInstanceUID="1.2.3", SOPClassesInStudy="1.2.840.10008.5.1.4.1.1.2")
    fill_derived(match, derived)
    assert list(match.ModalitiesInStudy) == ["CT", "MR"]
    # A value that the peer returned is kept.
    assert match.SOPClassesInStudy == "1.2.840.10008.5.1.4.1.1.2"


def test_derive_study_keys_skips_missing_source() -> None:
    query = _query(STUDY_ROOT, QueryRetrieveLevel="STUDY", ModalitiesInStudy="CT", SOPClassesInStudy="")
    plan = plan_find(_peer(), query, upstream_identifier(query))
    derived = derive_study_keys(plan, [_dataset(Modality="CT", SeriesInstanceUID="1.2.3.4")])
    assert derived.ModalitiesInStudy == "CT"
    assert "SOPClassesInStudy" not in derived


def test_needs_derivation_for_absent_or_empty() -> None:
    query = _query(STUDY_ROOT, QueryRetrieveLevel="STUDY", ModalitiesInStudy="CT")
    plan = plan_find(_peer(), query, upstream_identifier(query))
    assert needs_derivation(plan, _dataset(StudyInstanceUID="1.2.3"))
    assert needs_derivation(plan, _dataset(StudyInstanceUID="1.2.3", ModalitiesInStudy=""))
    assert not needs_derivation(plan, _dataset(StudyInstanceUID="1.2.3", ModalitiesInStudy="MR"))


# --- Relational retrieves ------------------------------------------------------------------


def test_retrieve_relational_patient_root_uses_study_root() -> None:
    routing.record([routing.Sighting("quirky", "IMAGE", "P1", "1.2.3", "1.2.3.4", "1.2.3.4.5")])
    query = parse_retrieve(PATIENT_ROOT, _dataset(QueryRetrieveLevel="IMAGE", SOPInstanceUID="1.2.3.4.5"),
                           relational=True)
    model, identifier = retrieve_request(_peer(needs_parent_uids=True), query)
    assert model is STUDY_ROOT
    assert identifier.StudyInstanceUID == "1.2.3"
    assert identifier.SeriesInstanceUID == "1.2.3.4"
    assert "PatientID" not in identifier


def test_retrieve_relational_without_option_unchanged() -> None:
    query = parse_retrieve(PATIENT_ROOT, _dataset(QueryRetrieveLevel="IMAGE", SOPInstanceUID="1.2.3.4.5"),
                           relational=True)
    model, identifier = retrieve_request(_peer(), query)
    assert model is PATIENT_ROOT
    assert "StudyInstanceUID" not in identifier


def test_retrieve_relational_unknown_parent_raises() -> None:
    query = parse_retrieve(STUDY_ROOT, _dataset(QueryRetrieveLevel="IMAGE", SOPInstanceUID="1.2.9.9.9"),
                           relational=True)
    with pytest.raises(RetrieveNotTranslatable, match="query it first"):
        retrieve_request(_peer(needs_parent_uids=True), query)
