"""End-to-end C-FIND through yicrouter to NORTH, SOUTH and EAST, plus `config check`.

Run alone with `python -m pytest tests/test_e2e_find.py`, or every end-to-end
test with `python -m pytest -m e2e`.
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest
from pydicom.dataset import Dataset

from conftest import ROUTER_AE, Region, RouterFactory, Trust
from harness.dcmtk import run_findscu
from harness.ports import LOOPBACK, DicomNode, free_port
from harness.router import PeerEntry, RouterProcess, WorkstationEntry, render_router_config, run_config_check
from yicrouter import status

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

STUDY_KEYS: dict[str, str | None] = {
    "QueryRetrieveLevel": "STUDY",
    "StudyInstanceUID": None,
    "PatientID": None,
    "PatientName": None,
    "StudyDate": None,
    "AccessionNumber": None,
    "RetrieveAETitle": None,
}


def _trust(region: Region, name: str) -> Trust:
    return {trust.name: trust for trust in region.trusts}[name]


def _write_query_file(path: Path, dataset: Dataset) -> Path:
    """Write an identifier as a bare data set that findscu and movescu accept as dcmfile-in."""
    dataset.save_as(path, implicit_vr=False, little_endian=True)
    return path


# --- Study Root ---------------------------------------------------------------


def test_study_find_merges_all_trusts(region: Region, router: RouterProcess) -> None:
    seen_before = {trust.name: trust.requests_seen("Find") for trust in region.trusts}

    result = run_findscu(router.node, STUDY_KEYS, calling_ae="WS1")

    assert result.final_status == status.SUCCESS, result.describe()
    found = sorted(str(ds.StudyInstanceUID) for ds in result.datasets)
    assert found == sorted(study.study_uid for study in region.all_studies)
    # Proves that requests_seen() counts requests, which the tests of invalid
    # identifiers rely on.
    for trust in region.trusts:
        assert trust.requests_seen("Find") > seen_before[trust.name], f"{trust.name} was not queried"


def test_study_find_returns_shared_study_once(region: Region, router: RouterProcess) -> None:
    result = run_findscu(router.node, STUDY_KEYS, calling_ae="WS1")

    assert result.final_status == status.SUCCESS, result.describe()
    shared = [ds for ds in result.datasets if ds.StudyInstanceUID == region.shared_study.study_uid]
    assert len(shared) == 1


def test_study_find_points_retrieve_at_router(region: Region, router: RouterProcess) -> None:
    result = run_findscu(router.node, STUDY_KEYS, calling_ae="WS1")

    assert result.final_status == status.SUCCESS, result.describe()
    assert result.datasets
    for dataset in result.datasets:
        assert dataset.QueryRetrieveLevel == "STUDY"
        assert dataset.StudyInstanceUID
        assert dataset.RetrieveAETitle == ROUTER_AE


def test_study_find_matches_patient_id(region: Region, router: RouterProcess) -> None:
    study = region.south.studies[1]
    keys = {**STUDY_KEYS, "PatientID": study.patient_id}
    result = run_findscu(router.node, keys, calling_ae="WS1")

    assert result.final_status == status.SUCCESS, result.describe()
    assert len(result.datasets) == 1
    match = result.datasets[0]
    assert match.StudyInstanceUID == study.study_uid
    assert match.PatientName == study.patient_name
    assert match.AccessionNumber == study.accession_number
    assert match.StudyDate == study.study_date


@pytest.mark.parametrize("trust_name", ["north", "south", "east"])
def test_series_find_lists_series(region: Region, router: RouterProcess, trust_name: str) -> None:
    study = _trust(region, trust_name).studies[1]
    keys = {
        "QueryRetrieveLevel": "SERIES",
        "StudyInstanceUID": study.study_uid,
        "SeriesInstanceUID": None,
        "Modality": None,
        "RetrieveAETitle": None,
    }
    result = run_findscu(router.node, keys, calling_ae="WS1")

    assert result.final_status == status.SUCCESS, result.describe()
    assert sorted(str(ds.SeriesInstanceUID) for ds in result.datasets) == sorted(study.series_uids)
    for dataset in result.datasets:
        assert dataset.QueryRetrieveLevel == "SERIES"
        assert dataset.RetrieveAETitle == ROUTER_AE


@pytest.mark.parametrize("trust_name", ["north", "south", "east"])
def test_image_find_lists_instances(region: Region, router: RouterProcess, trust_name: str) -> None:
    study = _trust(region, trust_name).studies[1]
    per_series = len(study.sop_instance_uids) // len(study.series_uids)
    keys = {
        "QueryRetrieveLevel": "IMAGE",
        "StudyInstanceUID": study.study_uid,
        "SeriesInstanceUID": study.series_uids[0],
        "SOPInstanceUID": None,
        "RetrieveAETitle": None,
    }
    result = run_findscu(router.node, keys, calling_ae="WS1")

    assert result.final_status == status.SUCCESS, result.describe()
    found = sorted(str(ds.SOPInstanceUID) for ds in result.datasets)
    assert found == sorted(study.sop_instance_uids[:per_series])
    for dataset in result.datasets:
        assert dataset.QueryRetrieveLevel == "IMAGE"
        assert dataset.RetrieveAETitle == ROUTER_AE


def test_shared_study_series_listed_once(region: Region, router: RouterProcess) -> None:
    study = region.shared_study
    keys = {"QueryRetrieveLevel": "SERIES", "StudyInstanceUID": study.study_uid, "SeriesInstanceUID": None}
    result = run_findscu(router.node, keys, calling_ae="WS1")

    assert result.final_status == status.SUCCESS, result.describe()
    assert sorted(str(ds.SeriesInstanceUID) for ds in result.datasets) == sorted(study.series_uids)


# --- Patient Root -------------------------------------------------------------


def test_patient_root_patient_level(region: Region, router: RouterProcess) -> None:
    study = region.east.studies[0]
    keys = {"QueryRetrieveLevel": "PATIENT", "PatientID": study.patient_id, "PatientName": None}
    result = run_findscu(router.node, keys, model="patient", calling_ae="WS1")

    assert result.final_status == status.SUCCESS, result.describe()
    assert len(result.datasets) == 1
    assert result.datasets[0].PatientID == study.patient_id
    assert result.datasets[0].PatientName == study.patient_name
    assert result.datasets[0].QueryRetrieveLevel == "PATIENT"


def test_patient_root_study_level(region: Region, router: RouterProcess) -> None:
    study = region.shared_study
    keys = {
        "QueryRetrieveLevel": "STUDY",
        "PatientID": study.patient_id,
        "StudyInstanceUID": None,
        "RetrieveAETitle": None,
    }
    result = run_findscu(router.node, keys, model="patient", calling_ae="WS1")

    assert result.final_status == status.SUCCESS, result.describe()
    assert [str(ds.StudyInstanceUID) for ds in result.datasets] == [study.study_uid]
    assert result.datasets[0].RetrieveAETitle == ROUTER_AE


# --- invalid identifiers ------------------------------------------------------


def test_find_without_query_level_fails(
    region: Region, router: RouterProcess, tmp_path: Path
) -> None:
    identifier = Dataset()
    identifier.StudyInstanceUID = ""
    identifier.PatientID = ""
    query = _write_query_file(tmp_path / "no-level.dcm", identifier)
    seen_before = {trust.name: trust.requests_seen("Find") for trust in region.trusts}

    result = run_findscu(router.node, query_file=query, calling_ae="WS1")

    assert result.final_status == status.FIND_IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS, result.describe()
    assert result.datasets == []
    for trust in region.trusts:
        assert trust.requests_seen("Find") == seen_before[trust.name], f"{trust.name} was queried"


def test_patient_root_without_patient_id_fails(
    region: Region, router: RouterProcess
) -> None:
    keys = {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": None}
    seen_before = {trust.name: trust.requests_seen("Find") for trust in region.trusts}

    result = run_findscu(router.node, keys, model="patient", calling_ae="WS1")

    assert result.final_status == status.FIND_IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS, result.describe()
    assert result.datasets == []
    for trust in region.trusts:
        assert trust.requests_seen("Find") == seen_before[trust.name], f"{trust.name} was queried"


@pytest.mark.parametrize("study_date", ["2024-01-15", "20241345"])
def test_invalid_date_fails(region: Region, router: RouterProcess, study_date: str) -> None:
    keys = {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": None, "StudyDate": study_date}
    seen_before = {trust.name: trust.requests_seen("Find") for trust in region.trusts}

    result = run_findscu(router.node, keys, calling_ae="WS1")

    assert result.final_status == status.FIND_IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS, result.describe()
    for trust in region.trusts:
        assert trust.requests_seen("Find") == seen_before[trust.name], f"{trust.name} was queried"


# --- unavailable peers --------------------------------------------------------


@pytest.fixture
def silent_peer() -> Iterator[DicomNode]:
    """A loopback TCP listener that accepts connections and never sends a byte."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind((LOOPBACK, 0))
    listener.listen(8)
    listener.settimeout(0.2)
    accepted: list[socket.socket] = []
    stopping = threading.Event()

    def accept_forever() -> None:
        while not stopping.is_set():
            try:
                connection, _ = listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            accepted.append(connection)

    thread = threading.Thread(target=accept_forever, daemon=True)
    thread.start()
    try:
        yield DicomNode("SILENTPACS", int(listener.getsockname()[1]))
    finally:
        stopping.set()
        thread.join(timeout=5.0)
        for connection in accepted:
            connection.close()
        listener.close()


