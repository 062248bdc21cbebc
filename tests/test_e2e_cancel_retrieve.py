"""C-CANCEL of C-MOVE and C-GET through yicrouter (PS3.7 9.3.2.3 and 9.3.3.3, PS3.4 C.4.2.3).

The peer is a SamplePacs with a delay before each C-STORE sub-operation, so
a cancel lands in the middle of the transfer. It is retrieved with C-MOVE or
with C-GET. The requester is a pynetdicom SCU, because DCMTK's movescu and
getscu can't send C-CANCEL.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from harness.fake_peers import FakeRegion, PeerSpec, StudyRecipe
from harness.retrieve_scu import RecordingStoreSCP, RetrieveRun, run_get, run_move, study_identifier
from harness.waiting import wait_for
from yicrouter import status
from yicrouter.demo.samplepacs import FaultOptions

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
# Seconds before each C-STORE sub-operation at the peer.
STORE_DELAY = 0.25
INSTANCES = 8
# SamplePacs logs this at DEBUG when a C-CANCEL stops its sub-operations.
PEER_CANCEL_MESSAGE = "Retrieval cancelled after"

RETRIEVE_MODES = ["c-move", "c-get"]


@pytest.fixture(params=RETRIEVE_MODES)
def slow_region(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[FakeRegion]:
    """A router whose one peer contains study "s" and waits STORE_DELAY s before each sub-operation."""
    region = FakeRegion(tmp_path)
    try:
        yield region.start(
            {"slow": PeerSpec(FaultOptions(store_delay=STORE_DELAY), ("s",), {"retrieve": request.param})},
            {"s": StudyRecipe("FAKE-s", "CT_small.dcm", INSTANCES)},
        )
    finally:
        region.stop()


@pytest.fixture
def peer_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG, logger="yicrouter.demo.samplepacs")
    return caplog


def _peer_saw_cancel(caplog: pytest.LogCaptureFixture) -> bool:
    return any(PEER_CANCEL_MESSAGE in record.getMessage() for record in caplog.records)


def _after_completed(count: int) -> Callable[[RetrieveRun], bool]:
    def rule(run: RetrieveRun) -> bool:
        latest = run.responses[-1]
        return latest.code == status.PENDING and latest.count("Completed") >= count

    return rule


def _assert_cancelled(run: RetrieveRun, delivered: list[str]) -> None:
    final = run.final
    assert final.code == status.CANCEL
    assert final.count("Completed") == len(delivered)
    assert final.count("Completed") < INSTANCES
    assert final.count("Remaining") >= 0
    assert run.cancel_sent_at is not None
    assert final.at >= run.cancel_sent_at


def test_cancel_move_late(slow_region: FakeRegion, peer_log: pytest.LogCaptureFixture) -> None:
    study = slow_region.studies["s"]
    destination = RecordingStoreSCP("WS1", slow_region.workstations["WS1"].port).start()
    try:
        run = run_move(slow_region.node, "WS1", "WS1", study_identifier(study.study_uid),
                       cancel_when=_after_completed(2))
        final_at = run.final.at
        delivered = [uid for _, uid in destination.stored]
        _assert_cancelled(run, delivered)
        assert run.final.count("Completed") >= 2
        wait_for(lambda: _peer_saw_cancel(peer_log), timeout=10.0,
                 message="the peer never saw a C-CANCEL")
        assert destination.stored_after(final_at) == [], "a C-STORE went out after the final response"
    finally:
        destination.stop()


def test_cancel_move_early(slow_region: FakeRegion, peer_log: pytest.LogCaptureFixture) -> None:
    study = slow_region.studies["s"]
    destination = RecordingStoreSCP("WS1", slow_region.workstations["WS1"].port).start()
    try:
        started = time.monotonic()
        run = run_move(slow_region.node, "WS1", "WS1", study_identifier(study.study_uid),
                       cancel_immediately=True)
        assert run.final.code == status.CANCEL
        assert run.final.count("Completed") == 0
        # The whole study would take INSTANCES * STORE_DELAY = 2 s.
        assert run.final.at - started < INSTANCES * STORE_DELAY / 2
        assert destination.stored == []
        assert slow_region.router is not None
        slow_region.router.wait_for_log(r"move_completed.*cancelled=True")
    finally:
        destination.stop()


def test_cancel_get_late(slow_region: FakeRegion, peer_log: pytest.LogCaptureFixture) -> None:
    study = slow_region.studies["s"]

    run = run_get(slow_region.node, "WS1", study_identifier(study.study_uid), scp_role_for=[CT_IMAGE_STORAGE],
                  cancel_when=_after_completed(2))

    delivered = [uid for _, uid in run.stored]
    _assert_cancelled(run, delivered)
    assert run.final.count("Completed") >= 2
    assert [at for at, _ in run.stored if at > run.final.at] == []
    wait_for(lambda: _peer_saw_cancel(peer_log), timeout=10.0, message="the peer never saw a C-CANCEL")
    assert slow_region.router is not None
    slow_region.router.wait_for_log(r"get_completed.*cancelled=True")
    spool = slow_region.router.state_dir / "spool" / "jobs"
    wait_for(lambda: list(spool.glob("get-*/*")) == [], timeout=10.0,
             message=lambda: f"spool files left: {list(spool.glob('get-*/*'))}")


def test_cancel_get_early(slow_region: FakeRegion) -> None:
    study = slow_region.studies["s"]
    started = time.monotonic()

    run = run_get(slow_region.node, "WS1", study_identifier(study.study_uid), scp_role_for=[CT_IMAGE_STORAGE],
                  cancel_immediately=True)

    assert run.final.code == status.CANCEL
    assert run.final.count("Completed") == 0
    assert run.stored == []
    assert run.final.at - started < INSTANCES * STORE_DELAY / 2
