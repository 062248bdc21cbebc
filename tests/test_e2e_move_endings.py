"""Counts and deliveries when a C-MOVE through the router ends early.

Every instance that the router acknowledged to the peer must be counted once
in the final response: forwarded, failed (and queued for retry), or, after a
C-CANCEL only, dropped. The files at the Move Destination must equal
Completed + Warning, then and later, and no retry-queue row may stay leased
to a move that has ended.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.ports import DicomNode, free_port
from harness.racing_peer import RacingPacs
from harness.retrieve_scu import RecordingStoreSCP, RetrieveRun, run_move, study_identifier
from harness.router import PeerEntry, RouterProcess, WorkstationEntry
from harness.waiting import WaitTimeout, wait_for
from yicrouter import status
from yicrouter.demo.samplepacs import FaultOptions, SamplePacs
from yicrouter.demo.seed import SeedStudy, build_study

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]

ROUTER_AE = "YICROUTER"
# Seconds between runs of the router's delivery job in these tests.
POLL_INTERVAL = 0.3
INSTANCES = 40


def _study(tmp_path: Path, instances: int) -> SeedStudy:
    return build_study(tmp_path / "seed", patient_id="END-1", patient_name="Ending^Test",
                       accession_number="END1", instances_per_source=instances)


def _router(tmp_path: Path, peer: SamplePacs, port: int, destination: DicomNode) -> RouterProcess:
    router = RouterProcess(
        tmp_path / "router", ae_title=ROUTER_AE, port=port,
        peers=[PeerEntry("peer", DicomNode(peer.ae_title, peer.port), find_deadline=5.0,
                         extra={"dimse_timeout": 10.0})],
        workstations=[WorkstationEntry(destination)],
    )
    drop_ins = router.work_dir / "yicrouter.d"
    drop_ins.mkdir(parents=True, exist_ok=True)
    (drop_ins / "50-queue.toml").write_text(
        f"[queue]\nretry_base = 0.2\nretry_max = 0.5\npoll_interval = {POLL_INTERVAL}\n", encoding="utf-8")
    return router.start()


def _queue_rows(router: RouterProcess) -> list[tuple[str, str, str]]:
    """Return (move_id, state, owner) of every retry-queue row."""
    with sqlite3.connect(router.state_dir / "yicrouter.sqlite3") as connection:
        rows = connection.execute("SELECT move_id, state, owner FROM queue_entry").fetchall()
    return [(str(move_id), str(state), str(owner)) for move_id, state, owner in rows]


def _move_ids(router: RouterProcess) -> list[str]:
    return re.findall(r"move_completed\b.*?move_id=(\w+)", router.log_text())


def _assert_nothing_arrives_later(destination: RecordingStoreSCP, count: int) -> None:
    """Fail if another C-STORE reaches the destination within two delivery-job runs."""
    with pytest.raises(WaitTimeout):
        wait_for(lambda: len(destination.stored) > count, timeout=2 * POLL_INTERVAL + 0.5,
                 message="no C-STORE after the final response")


@pytest.fixture
def destination() -> Iterator[RecordingStoreSCP]:
    scp = RecordingStoreSCP("WS1", free_port()).start()
    yield scp
    scp.stop()


@pytest.fixture
def racing_region(tmp_path: Path, destination: RecordingStoreSCP) -> Iterator[tuple[RouterProcess, SeedStudy]]:
    """A router whose peer aborts its C-MOVE while its last 8 C-STOREs are under way."""
    study = _study(tmp_path, INSTANCES)
    router_port = free_port()
    peer = RacingPacs("RACEPACS", free_port(), list(study.files), ("127.0.0.1", router_port))
    peer.start()
    router = _router(tmp_path, peer, router_port, DicomNode("WS1", destination.port))
    try:
        yield router, study
    finally:
        router.stop()
        peer.stop()


def _final_counts(run: RetrieveRun) -> tuple[int, int, int]:
    final = run.final
    return final.count("Completed"), final.count("Failed"), final.count("Warning")


def test_peer_abort_counts_every_instance(
    racing_region: tuple[RouterProcess, SeedStudy], destination: RecordingStoreSCP
) -> None:
    router, study = racing_region
    # Each move races differently, so a few of them cover more of the orderings.
    for message_id in (11, 12, 13):
        destination.stored.clear()
        run = run_move(router.node, "WS1", "WS1", study_identifier(study.study_uid), message_id=message_id)
        completed, failed, warning = _final_counts(run)
        delivered = len(destination.stored)

        # 0xC001 when every instance arrived before the abort: the peer still failed.
        assert run.final.code in (status.MOVE_SUBOPERATIONS_WARNING, status.MOVE_UNABLE_TO_PROCESS)
        assert completed + failed + warning == INSTANCES
        assert delivered == completed + warning


def test_peer_abort_leaves_no_leased_rows(
    racing_region: tuple[RouterProcess, SeedStudy], destination: RecordingStoreSCP
) -> None:
    router, study = racing_region
    for message_id in (21, 22):
        destination.stored.clear()
        run = run_move(router.node, "WS1", "WS1", study_identifier(study.study_uid), message_id=message_id)
        completed, _, warning = _final_counts(run)

        assert [row for row in _queue_rows(router) if row[1] == "in_flight"] == []
        wait_for(lambda: _queue_rows(router) == [], timeout=5.0,
                 message=lambda: f"rows left in the retry queue: {_queue_rows(router)}")
        _assert_nothing_arrives_later(destination, completed + warning)
        assert len(destination.stored) == completed + warning


def test_cancel_sends_nothing_later(tmp_path: Path, destination: RecordingStoreSCP) -> None:
    study = _study(tmp_path, 150)
    router_port = free_port()
    peer = SamplePacs("FASTPACS", free_port(), list(study.files),
                      move_destinations={ROUTER_AE: ("127.0.0.1", router_port)}, options=FaultOptions())
    peer.start()
    router = _router(tmp_path, peer, router_port, DicomNode("WS1", destination.port))
    try:
        run = run_move(router.node, "WS1", "WS1", study_identifier(study.study_uid),
                       cancel_when=lambda run: run.responses[-1].count("Completed") >= 5)
        completed, failed, warning = _final_counts(run)

        assert run.final.code == status.CANCEL
        assert len(destination.stored) == completed + warning
        assert completed + failed + warning + run.final.count("Remaining") == len(study.files)
        wait_for(lambda: _move_ids(router), timeout=5.0, message="no move_completed in the router log")
        move_id = _move_ids(router)[0]
        assert [row for row in _queue_rows(router) if row[0] == move_id] == []
        _assert_nothing_arrives_later(destination, completed + warning)
        assert [row for row in _queue_rows(router) if row[0] == move_id] == []
    finally:
        router.stop()
        peer.stop()
