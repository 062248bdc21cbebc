"""End-to-end fault tests: dead destinations, unhelpful peers, stray callers, load.

Tests that need a peer to send C-MOVE sub-operations to a router of their own
start a one-peer setup (`_start_lone_peer`): a dcmqrscp or Orthanc archive that
stores one small study and has that router's port in its Move Destination
entry. The session peers send their sub-operations to the session router's
port only.

Run alone with `python -m pytest tests/test_e2e_faults.py`, or every
end-to-end test with `python -m pytest -m e2e`.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Iterator, Literal

import pytest
from pydicom import dcmread

from conftest import ROUTER_AE, Region, Server, Trust
from harness import LoggedProcess
from harness.dcmqrscp import DcmqrscpServer
from harness.dcmtk import (
    RetrieveResult,
    StoreSCP,
    echo_succeeds,
    run_echoscu,
    run_findscu,
    run_getscu,
    run_movescu,
    run_storescu,
)
from harness.orthanc import OrthancServer
from harness.ports import DicomNode, free_port
from harness.router import PeerEntry, RouterProcess, WorkstationEntry
from harness.waiting import wait_for
from yicrouter import status
from yicrouter.demo.seed import SeedStudy, build_study

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

PeerKind = Literal["dcmqrscp", "orthanc"]

# Invented patient of the one-peer setups. Only the INFO log test relies on
# these values, and it checks that neither reaches the log.
LONE_PATIENT_ID = "LONE-7731"
LONE_PATIENT_NAME = "Lindqvist^Maren"

# Seconds within which a move to a destination that refuses connections must
# end. Connection refused on loopback is immediate, so this leaves room for
# the locating C-FIND and the peer's C-MOVE, but not for one connect timeout
# (5 s by default) per instance.
PROMPT_FAILURE_SECONDS = 10.0


# --- fixtures and helpers -----------------------------------------------------


@pytest.fixture
def cleanup() -> Iterator[ExitStack]:
    """An ExitStack that stops, in reverse order, whatever a test started in it."""
    with ExitStack() as stack:
        yield stack


def _build_lone_study(seed_dir: Path) -> SeedStudy:
    """Write a four-instance uncompressed study, which both dcmqrscp and Orthanc can move."""
    return build_study(
        seed_dir,
        patient_id=LONE_PATIENT_ID,
        patient_name=LONE_PATIENT_NAME,
        accession_number="LACC7731",
        study_date="20240502",
        sources=("CT_small.dcm", "MR_small.dcm"),
        instances_per_source=2,
    )


def _start_lone_peer(
    stack: ExitStack,
    work_dir: Path,
    *,
    workstation: DicomNode,
    kind: PeerKind = "dcmqrscp",
    peer_knows_router: bool = True,
    log_level: str = "debug",
    queue_table: str = "",
) -> tuple[RouterProcess, SeedStudy]:
    """Start one seeded peer and a router that has it as its only peer.

    With `peer_knows_router`, the peer has the router as a Move Destination.
    Without it, the peer accepts queries and retrieves from any AE title but
    cannot resolve the router's AE title as a Move Destination.
    """
    study = _build_lone_study(work_dir / "seed")
    router_node = DicomNode(ROUTER_AE, free_port())
    destinations = {"router": router_node} if peer_knows_router else {}
    peer: Server
    if kind == "dcmqrscp":
        peer = DcmqrscpServer(
            "LONE", "LONEPACS", work_dir / "peer",
            move_destinations=destinations, allow_unknown_callers=not peer_knows_router,
        )  # fmt: skip
    else:
        peer = OrthancServer(
            "LONE", "LONEPACS", work_dir / "peer",
            modalities=destinations, allow_unknown_callers=not peer_knows_router,
        )  # fmt: skip
    stack.enter_context(peer)
    peer.seed(study.files)

    router = RouterProcess(
        work_dir / "router",
        ae_title=ROUTER_AE,
        port=router_node.port,
        peers=[PeerEntry("lone", peer.node, find_deadline=5.0)],
        workstations=[WorkstationEntry(workstation)],
        log_level=log_level,
    )
    if queue_table:
        drop_ins = work_dir / "router" / "yicrouter.d"
        drop_ins.mkdir(parents=True, exist_ok=True)
        (drop_ins / "50-queue.toml").write_text(queue_table, encoding="utf-8")
    stack.enter_context(router)
    return router, study


def _study_keys(study: SeedStudy) -> dict[str, str | None]:
    return {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": study.study_uid}


def _event_lines(log_text: str, event: str) -> list[str]:
    """Return the console-format log lines of one event name."""
    pattern = re.compile(rf"\] {re.escape(event)}\s")
    return [line for line in log_text.splitlines() if pattern.search(line)]


def _wait_for_event(router: RouterProcess, event: str, log_offset: int = 0, timeout: float = 10.0) -> list[str]:
    """Wait until the router log, from character `log_offset` on, has `event`, and return its lines."""
    return wait_for(
        lambda: _event_lines(router.log_text()[log_offset:], event),
        timeout=timeout,
        message=lambda: f"no {event} event in router log {router.log_path}:\n"
        + router.log_text()[log_offset:][-3000:],
    )


def _trust(region: Region, name: str) -> Trust:
    return {trust.name: trust for trust in region.trusts}[name]


# --- Move Destination down ----------------------------------------------------


def test_dead_destination_fails_promptly(tmp_path: Path, cleanup: ExitStack) -> None:
    # Nothing listens on the workstation's port, so every connect is refused.
    workstation = DicomNode("WS1", free_port())
    router, study = _start_lone_peer(cleanup, tmp_path, workstation=workstation)

    started = time.monotonic()
    result = run_movescu(router.node, "WS1", _study_keys(study), calling_ae="WS1", timeout=30.0)
    elapsed = time.monotonic() - started

    assert result.final_status == status.MOVE_OUT_OF_RESOURCES_SUBOPERATIONS, result.describe()
    assert result.failed == len(study.files), result.describe()
    assert result.completed == 0, result.describe()
    assert elapsed < PROMPT_FAILURE_SECONDS, result.describe()
    assert _wait_for_event(router, "destination_association_failed")


def _queue_rows(router: RouterProcess) -> list[tuple[str, str, int]]:
    with sqlite3.connect(router.state_dir / "yicrouter.sqlite3") as connection:
        cursor = connection.execute("SELECT sop_instance_uid, state, attempts FROM queue_entry ORDER BY id")
        return [(str(uid), str(state), int(attempts)) for uid, state, attempts in cursor.fetchall()]


def test_dead_destination_keeps_instances(tmp_path: Path, cleanup: ExitStack) -> None:
    workstation = DicomNode("WS1", free_port())
    router, study = _start_lone_peer(cleanup, tmp_path, workstation=workstation)

    result = run_movescu(router.node, "WS1", _study_keys(study), calling_ae="WS1", timeout=30.0)

    assert result.final_status is not None, result.describe()
    jobs_dir = router.state_dir / "spool" / "jobs"
    kept = {str(dcmread(path).SOPInstanceUID): path for path in jobs_dir.rglob("*.dcm")}
    assert sorted(kept) == sorted(study.sop_instance_uids)
    for path in study.files:
        source = dcmread(path)
        copy = dcmread(kept[str(source.SOPInstanceUID)])
        assert copy.PixelData == source.PixelData, path.name
    rows = _queue_rows(router)
    assert sorted(uid for uid, _, _ in rows) == sorted(study.sop_instance_uids)
    assert {state for _, state, _ in rows} == {"queued"}
    assert f"queued_for_retry={len(study.files)}" in router.log_text()


def test_destination_back_up_gets_everything(tmp_path: Path, cleanup: ExitStack) -> None:
    workstation = DicomNode("WS1", free_port())
    router, study = _start_lone_peer(
        cleanup, tmp_path, workstation=workstation,
        queue_table="[queue]\nretry_base = 0.5\nretry_max = 1\npoll_interval = 0.5\n",
    )

    result = run_movescu(router.node, "WS1", _study_keys(study), calling_ae="WS1", timeout=30.0)
    assert result.final_status == status.MOVE_OUT_OF_RESOURCES_SUBOPERATIONS, result.describe()

    destination = StoreSCP("WS1", tmp_path / "ws1", port=workstation.port)
    cleanup.enter_context(destination)
    destination.wait_for_files(len(study.files), timeout=30.0)
    wait_for(lambda: _queue_rows(router) == [], timeout=10.0,
             message=lambda: f"queue not empty: {_queue_rows(router)}")

    received = {str(ds.SOPInstanceUID) for ds in destination.received_datasets().values()}
    assert received == set(study.sop_instance_uids)
    assert list((router.state_dir / "spool" / "jobs").rglob("*.dcm")) == []
    # The delivery job logs its summary after it has deleted the rows.
    router.wait_for_log(r"queue_delivery")


# --- peer without the router as Move Destination ------------------------------


@pytest.mark.parametrize("kind", ["dcmqrscp", "orthanc"])
def test_peer_without_router_entry_fails(
    tmp_path: Path, cleanup: ExitStack, kind: PeerKind
) -> None:
    workstation = StoreSCP("WS1", tmp_path / "ws1")
    cleanup.enter_context(workstation)
    router, study = _start_lone_peer(
        cleanup, tmp_path, workstation=workstation.node, kind=kind, peer_knows_router=False
    )

    started = time.monotonic()
    result = run_movescu(router.node, "WS1", _study_keys(study), calling_ae="WS1", timeout=30.0)
    elapsed = time.monotonic() - started

    assert result.final_status is not None, result.describe()
    assert status.is_failure(result.final_status), result.describe()
    assert elapsed < PROMPT_FAILURE_SECONDS, result.describe()
    assert workstation.received() == []
    lines = _wait_for_event(router, "move_completed")
    assert len(lines) == 1, lines
    assert " peer=lone " in lines[0]
    peer_status = re.search(r" peer_status=0x([0-9A-F]{4})\b", lines[0])
    assert peer_status is not None, lines[0]
    assert status.is_failure(int(peer_status.group(1), 16)), lines[0]


# --- unsolicited C-STORE ------------------------------------------------------


def test_unsolicited_store_refused(region: Region, router: RouterProcess) -> None:
    log_offset = len(router.log_text())
    source = region.north.studies[0].files[0]

    [result] = run_storescu(router.node, [source], calling_ae=region.north.node.ae_title, check=False)

    statuses = [message.status for message in result.responses("C-STORE RSP")]
    assert statuses == [status.STORE_REFUSED_NOT_AUTHORIZED], result.describe()
    lines = _wait_for_event(router, "store_unsolicited", log_offset)
    assert "calling_ae_title=NORTHPACS" in lines[-1]


# --- calling AE title ---------------------------------------------------------

# PS3.5 table 6.2-1: leading and trailing spaces of an AE title are not
# significant, and a value of spaces only shall not be used. DCMTK pads every
# AE title to 16 characters on the wire, so trailing spaces need no case of their own.


@pytest.mark.parametrize("calling_ae", ["WS1", "   WS1"], ids=["plain", "leading-spaces"])
def test_calling_ae_accepted_stripped(router: RouterProcess, calling_ae: str) -> None:
    result = run_echoscu(router.node, calling_ae=calling_ae)

    assert result.returncode == 0, result.describe()
    assert "Received Echo Response (Success)" in result.output, result.describe()


def test_calling_ae_inner_space_rejected(router: RouterProcess) -> None:
    result = run_echoscu(router.node, calling_ae="WS 1")

    assert "Association Rejected" in result.output, result.describe()
    assert "Calling AE Title Not Recognized" in result.output, result.describe()


def test_all_space_calling_ae_rejected(router: RouterProcess) -> None:
    log_offset = len(router.log_text())

    result = run_echoscu(router.node, calling_ae=" " * 16)

    assert "Association Rejected" in result.output, result.describe()
    assert _wait_for_event(router, "association_rejected", log_offset, timeout=2.0)


def test_router_serves_after_all_space_ae(router: RouterProcess) -> None:
    run_echoscu(router.node, calling_ae=" " * 16)

    assert router.is_running(), router.log_text()[-2000:]
    assert echo_succeeds(router.node, calling_ae="WS1")


def test_unknown_calling_ae_rejected(router: RouterProcess) -> None:
    log_offset = len(router.log_text())

    result = run_echoscu(router.node, calling_ae="NOSUCHWS")

    assert "Association Rejected" in result.output, result.describe()
    lines = _wait_for_event(router, "association_rejected", log_offset)
    assert "calling_ae_title=NOSUCHWS" in lines[-1]


def test_wrong_called_ae_rejected(router: RouterProcess) -> None:
    log_offset = len(router.log_text())

    result = run_echoscu(DicomNode("NOTROUTER", router.node.port), calling_ae="WS1")

    assert "Association Rejected" in result.output, result.describe()
    assert "Called AE Title Not Recognized" in result.output, result.describe()
    lines = _wait_for_event(router, "association_rejected", log_offset)
    assert "called_ae_title=NOTROUTER" in lines[-1]
    assert "called AE title is not the router's" in lines[-1]


def test_garbage_bytes_logged(router: RouterProcess) -> None:
    log_offset = len(router.log_text())

    with socket.create_connection(("127.0.0.1", router.node.port), timeout=5.0) as connection:
        connection.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        reply = connection.recv(64)

    assert reply[:1] in (b"\x07", b""), reply  # A-ABORT, or the connection simply closed
    _wait_for_event(router, "connection_closed", log_offset)
    assert echo_succeeds(router.node, calling_ae="WS1")


# --- no patient data in INFO logs ---------------------------------------------


def test_info_log_has_no_patient_data(tmp_path: Path, cleanup: ExitStack) -> None:
    workstation = StoreSCP("WS1", tmp_path / "ws1")
    cleanup.enter_context(workstation)
    router, study = _start_lone_peer(
        cleanup, tmp_path, workstation=workstation.node, log_level="info"
    )
    find_keys = {
        "QueryRetrieveLevel": "STUDY",
        "PatientID": study.patient_id,
        "PatientName": None,
        "StudyInstanceUID": None,
    }

    found = run_findscu(router.node, find_keys, calling_ae="WS1")
    moved = run_movescu(router.node, "WS1", _study_keys(study), calling_ae="WS1", timeout=30.0)

    # The patient data did pass through the router.
    assert found.final_status == status.SUCCESS, found.describe()
    assert [str(ds.PatientName) for ds in found.datasets] == [study.patient_name]
    assert moved.final_status == status.SUCCESS, moved.describe()
    workstation.wait_for_files(len(study.files))
    _wait_for_event(router, "move_completed")
    log_text = router.log_text()
    assert study.patient_name not in log_text
    assert study.patient_name.split("^")[0] not in log_text
    assert study.patient_id not in log_text
    assert study.study_uid in log_text


# --- concurrent moves under CPU load ------------------------------------------

# Spins until its deadline, given in seconds as the first argument.
_BURN_CPU = """
import sys, time
deadline = time.monotonic() + float(sys.argv[1])
while time.monotonic() < deadline:
    pass