def test_find_with_dead_peer_returns_others(region: Region, make_router: RouterFactory) -> None:
    dead = PeerEntry("west", DicomNode("WESTPACS", free_port()), find_deadline=2.0)
    router = make_router(peers=[*region.peer_entries(find_deadline=2.0), dead])

    started = time.monotonic()
    result = run_findscu(router.node, STUDY_KEYS, calling_ae="WS1")
    elapsed = time.monotonic() - started

    # NOTE: whether the final status is Success or a failure when a peer is
    # unreachable is the router's decision. The test only requires a final
    # response with every match that the live peers hold.
    assert result.final_status is not None, result.describe()
    assert not status.is_pending(result.final_status)
    found = sorted(str(ds.StudyInstanceUID) for ds in result.datasets)
    assert found == sorted(study.study_uid for study in region.all_studies)
    assert elapsed < 2.0 + 3.0
    router.wait_for_log(r"west|WESTPACS")


def test_find_with_silent_peer_keeps_deadline(
    region: Region, make_router: RouterFactory, silent_peer: DicomNode
) -> None:
    deadline = 2.0
    silent = PeerEntry("silent", silent_peer, find_deadline=deadline)
    router = make_router(peers=[*region.peer_entries(find_deadline=deadline), silent])

    started = time.monotonic()
    result = run_findscu(router.node, STUDY_KEYS, calling_ae="WS1")
    elapsed = time.monotonic() - started

    assert result.final_status is not None, result.describe()
    found = sorted(str(ds.StudyInstanceUID) for ds in result.datasets)
    assert found == sorted(study.study_uid for study in region.all_studies)
    assert elapsed < deadline + 3.0
    router.wait_for_log(r"silent|SILENTPACS")


