"""Faults that real PACS can't be made to show, with pynetdicom peers as fakes.

Each test starts SamplePacs peers with FaultOptions in this process, and a
yicrouter subprocess configured with them. The workstation side is DCMTK where the
test needs only statuses and files, and a pynetdicom SCU where it needs the
time of each response.
"""

from __future__ import annotations

import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.association import Association
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind  # type: ignore[attr-defined]
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelMove  # type: ignore[attr-defined]

from harness.dcmtk import StoreSCP, run_findscu, run_movescu
from harness.ports import DicomNode, free_port
from harness.router import PeerEntry, RouterProcess, WorkstationEntry
from harness.waiting import wait_for
from yicrouter import status
from yicrouter.demo.samplepacs import FaultOptions, SamplePacs
from yicrouter.demo.seed import SeedStudy, build_study

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

ROUTER_AE = "YICROUTER"


@dataclass
class FakeRegion:
    router: RouterProcess
    peers: dict[str, SamplePacs]
    studies: dict[str, SeedStudy]
    workstations: dict[str, DicomNode] = field(default_factory=dict)


# Name: (Patient ID, Patient's Name, source file, instances). alpha and beta
# are two different people who happen to have the same Patient ID at two trusts.
STUDY_RECIPES = {
    "a": ("FAKE-a", "Fake^a", "CT_small.dcm", 5),
    "b": ("FAKE-b", "Fake^b", "MR_small.dcm", 5),
    "c": ("FAKE-c", "Fake^c", "CT_small.dcm", 6),
    "d": ("FAKE-d", "Fake^d", "MR_small.dcm", 2),
    "e": ("FAKE-e", "Fake^e", "CT_small.dcm", 1),
    "big": ("FAKE-big", "Fake^big", "CT_small.dcm", 500),
    # About 1.2 MB, three times the tiny filesystem of the full-disk test.
    "fill": ("FAKE-fill", "Fake^fill", "CT_small.dcm", 30),
    "alpha": ("DUP-1", "Alpha^Ann", "CT_small.dcm", 1),
    "beta": ("DUP-1", "Beta^Bob", "MR_small.dcm", 1),
}


def _studies(seed_dir: Path, names: set[str]) -> dict[str, SeedStudy]:
    """Build only the named studies, because the large one takes seconds."""
    studies = {}
    for name in sorted(names):
        patient_id, patient_name, source, count = STUDY_RECIPES[name]
        studies[name] = build_study(seed_dir / name, patient_id=patient_id, patient_name=patient_name,
                                    accession_number=f"FK{name.upper()}", sources=(source,),
                                    instances_per_source=count)
    return studies


@pytest.fixture
def start_region(tmp_path: Path) -> Iterator[Callable[..., FakeRegion]]:
    """Factory: peers named by their fault options, all holding the given studies."""
    running: list[SamplePacs] = []
    routers: list[RouterProcess] = []

    def start(
        peer_faults: dict[str, tuple[FaultOptions, list[str]]],
        find_deadline: float = 5.0,
        extra_router: dict[str, object] | None = None,
    ) -> FakeRegion:
        studies = _studies(tmp_path / "seed", {name for _, held in peer_faults.values() for name in held})
        router_port = free_port()
        peers: dict[str, SamplePacs] = {}
        for name, (faults, held) in peer_faults.items():
            files = [path for key in held for path in studies[key].files]
            peer = SamplePacs(f"{name.upper()}PACS", free_port(), files,
                              move_destinations={ROUTER_AE: ("127.0.0.1", router_port)}, options=faults)
            peer.start()
            running.append(peer)
            peers[name] = peer
        workstations = {title: DicomNode(title, free_port()) for title in ("WS1", "WS2")}
        router = RouterProcess(
            tmp_path / "router", ae_title=ROUTER_AE, port=router_port,
            peers=[PeerEntry(name, DicomNode(p.ae_title, p.port), find_deadline=find_deadline,
                             extra={"dimse_timeout": 10.0})
                   for name, p in peers.items()],
            workstations=[WorkstationEntry(node) for node in workstations.values()],
            extra_router=extra_router,
        )
        router.start()
        routers.append(router)
        return FakeRegion(router, peers, studies, workstations)

    yield start
    for router in routers:
        router.stop()
    for peer in running:
        peer.stop()