"""
# Each CPU-burning helper stops by itself after this many seconds, even if the
# test never gets to stop it.
CPU_LOAD_SECONDS = 20.0


@pytest.fixture
def cpu_load() -> Iterator[None]:
    """Keep every CPU busy with one spinning helper process per CPU."""
    burners = [
        subprocess.Popen([sys.executable, "-c", _BURN_CPU, str(CPU_LOAD_SECONDS)])
        for _ in range(os.cpu_count() or 2)
    ]
    try:
        yield
    finally:
        for burner in burners:
            burner.terminate()
        for burner in burners:
            burner.wait(timeout=5.0)


def _move_study(router: RouterProcess, study: SeedStudy, destination: str) -> RetrieveResult:
    return run_movescu(router.node, destination, _study_keys(study), calling_ae=destination, timeout=60.0)


def test_concurrent_moves_under_load(
    region: Region, router: RouterProcess, ws1: StoreSCP, ws2: StoreSCP, cpu_load: None
) -> None:
    # pynetdicom 3.0.4 can drop a DIMSE response when its reactor thread races
    # the sender (yicrouter/reactor.py guards against it), and CPU load widens
    # that window. A lost response must end neither in a hang nor in a false
    # Success. Two of the moves come from EAST at once, so the router must also
    # match each incoming C-STORE to the right move.
    moves = [
        (_trust(region, "north").studies[1], "WS1"),
        (_trust(region, "south").studies[0], "WS2"),
        (_trust(region, "east").studies[0], "WS1"),
        (_trust(region, "east").studies[1], "WS2"),
    ]

    with ThreadPoolExecutor(max_workers=len(moves)) as pool:
        futures = [pool.submit(_move_study, router, study, destination) for study, destination in moves]
        results = [future.result() for future in futures]

    for (study, _), result in zip(moves, results):
        assert result.final_status == status.SUCCESS, result.describe()
        assert result.completed == len(study.files), result.describe()
        assert result.failed == 0, result.describe()
    expected: dict[str, list[str]] = {"WS1": [], "WS2": []}
    for study, destination in moves:
        expected[destination] += study.sop_instance_uids
    for workstation in (ws1, ws2):
        own = sorted(expected[workstation.ae_title])
        workstation.wait_for_files(len(own))
        assert sorted(workstation.received_datasets()) == own, workstation.ae_title
        assert len(workstation.received()) == len(own), f"an instance reached {workstation.ae_title} twice"


# --- demo ---------------------------------------------------------------------


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[tuple[LoggedProcess, DicomNode, int]]:
    """Start `yicrouter demo` on free ports, and yield the process, the router and the workstation port."""
    router_node = DicomNode("YICROUTER", free_port())
    workstation_port = free_port()
    args = [
        sys.executable, "-m", "yicrouter", "demo",
        "--port", str(router_node.port),
        "--workstation-port", str(workstation_port),
        "--state-dir", str(tmp_path / "demo-state"),
    ]  # fmt: skip
    process = LoggedProcess("yicrouter demo", args, tmp_path / "demo.log", cwd=tmp_path)
    process.start()
    try:
        process.wait_until_ready(
            lambda: echo_succeeds(router_node, calling_ae="DEMOWS"),
            30.0,
            f"demo router responds to C-ECHO on port {router_node.port}",
        )
        yield process, router_node, workstation_port
    finally:
        process.stop()


def test_demo_find_and_move(tmp_path: Path, demo: tuple[LoggedProcess, DicomNode, int]) -> None:
    process, router_node, workstation_port = demo
    workstation = StoreSCP("DEMOWS", tmp_path / "demows", port=workstation_port)
    keys = {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": None, "PatientName": None}

    found = run_findscu(router_node, keys, calling_ae="DEMOWS")

    assert found.final_status == status.SUCCESS, found.describe()
    study_uids = sorted(str(ds.StudyInstanceUID) for ds in found.datasets)
    assert len(study_uids) == 3, found.describe()
    assert len(set(study_uids)) == 3, found.describe()

    # The demo writes its seed studies under the state folder. Their files give
    # the instances that the moved study contains.
    moved_uid = study_uids[0]
    seed_files = sorted((tmp_path / "demo-state" / "seed").rglob("*.dcm"))
    expected = sorted(
        {str(ds.SOPInstanceUID) for ds in map(dcmread, seed_files) if ds.StudyInstanceUID == moved_uid}
    )
    assert expected, f"no seed file of study {moved_uid}"
    with workstation:
        moved = run_movescu(
            router_node, "DEMOWS", {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": moved_uid},
            calling_ae="DEMOWS", timeout=30.0,
        )  # fmt: skip

        assert moved.final_status == status.SUCCESS, moved.describe()
        workstation.wait_for_files(len(expected))
        assert sorted(workstation.received_datasets()) == expected

    # The demo also prints a C-GET command line, as many viewers retrieve that way.
    fetched = run_getscu(
        router_node, tmp_path / "getscu", {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": moved_uid},
        calling_ae="DEMOWS", timeout=30.0,
    )  # fmt: skip
    assert fetched.final_status == status.SUCCESS, fetched.describe()
    fetched_uids = sorted(str(dcmread(path).SOPInstanceUID) for path in (tmp_path / "getscu").iterdir())
    assert fetched_uids == expected


def test_demo_exits_zero_on_sigint(demo: tuple[LoggedProcess, DicomNode, int]) -> None:
    process, _, _ = demo

    process.send_signal(signal.SIGINT)
    exit_status = process.wait(timeout=15.0)

    assert exit_status == 0, process.log_tail()