# --- config check -------------------------------------------------------------


def test_config_check_accepts_valid_config(region: Region, tmp_path: Path) -> None:
    path = tmp_path / "yicrouter.toml"
    path.write_text(
        render_router_config(
            ae_title=ROUTER_AE,
            port=free_port(),
            state_dir=tmp_path / "state",
            peers=region.peer_entries(),
            workstations=region.workstation_entries(),
        ),
        encoding="utf-8",
    )

    result = run_config_check(path)

    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("table", "key", "value"),
    [
        ("router", "port", 70000),
        ("router", "ae_title", "AN_AE_TITLE_OF_24_CHARS!"),
        ("peer", "port", "not-a-port"),
        ("peer", "find_deadline", -1.0),
    ],
)
def test_config_check_reports_invalid_value(
    region: Region, tmp_path: Path, table: str, key: str, value: object
) -> None:
    peers = region.peer_entries()
    extra_router: dict[str, object] = {}
    if table == "router":
        extra_router[key] = value
    else:
        first = peers[0]
        peers[0] = PeerEntry(first.name, first.node, first.find_deadline, extra={key: value})
    path = tmp_path / "broken.toml"
    path.write_text(
        render_router_config(
            ae_title=ROUTER_AE,
            port=free_port(),
            state_dir=tmp_path / "state",
            peers=peers,
            workstations=[WorkstationEntry(node) for node in region.workstations.values()],
            extra_router=extra_router,
        ),
        encoding="utf-8",
    )

    result = run_config_check(path)
    output = result.stdout + result.stderr

    assert result.returncode == 1, output
    assert str(path) in output
    assert key in output
    assert str(value) in output
