"""Peer quirk options, each against a SamplePacs peer that shows the quirk.

Most tests configure two peers that show the same quirk: "plain" without
the router option and "tuned" with it. The plain peer shows that the quirk
is real (its C-FIND fails or returns the wrong list), and the tuned peer
shows that the option works around it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.pdu_primitives import SOPClassExtendedNegotiation
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind  # type: ignore[attr-defined]

from harness.dcmtk import run_findscu
from harness.orthanc import OrthancServer
from harness.ports import DicomNode, free_port
from harness.quirk_region import (
    ROUTER_AE,
    WORKSTATION_AE,
    FakePeer,
    QuirkRegion,
    StudyRecipe,
    build_studies,
    start_quirk_region,
)
from harness.router import PeerEntry, RouterProcess, WorkstationEntry
from yicrouter import routing, status
from yicrouter.config import PeerSettings
from yicrouter.db import open_database
from yicrouter.demo.samplepacs import FaultOptions
from yicrouter.dialect import plan_find
from yicrouter.fanout import Fanout
from yicrouter.peer_find import COMBINED_DATETIME_INFORMATION
from yicrouter.query import InformationModel, Query

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

RECIPES = {
    "jan": StudyRecipe("QK-1", "Quirk^Jan", "20240110"),
    "feb": StudyRecipe("QK-1", "Quirk^Jan", "20240212", source="MR_small.dcm"),
    "mar": StudyRecipe("QK-2", "Quirk^Mar", "20240305"),
    "apr": StudyRecipe("QK-3", "Quirk^Apr", "20240420", source="MR_small.dcm"),
}


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[..., QuirkRegion]]:
    regions: list[QuirkRegion] = []

    def start_region(*fake_peers: FakePeer) -> QuirkRegion:
        region = start_quirk_region(tmp_path / f"region-{len(regions)}", RECIPES, list(fake_peers))
        regions.append(region)
        return region

    yield start_region
    for region in regions:
        region.stop()


def _pair(faults: FaultOptions, studies: tuple[str, ...], **options: object) -> tuple[FakePeer, FakePeer]:
    return (FakePeer("plain", faults, studies), FakePeer("tuned", faults, studies, dict(options)))


def _completed(region: QuirkRegion) -> str:
    return region.router.wait_for_log(r"find_completed[^\n]*").group(0)


def _study_uids(datasets: list[Dataset]) -> set[str]:
    return {str(ds.StudyInstanceUID) for ds in datasets}


def _find(region: QuirkRegion, keys: dict[str, str | None], model: str = "study"):  # type: ignore[no-untyped-def]
    return run_findscu(region.router.node, keys, model=model, calling_ae=WORKSTATION_AE)  # type: ignore[arg-type]


# --- study_root_only ------------------------------------------------------------------


def test_study_root_only_patient_query(start: Callable[..., QuirkRegion]) -> None:
    region = start(*_pair(FaultOptions(study_root_only=True), ("jan", "feb"), study_root_only=True))
    result = _find(region, {"QueryRetrieveLevel": "PATIENT", "PatientID": "QK-1", "PatientName": None},
                   model="patient")
    assert result.final_status == status.SUCCESS, result.describe()
    # Two studies of one patient collapse into one patient match.
    assert len(result.datasets) == 1
    assert str(result.datasets[0].PatientName) == "Quirk^Jan"
    assert result.datasets[0].QueryRetrieveLevel == "PATIENT"
    completed = _completed(region)
    assert "failed_peers=['plain']" in completed
    assert "'tuned': 2" in completed


def test_study_root_only_series_query(start: Callable[..., QuirkRegion]) -> None:
    region = start(*_pair(FaultOptions(study_root_only=True), ("jan",), study_root_only=True))
    study = region.studies["jan"]
    result = _find(region, {"QueryRetrieveLevel": "SERIES", "PatientID": "QK-1",
                            "StudyInstanceUID": study.study_uid, "SeriesInstanceUID": None}, model="patient")
    assert result.final_status == status.SUCCESS, result.describe()
    assert len(result.datasets) == 1
    # The Study Root peer doesn't return PatientID at SERIES level; the router fills it in.
    assert result.datasets[0].PatientID == "QK-1"
    assert "failed_peers=['plain']" in _completed(region)


def test_study_root_only_wrong_patient_empty(start: Callable[..., QuirkRegion]) -> None:
    region = start(FakePeer("tuned", FaultOptions(study_root_only=True), ("jan",), {"study_root_only": True}))
    study = region.studies["jan"]
    result = _find(region, {"QueryRetrieveLevel": "SERIES", "PatientID": "QK-2",
                            "StudyInstanceUID": study.study_uid, "SeriesInstanceUID": None}, model="patient")
    assert result.final_status == status.SUCCESS, result.describe()
    assert result.datasets == []


# --- universal_matching ---------------------------------------------------------------


def test_universal_matching_off_sends_star(start: Callable[..., QuirkRegion]) -> None:
    region = start(*_pair(FaultOptions(reject_universal_keys=True, record_identifiers=True), ("jan", "mar"),
                          universal_matching=False))
    result = _find(region, {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": None, "PatientName": None,
                            "AccessionNumber": None})
    assert result.final_status == status.SUCCESS, result.describe()
    assert _study_uids(result.datasets) == {region.studies["jan"].study_uid, region.studies["mar"].study_uid}
    assert "failed_peers=['plain']" in _completed(region)
    sent = region.peers["tuned"].find_identifiers[0]
    assert sent.PatientName == "*"
    assert sent.AccessionNumber == "*"


# --- date_ranges ----------------------------------------------------------------------


def test_date_ranges_off_matched_locally(start: Callable[..., QuirkRegion]) -> None:
    region = start(*_pair(FaultOptions(reject_date_ranges=True, record_identifiers=True), ("jan", "feb", "mar"),
                          date_ranges=False))
    result = _find(region, {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": None,
                            "StudyDate": "20240201-20240331"})
    assert result.final_status == status.SUCCESS, result.describe()
    assert _study_uids(result.datasets) == {region.studies["feb"].study_uid, region.studies["mar"].study_uid}
    completed = _completed(region)
    assert "failed_peers=['plain']" in completed
    assert "dropped_not_matching=1" in completed
    # The date is still a return key, so the router can match it.
    assert region.peers["tuned"].find_identifiers[0].StudyDate == ""
    assert {str(ds.StudyDate) for ds in result.datasets} == {"20240212", "20240305"}


# --- max_matches ----------------------------------------------------------------------


def test_max_matches_splits_date_range(start: Callable[..., QuirkRegion]) -> None:
    region = start(*_pair(FaultOptions(max_matches=2, record_identifiers=True), ("jan", "feb", "mar", "apr"),
                          max_matches=2))
    result = _find(region, {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": None,
                            "StudyDate": "20240101-20241231"})
    assert result.final_status == status.SUCCESS, result.describe()
    assert len(result.datasets) == 4
    completed = _completed(region)
    # The plain peer silently returned its first two studies only.
    assert "'plain': 2" in completed
    assert len(region.peers["plain"].find_identifiers) == 1
    assert len(region.peers["tuned"].find_identifiers) > 1


def test_max_matches_unsplittable_is_out_of_resources(start: Callable[..., QuirkRegion]) -> None:
    region = start(FakePeer("tuned", FaultOptions(max_matches=2), ("jan", "feb", "mar"), {"max_matches": 2}))
    result = _find(region, {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": None})
    assert result.final_status == status.FIND_OUT_OF_RESOURCES, result.describe()
    region.router.wait_for_log(r"peer_find_truncated[^\n]*peer=tuned")


def test_max_matches_below_limit_succeeds(start: Callable[..., QuirkRegion]) -> None:
    region = start(FakePeer("tuned", FaultOptions(max_matches=2), ("jan",), {"max_matches": 2}))
    result = _find(region, {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": None})
    assert result.final_status == status.SUCCESS, result.describe()
    assert len(result.datasets) == 1


# --- combined date-time matching ----------------------------------------------------------


def _find_negotiated(region: QuirkRegion, keys: dict[str, str], combined: bool) -> tuple[int, list[Dataset]]:
    """Send a Study Root C-FIND with pynetdicom, proposing combined date-time matching when asked."""
    ae = AE(ae_title=WORKSTATION_AE)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    extended = []
    if combined:
        item = SOPClassExtendedNegotiation()
        item.sop_class_uid = StudyRootQueryRetrieveInformationModelFind
        item.service_class_application_information = COMBINED_DATETIME_INFORMATION
        extended.append(item)
    assoc = ae.associate("127.0.0.1", region.router.port, ae_title=ROUTER_AE, ext_neg=extended or None)
    assert assoc.is_established
    if combined:
        accepted = {str(uid): info for uid, info in assoc.acceptor.sop_class_extended.items()}
        assert accepted.get(StudyRootQueryRetrieveInformationModelFind) == COMBINED_DATETIME_INFORMATION
    identifier = Dataset()
    for keyword, value in keys.items():
        setattr(identifier, keyword, value)
    matches = []
    final = -1
    for rsp, match in assoc.send_c_find(identifier, StudyRootQueryRetrieveInformationModelFind):
        final = int(rsp.Status)
        if match is not None and status.is_pending(final):
            matches.append(match)
    assoc.release()
    return final, matches


def test_combined_datetime_negotiated(start: Callable[..., QuirkRegion]) -> None:
    region = start(FakePeer("default", FaultOptions(record_identifiers=True), ("jan",)))
    # The study is at 10:15 on 20240110. Combined, the range runs from 20240110 08:00 to
    # 20240111 09:00 and contains it; independently, 10:15 is outside 08:00-09:00.
    keys = {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": "", "StudyDate": "20240110-20240111",
            "StudyTime": "080000-090000"}
    final, matches = _find_negotiated(region, keys, combined=True)
    assert final == status.SUCCESS
    assert [str(m.StudyInstanceUID) for m in matches] == [region.studies["jan"].study_uid]
    assert region.peers["default"].find_identifiers[-1].StudyTime == ""

    final, matches = _find_negotiated(region, keys, combined=False)
    assert final == status.SUCCESS
    assert matches == []
    assert region.peers["default"].find_identifiers[-1].StudyTime == "080000-090000"


def test_combined_datetime_peer_not_accepting(start: Callable[..., QuirkRegion]) -> None:
    region = start(FakePeer("claims", FaultOptions(), ("jan",), {"combined_datetime": True}))
    keys = {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": "", "StudyDate": "20240110-20240111",
            "StudyTime": "080000-090000"}
    final, _ = _find_negotiated(region, keys, combined=True)
    assert final == status.SUCCESS
    region.router.wait_for_log(r"peer_combined_datetime_not_accepted[^\n]*peer=claims")


# --- ModalitiesInStudy with several values --------------------------------------------------


def test_modalities_in_study_split_per_value(start: Callable[..., QuirkRegion]) -> None:
    region = start(FakePeer("peer", FaultOptions(record_identifiers=True), ("jan", "feb", "mar", "apr")))
    result = _find(region, {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": None, "ModalitiesInStudy": "CT\\MR"})
    assert result.final_status == status.SUCCESS, result.describe()
    assert len(result.datasets) == 4
    sent = [str(ds.ModalitiesInStudy) for ds in region.peers["peer"].find_identifiers]
    assert sorted(sent) == ["CT", "MR"]


# --- Keys above the Query/Retrieve Level ----------------------------------------------------


def test_relational_keys_checked_at_upper_level(start: Callable[..., QuirkRegion]) -> None:
    region = start(FakePeer("strict", FaultOptions(reject_relational_keys=True, record_identifiers=True),
                            ("jan", "feb", "mar")))
    keys = {"QueryRetrieveLevel": "STUDY", "PatientID": "QK-1", "StudyInstanceUID": None, "PatientName": "Quirk^J*"}
    result = _find(region, keys, model="patient")
    assert result.final_status == status.SUCCESS, result.describe()
    assert _study_uids(result.datasets) == {region.studies["jan"].study_uid, region.studies["feb"].study_uid}
    assert {str(ds.PatientName) for ds in result.datasets} == {"Quirk^Jan"}
    assert "failed_peers=[]" in _completed(region)

    wrong_name = _find(region, {**keys, "PatientName": "Nobody*"}, model="patient")
    assert wrong_name.final_status == status.SUCCESS, wrong_name.describe()
    assert wrong_name.datasets == []
    levels = [str(ds.QueryRetrieveLevel) for ds in region.peers["strict"].find_identifiers]
    assert levels == ["PATIENT", "STUDY", "PATIENT"]


# --- Matches without a unique key ---------------------------------------------------------


def test_missing_parent_uid_repaired(start: Callable[..., QuirkRegion]) -> None:
    region = start(FakePeer("terse", FaultOptions(omit_match_keys=("StudyInstanceUID",)), ("jan",)))
    study = region.studies["jan"]
    result = _find(region, {"QueryRetrieveLevel": "SERIES", "StudyInstanceUID": study.study_uid,
                            "SeriesInstanceUID": None})
    assert result.final_status == status.SUCCESS, result.describe()
    assert len(result.datasets) == 1
    assert result.datasets[0].StudyInstanceUID == study.study_uid


def test_missing_unique_key_dropped_once(start: Callable[..., QuirkRegion]) -> None:
    region = start(FakePeer("terse", FaultOptions(omit_match_keys=("StudyInstanceUID",)), ("jan", "mar")),
                   FakePeer("fine", FaultOptions(), ("apr",)))
    result = _find(region, {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": None})
    assert result.final_status == status.SUCCESS, result.describe()
    assert _study_uids(result.datasets) == {region.studies["apr"].study_uid}
    region.router.wait_for_log(r"find_completed")
    warnings = re.findall(r"find_matches_dropped[^\n]*", region.router.log_text())
    assert len(warnings) == 1
    assert "peer=terse" in warnings[0]
    assert "dropped=2" in warnings[0]


# --- needs_parent_uids -----------------------------------------------------------------------


def test_needs_parent_uids_fills_study_uid(start: Callable[..., QuirkRegion], tmp_path: Path) -> None:
    """A relational SERIES query without StudyInstanceUID, with the plan run in this process.

    tests/test_e2e_relational.py sends such queries through the router from a
    workstation that negotiated relational queries.
    """
    region = start(*_pair(FaultOptions(record_identifiers=True), ("jan", "mar")))
    open_database(tmp_path / "state", [routing.Location])
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "SERIES"
    identifier.SeriesInstanceUID = ""
    identifier.Modality = ""
    query = Query(InformationModel.STUDY_ROOT, "SERIES", identifier)
    peers = tuple(
        PeerSettings(name=name, ae_title=pacs.ae_title, host="127.0.0.1", port=pacs.port,
                     needs_parent_uids=(name == "tuned"))
        for name, pacs in region.peers.items()
    )
    plans = {peer.name: plan_find(peer, query, identifier) for peer in peers}
    fanout = Fanout(peers, "QUIRKTEST", 65536, {})
    matches = list(fanout.matches(plans))
    assert sorted(name for name, _ in matches) == ["tuned", "tuned"]
    assert set(fanout.result.failed_peers) == {"plain"}
    study_uids = {str(match.StudyInstanceUID) for _, match in matches}
    assert study_uids == {region.studies["jan"].study_uid, region.studies["mar"].study_uid}
    levels = [str(ds.QueryRetrieveLevel) for ds in region.peers["tuned"].find_identifiers]
    assert levels == ["STUDY", "SERIES", "SERIES"]


# --- A real peer with a result limit -------------------------------------------------------


@pytest.fixture
def limited_orthanc(tmp_path: Path) -> Iterator[tuple[OrthancServer, list[str]]]:
    """Orthanc with LimitFindResults = 2, holding three studies on three dates.

    Orthanc 1.10.1 then sends two matches and ends the C-FIND with 0xFE00
    (Cancel), although no C-CANCEL was sent.
    """
    studies = build_studies(tmp_path / "seed", RECIPES, ("jan", "feb", "mar"))
    server = OrthancServer("LIMITED", "LIMITEDPACS", tmp_path / "orthanc", allow_unknown_callers=True,
                           extra_config={"LimitFindResults": 2})
    server.start_process()
    try:
        server.wait_until_ready()
        server.seed([path for study in studies.values() for path in study.files])
        yield server, sorted(study.study_uid for study in studies.values())
    finally:
        server.stop()


def test_orthanc_result_limit_split(limited_orthanc: tuple[OrthancServer, list[str]], tmp_path: Path) -> None:
    server, study_uids = limited_orthanc
    router = RouterProcess(tmp_path / "router", ae_title=ROUTER_AE,
                           peers=[PeerEntry("limited", server.node, find_deadline=10.0)],
                           workstations=[WorkstationEntry(DicomNode(WORKSTATION_AE, free_port()))])
    router.start()
    try:
        ranged = run_findscu(router.node, {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": None,
                                           "StudyDate": "20240101-20241231"}, calling_ae=WORKSTATION_AE)
        assert ranged.final_status == status.SUCCESS, ranged.describe()
        assert sorted(_study_uids(ranged.datasets)) == study_uids

        unbounded = run_findscu(router.node, {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": None},
                                calling_ae=WORKSTATION_AE)
        assert unbounded.final_status == status.FIND_OUT_OF_RESOURCES, unbounded.describe()
        router.wait_for_log(r"peer_find_truncated[^\n]*peer=limited")
    finally:
        router.stop()
