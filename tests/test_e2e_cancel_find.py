"""C-CANCEL of a C-FIND: the router stops, cancels every running peer C-FIND and returns 0xFE00."""

from __future__ import annotations

import ast
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind  # type: ignore[attr-defined]

from harness.dcmtk import run_findscu
from harness.quirk_region import ROUTER_AE, WORKSTATION_AE, FakePeer, QuirkRegion, StudyRecipe, start_quirk_region
from harness.waiting import wait_for
from yicrouter import status
from yicrouter.demo.samplepacs import FaultOptions

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

RECIPES = {"one": StudyRecipe("CX-1", "Cancel^One", "20240110")}
MESSAGE_ID = 9
SYNTHETIC = 10_000


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[..., QuirkRegion]]:
    regions: list[QuirkRegion] = []

    def start_region(*fake_peers: FakePeer) -> QuirkRegion:
        region = start_quirk_region(tmp_path / f"region-{len(regions)}", RECIPES, list(fake_peers), find_deadline=30.0)
        regions.append(region)
        return region

    yield start_region
    for region in regions:
        region.stop()


def _study_query() -> Dataset:
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.StudyInstanceUID = ""
    identifier.PatientID = ""
    return identifier


def _associate(region: QuirkRegion):  # type: ignore[no-untyped-def]
    ae = AE(ae_title=WORKSTATION_AE)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = ae.associate("127.0.0.1", region.router.port, ae_title=ROUTER_AE)
    assert assoc.is_established
    return assoc


def _logged_dict(line: str, key: str) -> dict[str, int]:
    """Return the dict logged as `key=...` in one key=value log line."""
    found = re.search(key + r"=(\{[^}]*\})", line)
    assert found is not None, f"{key} not in {line!r}"
    value = ast.literal_eval(found.group(1))
    assert isinstance(value, dict)
    return value


def _peer_associations(region: QuirkRegion, name: str) -> int:
    return len(region.peers[name]._ae.active_associations)


def test_cancel_during_large_fanout(start: Callable[..., QuirkRegion]) -> None:
    region = start(FakePeer("flood", FaultOptions(synthetic_matches=SYNTHETIC), ("one",)),
                   FakePeer("slow", FaultOptions(find_delay=5.0), ("one",)))
    assoc = _associate(region)
    context_id = assoc.accepted_contexts[0].context_id
    statuses: list[int] = []
    cancelled_at = 0.0
    for rsp, _ in assoc.send_c_find(_study_query(), StudyRootQueryRetrieveInformationModelFind, msg_id=MESSAGE_ID):
        statuses.append(int(rsp.Status))
        if len(statuses) == 50:
            cancelled_at = time.monotonic()
            assoc.send_c_cancel(MESSAGE_ID, context_id)
    final_at = time.monotonic()
    assoc.release()

    assert statuses[-1] == status.CANCEL
    assert len(statuses) < SYNTHETIC
    assert final_at - cancelled_at < 2.0
    # Both peers got a C-CANCEL and ended their C-FIND with it.
    wait_for(lambda: region.peers["flood"].find_cancels == 1, timeout=5.0,
             message=lambda: f"flood saw {region.peers['flood'].find_cancels} cancels")
    wait_for(lambda: region.peers["slow"].find_cancels == 1, timeout=5.0,
             message=lambda: f"slow saw {region.peers['slow'].find_cancels} cancels")
    wait_for(lambda: _peer_associations(region, "flood") + _peer_associations(region, "slow") == 0, timeout=5.0)
    completed = region.router.wait_for_log(r"[^\n]*find_completed[^\n]*cancelled=True[^\n]*").group(0)
    # Every peer's count is logged, although both were still running at the C-CANCEL.
    assert _logged_dict(completed, "requests_by_peer") == {"flood": 1, "slow": 1}
    assert _logged_dict(completed, "matches_by_peer") == {"flood": statuses.count(status.PENDING)}
    assert "unfinished_peers=[]" in completed


def test_cancel_one_ms_after_request(start: Callable[..., QuirkRegion]) -> None:
    region = start(FakePeer("slow", FaultOptions(find_delay=5.0), ("one",)))
    assoc = _associate(region)
    context_id = assoc.accepted_contexts[0].context_id
    statuses: list[int] = []
    responses = assoc.send_c_find(_study_query(), StudyRootQueryRetrieveInformationModelFind, msg_id=MESSAGE_ID)
    reader = threading.Thread(target=lambda: statuses.extend(int(rsp.Status) for rsp, _ in responses))
    started = time.monotonic()
    reader.start()
    # The scenario itself: the C-CANCEL follows the request by about 1 ms.
    time.sleep(0.001)
    assoc.send_c_cancel(MESSAGE_ID, context_id)
    reader.join(timeout=10.0)
    elapsed = time.monotonic() - started
    assoc.release()

    assert statuses == [status.CANCEL]
    assert elapsed < 2.0
    # A C-FIND that reached the peer was cancelled there, and no association is left open.
    wait_for(lambda: _peer_associations(region, "slow") == 0, timeout=5.0,
             message=lambda: f"{_peer_associations(region, 'slow')} peer associations still open")
    region.router.wait_for_log(r"find_completed[^\n]*cancelled=True")


def test_cancel_filed_before_request(start: Callable[..., QuirkRegion]) -> None:
    # The router's DUL thread files a C-CANCEL at once but queues requests,
    # so a cancel can be filed before its C-FIND is served. Sending the
    # C-CANCEL first makes that order certain; pynetdicom 3.0.4 alone would
    # forget it and run the C-FIND for the peer's full 5 s.
    region = start(FakePeer("slow", FaultOptions(find_delay=5.0), ("one",)))
    assoc = _associate(region)
    context_id = assoc.accepted_contexts[0].context_id
    started = time.monotonic()

    assoc.send_c_cancel(MESSAGE_ID, context_id)
    responses = assoc.send_c_find(_study_query(), StudyRootQueryRetrieveInformationModelFind, msg_id=MESSAGE_ID)
    statuses = [int(rsp.Status) for rsp, _ in responses]
    elapsed = time.monotonic() - started
    assoc.release()

    assert statuses == [status.CANCEL]
    assert elapsed < 2.0
    region.router.wait_for_log(r"find_completed[^\n]*cancelled=True")


def test_findscu_cancel_option(start: Callable[..., QuirkRegion]) -> None:
    # A short delay per match keeps the peer's C-FIND running when the cancel
    # arrives; without it, a loaded machine may let the peer finish first.
    region = start(FakePeer("flood", FaultOptions(synthetic_matches=SYNTHETIC, find_delay=0.005), ("one",)))
    result = run_findscu(region.router.node, {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": None},
                         calling_ae=WORKSTATION_AE, extra_args=["--cancel", "5"])
    assert result.final_status == status.CANCEL, result.describe()
    assert len(result.datasets) < SYNTHETIC
    wait_for(lambda: region.peers["flood"].find_cancels == 1, timeout=5.0,
             message=lambda: f"flood saw {region.peers['flood'].find_cancels} cancels")