def _storescp(region: FakeRegion, title: str, tmp_path: Path) -> StoreSCP:
    node = region.workstations[title]
    scp = StoreSCP(title, tmp_path / title.lower(), port=node.port)
    scp.start()
    return scp


def _study_keys(study: SeedStudy) -> dict[str, str | None]:
    return {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": study.study_uid}


def _received_uids(scp: StoreSCP) -> list[str]:
    return sorted(str(ds.SOPInstanceUID) for ds in scp.received_datasets().values())


# --- Move Originator fallback ---------------------------------------------------


def test_moves_without_originator_stay_separate(start_region: Callable[..., FakeRegion], tmp_path: Path) -> None:
    region = start_region({"quiet": (FaultOptions(omit_move_originator=True, store_delay=0.02), ["a", "b"])})
    ws1, ws2 = _storescp(region, "WS1", tmp_path), _storescp(region, "WS2", tmp_path)
    try:
        with ThreadPoolExecutor(max_workers=2) as pool:
            first = pool.submit(run_movescu, region.router.node, "WS1", _study_keys(region.studies["a"]),
                                calling_ae="WS1", timeout=60.0)
            second = pool.submit(run_movescu, region.router.node, "WS2", _study_keys(region.studies["b"]),
                                 calling_ae="WS2", timeout=60.0)
            results = (first.result(), second.result())
        assert results[0].final_status == status.SUCCESS, results[0].describe()
        assert results[1].final_status == status.SUCCESS, results[1].describe()
        assert _received_uids(ws1) == sorted(region.studies["a"].sop_instance_uids)
        assert _received_uids(ws2) == sorted(region.studies["b"].sop_instance_uids)
    finally:
        ws1.stop()
        ws2.stop()


def test_same_study_twice_without_originator(start_region: Callable[..., FakeRegion], tmp_path: Path) -> None:
    region = start_region({"quiet": (FaultOptions(omit_move_originator=True, store_delay=0.02), ["a"])})
    ws1, ws2 = _storescp(region, "WS1", tmp_path), _storescp(region, "WS2", tmp_path)
    study = region.studies["a"]
    try:
        with ThreadPoolExecutor(max_workers=2) as pool:
            futures = [pool.submit(run_movescu, region.router.node, title, _study_keys(study),
                                   calling_ae=title, timeout=60.0) for title in ("WS1", "WS2")]
            results = [future.result() for future in futures]
        for result in results:
            assert result.final_status == status.SUCCESS, result.describe()
        assert _received_uids(ws1) == sorted(study.sop_instance_uids)
        assert _received_uids(ws2) == sorted(study.sop_instance_uids)
    finally:
        ws1.stop()
        ws2.stop()


# --- A peer that aborts a C-MOVE -------------------------------------------------


def test_peer_abort_mid_move_reported(start_region: Callable[..., FakeRegion], tmp_path: Path) -> None:
    region = start_region({"flaky": (FaultOptions(move_abort_after=2), ["c"])})
    ws1 = _storescp(region, "WS1", tmp_path)
    study = region.studies["c"]
    try:
        started = time.monotonic()
        result = run_movescu(region.router.node, "WS1", _study_keys(study), calling_ae="WS1", timeout=60.0)
        elapsed = time.monotonic() - started
        assert result.final_status == status.MOVE_SUBOPERATIONS_WARNING, result.describe()
        assert result.completed == 2
        assert result.failed == len(study.files) - 2
        # The abort is seen at once, not after the peer's 10 s DIMSE timeout.
        assert elapsed < 8.0
        assert len(ws1.received()) == 2
    finally:
        ws1.stop()


# --- Live counts to a slow destination --------------------------------------------


@dataclass
class SlowDestination:
    """A pynetdicom Storage SCP that takes 50 ms per C-STORE and records arrival times."""

    ae_title: str
    port: int
    arrivals: list[float] = field(default_factory=list)
    sop_instance_uids: list[str] = field(default_factory=list)

    def start(self) -> None:
        ae = AE(ae_title=self.ae_title)
        for context in AllStoragePresentationContexts:
            ae.add_supported_context(context.abstract_syntax)
        self._server = ae.start_server(("127.0.0.1", self.port), block=False,
                                       evt_handlers=[(evt.EVT_C_STORE, self._store)])

    def _store(self, event: evt.Event) -> int:
        time.sleep(0.05)
        self.arrivals.append(time.monotonic())
        self.sop_instance_uids.append(str(event.request.AffectedSOPInstanceUID))
        return 0x0000

    def stop(self) -> None:
        self._server.shutdown()


def _move_association(router: RouterProcess, calling_ae: str, study: SeedStudy) -> tuple[Association, Dataset]:
    """Return an established association to the router and a STUDY-level move identifier."""
    ae = AE(ae_title=calling_ae)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
    assoc = ae.associate("127.0.0.1", router.port, ae_title=ROUTER_AE)
    assert assoc.is_established
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.StudyInstanceUID = study.study_uid
    return assoc, identifier


def _move_with_timestamps(router: RouterProcess, destination: str, study: SeedStudy) -> list[tuple[float, Dataset]]:
    assoc, identifier = _move_association(router, destination, study)
    responses = [(time.monotonic(), rsp) for rsp, _ in
                 assoc.send_c_move(identifier, destination, StudyRootQueryRetrieveInformationModelMove)]
    assoc.release()
    return responses


def test_final_response_after_last_forward(start_region: Callable[..., FakeRegion]) -> None:
    region = start_region({"fast": (FaultOptions(), ["c"])})
    node = region.workstations["WS1"]
    destination = SlowDestination("WS1", node.port)
    destination.start()
    study = region.studies["c"]
    try:
        responses = _move_with_timestamps(region.router, "WS1", study)
    finally:
        destination.stop()
    final_time, final = responses[-1]
    pending = [rsp for _, rsp in responses[:-1]]
    assert final.Status == status.SUCCESS
    assert final.NumberOfCompletedSuboperations == len(study.files)
    assert len(destination.arrivals) == len(study.files)
    assert final_time >= max(destination.arrivals)
    completed = [int(rsp.NumberOfCompletedSuboperations) for rsp in pending]
    assert completed == sorted(completed), "Completed counts went backwards"
    # Pending responses come at most every 0.2 s, so the last may lag the final counts.
    assert pending and completed[-1] <= len(study.files)
    assert all(rsp.Status == status.PENDING for rsp in pending)


def test_slow_peer_move_sends_keepalive(start_region: Callable[..., FakeRegion]) -> None:
    region = start_region({"sluggish": (FaultOptions(store_delay=7.0), ["e"])})
    node = region.workstations["WS1"]
    destination = SlowDestination("WS1", node.port)
    destination.start()
    try:
        responses = _move_with_timestamps(region.router, "WS1", region.studies["e"])
    finally:
        destination.stop()
    pending = [(at, rsp) for at, rsp in responses if rsp.Status == status.PENDING]
    assert responses[-1][1].Status == status.SUCCESS
    assert pending, "no Pending response while the peer was silent"
    assert pending[0][0] < min(destination.arrivals), "the first Pending came only after the instance"
    assert int(pending[0][1].NumberOfCompletedSuboperations) == 0


# --- C-FIND streaming and peer deadlines -------------------------------------------


def _find_with_timestamps(router: RouterProcess) -> list[tuple[float, Dataset, Dataset | None]]:
    ae = AE(ae_title="WS1")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = ae.associate("127.0.0.1", router.port, ae_title=ROUTER_AE)
    assert assoc.is_established
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.StudyInstanceUID = ""
    identifier.PatientID = ""
    started = time.monotonic()
    responses = [(time.monotonic() - started, rsp, match) for rsp, match in
                 assoc.send_c_find(identifier, StudyRootQueryRetrieveInformationModelFind)]
    assoc.release()
    return responses


def test_fast_peer_matches_not_held_back(start_region: Callable[..., FakeRegion]) -> None:
    region = start_region({"fast": (FaultOptions(), ["a"]), "slow": (FaultOptions(find_delay=1.5), ["b"])})
    responses = _find_with_timestamps(region.router)
    arrival = {str(match.StudyInstanceUID): at for at, _, match in responses if match is not None}
    fast_uid, slow_uid = region.studies["a"].study_uid, region.studies["b"].study_uid
    assert responses[-1][1].Status == status.SUCCESS
    assert arrival[fast_uid] < 1.0
    assert arrival[slow_uid] >= 1.5


def test_peer_past_deadline_left_out(start_region: Callable[..., FakeRegion]) -> None:
    region = start_region(
        {"fast": (FaultOptions(), ["a"]), "stuck": (FaultOptions(find_delay=8.0), ["b"])}, find_deadline=1.5
    )
    responses = _find_with_timestamps(region.router)
    final_at, final, _ = responses[-1]
    uids = {str(match.StudyInstanceUID) for _, _, match in responses if match is not None}
    assert final.Status == status.SUCCESS
    assert uids == {region.studies["a"].study_uid}
    assert final_at < 4.0
    region.router.wait_for_log(r"peer_find_failed.*peer=stuck")


def test_peer_abort_during_find(start_region: Callable[..., FakeRegion]) -> None:
    region = start_region({"fast": (FaultOptions(), ["a"]), "aborting": (FaultOptions(find_abort_after=1), ["b", "d"])})
    result = run_findscu(region.router.node, {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": None},
                         calling_ae="WS1")
    uids = {str(ds.StudyInstanceUID) for ds in result.datasets}
    assert result.final_status == status.SUCCESS, result.describe()
    assert region.studies["a"].study_uid in uids
    region.router.wait_for_log(r"peer_find_failed.*peer=aborting")


def test_peer_rejecting_associations(start_region: Callable[..., FakeRegion]) -> None:
    region = start_region({"fast": (FaultOptions(), ["a"]), "closed": (FaultOptions(reject_association=True), ["b"])})
    result = run_findscu(region.router.node, {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": None},
                         calling_ae="WS1")
    uids = {str(ds.StudyInstanceUID) for ds in result.datasets}
    assert result.final_status == status.SUCCESS, result.describe()
    assert uids == {region.studies["a"].study_uid}
    region.router.wait_for_log(r"peer_find_failed.*peer=closed.*rejected")


# --- C-CANCEL of a C-MOVE ------------------------------------------------------------


def test_cancel_move_stops_forwarding(start_region: Callable[..., FakeRegion], tmp_path: Path) -> None:
    region = start_region({"slow": (FaultOptions(store_delay=0.3), ["c"])})
    ws1 = _storescp(region, "WS1", tmp_path)
    study = region.studies["c"]
    assoc, identifier = _move_association(region.router, "WS1", study)
    responses = []
    try:
        for rsp, _ in assoc.send_c_move(identifier, "WS1", StudyRootQueryRetrieveInformationModelMove, msg_id=7):
            responses.append(rsp)
            if rsp.get("Status") == status.PENDING and len(responses) == 1:
                context_id = assoc.accepted_contexts[0].context_id
                assoc.send_c_cancel(7, context_id)
        assoc.release()
        final = responses[-1]
        assert final.Status == status.CANCEL
        delivered = len(ws1.received())
        assert delivered < len(study.files)
        assert final.NumberOfCompletedSuboperations == delivered
        assert final.NumberOfRemainingSuboperations > 0
        time.sleep(1.0)  # no C-STORE may reach the destination after the cancel
        assert len(ws1.received()) == delivered
    finally:
        ws1.stop()


# --- Patient IDs shared by different people at different trusts --------------------


def _patient_root_find(router: RouterProcess, level: str, **keys: str) -> list[Dataset]:
    query = {"QueryRetrieveLevel": level, "PatientID": "DUP-1", "PatientName": None, **keys}
    result = run_findscu(router.node, query, model="patient", calling_ae="WS1")
    assert result.final_status == status.SUCCESS, result.describe()
    return result.datasets


def test_same_patient_id_different_people_listed(start_region: Callable[..., FakeRegion]) -> None:
    region = start_region({"left": (FaultOptions(), ["alpha"]), "right": (FaultOptions(), ["beta"])})
    names = sorted(str(ds.PatientName) for ds in _patient_root_find(region.router, "PATIENT"))
    assert names == ["Alpha^Ann", "Beta^Bob"]


def test_patient_move_refused_when_ambiguous(start_region: Callable[..., FakeRegion], tmp_path: Path) -> None:
    region = start_region({"left": (FaultOptions(), ["alpha"]), "right": (FaultOptions(), ["beta"])})
    ws1 = _storescp(region, "WS1", tmp_path)
    try:
        _patient_root_find(region.router, "PATIENT")
        result = run_movescu(region.router.node, "WS1", {"QueryRetrieveLevel": "PATIENT", "PatientID": "DUP-1"},
                             model="patient", calling_ae="WS1", timeout=60.0)
        assert result.final_status == status.MOVE_UNABLE_TO_PROCESS, result.describe()
        assert ws1.received() == []
        region.router.wait_for_log(r"move_rejected.*several trusts")

        study_move = run_movescu(region.router.node, "WS1", _study_keys(region.studies["alpha"]),
                                 calling_ae="WS1", timeout=60.0)
        assert study_move.final_status == status.SUCCESS, study_move.describe()
    finally:
        ws1.stop()


# --- Locating data when its only holder can't be searched ---------------------------


def test_move_fails_when_holder_unsearchable(start_region: Callable[..., FakeRegion], tmp_path: Path) -> None:
    region = start_region({"fast": (FaultOptions(), ["a"]), "closed": (FaultOptions(reject_association=True), ["b"])})
    ws1 = _storescp(region, "WS1", tmp_path)
    try:
        result = run_movescu(region.router.node, "WS1", _study_keys(region.studies["b"]), calling_ae="WS1",
                             timeout=60.0)
        assert result.final_status == status.MOVE_UNABLE_TO_PROCESS, result.describe()
        region.router.wait_for_log(r"move_rejected.*could not be searched: closed")
    finally:
        ws1.stop()


# --- Peers may deliver, not query ------------------------------------------------------


def test_peer_ae_may_not_query(start_region: Callable[..., FakeRegion]) -> None:
    region = start_region({"fast": (FaultOptions(), ["a"])})
    peer_ae = region.peers["fast"].ae_title
    result = run_findscu(region.router.node, {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": None},
                         calling_ae=peer_ae)
    assert result.final_status == status.REFUSED_NOT_AUTHORIZED, result.describe()
    assert result.datasets == []


def test_peer_ae_may_not_move(start_region: Callable[..., FakeRegion], tmp_path: Path) -> None:
    region = start_region({"fast": (FaultOptions(), ["a"])})
    ws1 = _storescp(region, "WS1", tmp_path)
    try:
        result = run_movescu(region.router.node, "WS1", _study_keys(region.studies["a"]),
                             calling_ae=region.peers["fast"].ae_title, timeout=60.0)
        assert result.final_status == status.REFUSED_NOT_AUTHORIZED, result.describe()
        assert ws1.received() == []
    finally:
        ws1.stop()


# --- A requester that goes away --------------------------------------------------------


def test_move_continues_after_requester_lost(start_region: Callable[..., FakeRegion], tmp_path: Path) -> None:
    region = start_region({"slow": (FaultOptions(store_delay=0.3), ["c"])})
    ws1 = _storescp(region, "WS1", tmp_path)
    study = region.studies["c"]
    assoc, identifier = _move_association(region.router, "WS1", study)
    try:
        for rsp, _ in assoc.send_c_move(identifier, "WS1", StudyRootQueryRetrieveInformationModelMove):
            if rsp.get("Status") == status.PENDING:
                assoc.abort()
                break
        ws1.wait_for_files(len(study.files), timeout=30.0)
        assert _received_uids(ws1) == sorted(study.sop_instance_uids)
        region.router.wait_for_log(r"move_requester_lost")
        region.router.wait_for_log(r"move_completed.*requester_lost=True")
    finally:
        ws1.stop()


# --- A spool below its free-space floor ------------------------------------------------


def test_spool_floor_refuses_instances(start_region: Callable[..., FakeRegion], tmp_path: Path) -> None:
    # A floor of 1 TiB is above the free space of any test machine.
    region = start_region({"fast": (FaultOptions(), ["a"])}, extra_router={"spool_min_free_mb": 1 << 20})
    ws1 = _storescp(region, "WS1", tmp_path)
    study = region.studies["a"]
    try:
        result = run_movescu(region.router.node, "WS1", _study_keys(study), calling_ae="WS1", timeout=60.0)
        assert result.final_status is not None, result.describe()
        assert status.is_failure(result.final_status), result.describe()
        assert ws1.received() == []
        region.router.wait_for_log(r"spool_full")
        spool = region.router.state_dir / "spool"
        assert list((spool / "jobs").rglob("*.dcm")) == []
        assert list((spool / "incoming").iterdir()) == []

        find = run_findscu(region.router.node, {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": None},
                           calling_ae="WS1")
        assert find.final_status == status.SUCCESS, find.describe()
        assert {str(ds.StudyInstanceUID) for ds in find.datasets} == {study.study_uid}
    finally:
        ws1.stop()


# --- SIGKILL in the middle of a relay ----------------------------------------------------


def test_sigkill_mid_relay_loses_nothing(start_region: Callable[..., FakeRegion], tmp_path: Path) -> None:
    queue_settings = {"retry_base": 0.5, "retry_max": 1.0, "poll_interval": 0.5}
    region = start_region({"fast": (FaultOptions(), ["big"])})
    study = region.studies["big"]
    destination = SlowDestination("WS1", region.workstations["WS1"].port)
    destination.start()
    drop_ins = region.router.work_dir / "yicrouter.d"
    drop_ins.mkdir(exist_ok=True)
    (drop_ins / "50-queue.toml").write_text(
        "[queue]\n" + "".join(f"{key} = {value}\n" for key, value in queue_settings.items()), encoding="utf-8"
    )
    mover = ThreadPoolExecutor(max_workers=1)
    try:
        mover.submit(run_movescu, region.router.node, "WS1", _study_keys(study), calling_ae="WS1", timeout=60.0)
        # The peer sends faster than the slow destination takes instances, so
        # every instance is acknowledged while most still wait to be forwarded.
        wait_for(lambda: region.router.log_text().count("store_received") >= len(study.files), timeout=60.0,
                 message="the router did not receive the whole study")
        forwarded_before_kill = len(destination.sop_instance_uids)
        assert region.router.process is not None
        region.router.process.send_signal(signal.SIGKILL)
        region.router.process.wait(timeout=10.0)
        region.router.stop()

        restarted = RouterProcess(
            region.router.work_dir, ae_title=ROUTER_AE, port=region.router.port,
            peers=region.router.peers, workstations=region.router.workstations,
        )
        restarted.start()
        try:
            wait_for(lambda: set(destination.sop_instance_uids) >= set(study.sop_instance_uids), timeout=90.0,
                     message=lambda: f"{len(set(destination.sop_instance_uids))} of {len(study.files)} delivered")
        finally:
            assert restarted.stop() == 0
    finally:
        mover.shutdown(wait=False, cancel_futures=True)
        destination.stop()

    assert forwarded_before_kill < len(study.files), "the kill came too late to test anything"
    assert "requeued_after_restart=" in restarted.log_text()
    assert set(destination.sop_instance_uids) == set(study.sop_instance_uids)


# --- A destination that rejects instances: retries, dead letters, queue retry -----------


@dataclass
class RejectingDestination(SlowDestination):
    """A Storage SCP that returns 0xA700 (Out of Resources) while `rejecting` is set."""

    rejecting: threading.Event = field(default_factory=threading.Event)

    def _store(self, event: evt.Event) -> int:
        if self.rejecting.is_set():
            return status.STORE_OUT_OF_RESOURCES
        self.sop_instance_uids.append(str(event.request.AffectedSOPInstanceUID))
        return 0x0000


def _queue_states(router: RouterProcess) -> list[str]:
    with sqlite3.connect(router.state_dir / "yicrouter.sqlite3") as connection:
        return [str(row[0]) for row in connection.execute("SELECT state FROM queue_entry")]


def test_rejected_instances_become_dead_then_retried(
    start_region: Callable[..., FakeRegion], tmp_path: Path
) -> None:
    region = start_region({"fast": (FaultOptions(), ["d"])})
    region.router.stop()
    drop_ins = region.router.work_dir / "yicrouter.d"
    drop_ins.mkdir(exist_ok=True)
    (drop_ins / "50-queue.toml").write_text(
        "[queue]\nretry_base = 0.2\nretry_max = 0.5\nmax_attempts = 3\npoll_interval = 0.3\n", encoding="utf-8"
    )
    region.router.start()
    study = region.studies["d"]
    destination = RejectingDestination("WS1", region.workstations["WS1"].port)
    destination.rejecting.set()
    destination.start()
    try:
        result = run_movescu(region.router.node, "WS1", _study_keys(study), calling_ae="WS1", timeout=60.0)
        assert result.final_status == status.MOVE_OUT_OF_RESOURCES_SUBOPERATIONS, result.describe()
        wait_for(lambda: _queue_states(region.router) == ["dead"] * len(study.files), timeout=30.0,
                 message=lambda: f"queue states: {_queue_states(region.router)}")
        region.router.wait_for_log(r"dead_letter")
        assert destination.sop_instance_uids == []

        destination.rejecting.clear()
        retry = subprocess.run(
            [sys.executable, "-m", "yicrouter", "queue", "retry", "--dead", "--config", str(region.router.config_path)],
            capture_output=True, text=True, timeout=60, check=False,
        )
        assert retry.returncode == 0, retry.stderr
        wait_for(lambda: _queue_states(region.router) == [], timeout=30.0,
                 message=lambda: f"queue states: {_queue_states(region.router)}")
        assert sorted(destination.sop_instance_uids) == sorted(study.sop_instance_uids)
    finally:
        destination.stop()


# --- A spool on a tiny filesystem ------------------------------------------------------


@pytest.fixture
def tiny_state_dir(tmp_path: Path) -> Iterator[Path]:
    """A 400 KiB tmpfs for the router's state folder; skipped where mount is not allowed."""
    mount_point = tmp_path / "tiny-state"
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=400k", "tmpfs", str(mount_point)],
                             capture_output=True, text=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_full_disk_refuses_and_keeps_serving(
    start_region: Callable[..., FakeRegion], tiny_state_dir: Path
) -> None:
    # The floor is off, so the router meets the full disk itself. Nothing
    # listens on WS1, so instances pile up in the spool until it is full.
    region = start_region({"fast": (FaultOptions(), ["fill"])},
                          extra_router={"state_dir": str(tiny_state_dir), "spool_min_free_mb": 0})
    study = region.studies["fill"]

    result = run_movescu(region.router.node, "WS1", _study_keys(study), calling_ae="WS1", timeout=60.0)

    assert result.final_status is not None, result.describe()
    assert status.is_failure(result.final_status), result.describe()
    # pynetdicom's reader thread may meet the full disk first: thread_errors
    # logs that once, with its traceback at DEBUG.
    unhandled = [line for line in region.router.log_text().splitlines()
                 if "Traceback" in line and "association_reader_traceback" not in line]
    assert unhandled == []
    assert re.search(r"(queue_write_failed|spool_write_failed|association_reader_failed).*(full|No space)",
                     region.router.log_text())
    assert list((tiny_state_dir / "spool" / "incoming").iterdir()) == []
    find = run_findscu(region.router.node, {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": None},
                       calling_ae="WS1")
    assert find.final_status == status.SUCCESS, find.describe()
