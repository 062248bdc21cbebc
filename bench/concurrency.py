"""Concurrency: many workstations move different studies at once through yicrouter.

Every workstation is a DCMTK storescp with its own AE title, known to the
router and to every peer as a Move Destination. Each repetition moves every
study once through the router and once directly from the peer that stores it,
with all workstations' DCMTK movescu runs started together. While the moves
through the router run, the in-process client keeps timing a STUDY-level
C-FIND through the router and directly to each peer.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from bench.client import TimedFind, study_query, timed_find
from bench.context import BenchContext
from bench.data import build_concurrent_studies
from bench.peers import CLIENT_AE, PEER_NAMES, Peers, running_peers, running_router
from bench.stats import Comparison, Count, MeasurementResult
from harness.dcmtk import StoreSCP, run_movescu
from harness.ports import DicomNode, free_port
from harness.waiting import WaitTimeout, wait_for
from yicrouter import status
from yicrouter.demo.seed import SeedStudy

MOVE_TIMEOUT = 300.0
MAX_FANOUT_RATIO = 1.2


@dataclass
class _Workstation:
    scp: StoreSCP
    study: SeedStudy
    holder: str
    # Instances this workstation should have received so far.
    expected: int = 0


@dataclass
class _Round:
    """Outcome of one round of simultaneous C-MOVEs."""

    seconds: float
    failed_moves: int
    failures: list[str] = field(default_factory=list)


def _move_one(source: DicomNode, workstation: _Workstation) -> str | None:
    """Run one movescu and return a description of its failure, or None."""
    title = workstation.scp.ae_title
    keys = {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": workstation.study.study_uid}
    result = run_movescu(source, title, keys, calling_ae=title, timeout=MOVE_TIMEOUT)
    if result.final_status != status.SUCCESS or result.failed:
        return f"{title} from {source.ae_title}: {result.describe()[-500:]}"
    return None


def _move_all(sources: dict[str, DicomNode], workstations: list[_Workstation]) -> _Round:
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=len(workstations)) as pool:
        outcomes = list(pool.map(lambda ws: _move_one(sources[ws.holder], ws), workstations))
    seconds = time.perf_counter() - started
    failures = [outcome for outcome in outcomes if outcome is not None]
    return _Round(seconds, len(failures), failures)


def _missing_instances(workstations: list[_Workstation]) -> int:
    """Count instances not (yet) written by the destinations, after a short wait."""
    def missing() -> int:
        return sum(max(0, ws.expected - len(ws.scp.received())) for ws in workstations)

    try:
        wait_for(lambda: missing() == 0, timeout=10.0, message="instances missing at the workstations")
    except WaitTimeout:
        pass
    return missing()


class _FindsDuringLoad:
    """Time C-FINDs through the router and directly, in a thread, until stopped."""

    def __init__(self, peers: Peers) -> None:
        self.peers = peers
        self.via_router: list[float] = []
        self.slowest_direct: list[float] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="finds-during-load", daemon=True)

    def _time(self, node: DicomNode) -> TimedFind:
        return timed_find(node, study_query("LOAD-*"), CLIENT_AE, timeout=MOVE_TIMEOUT)

    def _run(self) -> None:
        # The loop runs at least once, so short smoke runs still get a sample.
        while True:
            try:
                self.via_router.append(self._time(self.peers.router_node).total)
                self.slowest_direct.append(max(self._time(self.peers.node(name)).total for name in PEER_NAMES))
            except Exception as error:  # noqa: BLE001 -- reported as a failure count
                self.errors.append(f"{type(error).__name__}: {error}")
            if self._stop.is_set():
                return

    def __enter__(self) -> "_FindsDuringLoad":
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()


def _start_workstations(stack: ExitStack, work_dir: Path, studies: list[SeedStudy]) -> list[_Workstation]:
    workstations = []
    for number, study in enumerate(studies, start=1):
        title = f"WS{number:02d}"
        scp = StoreSCP(title, work_dir / title.lower(), port=free_port())
        workstations.append(_Workstation(scp, study, PEER_NAMES[(number - 1) % len(PEER_NAMES)]))
    for workstation in workstations:
        workstation.scp.start()
        stack.callback(workstation.scp.stop)
    return workstations


def _idle_fanout(peers: Peers, repeat: int) -> list[float]:
    return [timed_find(peers.router_node, study_query("LOAD-*"), CLIENT_AE).total for _ in range(repeat)]


def measure_concurrency(context: BenchContext) -> MeasurementResult:
    """Move one study per workstation at once, through the router and directly."""
    studies = build_concurrent_studies(context.work_dir / "seed", context.sizes)
    result = MeasurementResult("concurrency")
    with ExitStack() as stack:
        workstations = _start_workstations(stack, context.work_dir / "workstations", studies)
        holdings = {name: [ws.study for ws in workstations if ws.holder == name] for name in PEER_NAMES}
        nodes = {ws.scp.ae_title: ws.scp.node for ws in workstations}
        peers = stack.enter_context(running_peers(context.work_dir / "peers", holdings, workstations=nodes))
        stack.enter_context(running_router(context.work_dir / "router", peers, peers.entries(PEER_NAMES)))
        _run_rounds(context, peers, workstations, result)
    result.notes.append(
        f"{len(studies)} workstations, each moving one study of 128x128 CT "
        f"({context.sizes.instances_per_concurrent_study} per study), "
        "DCMTK movescu to DCMTK storescp destinations"
    )
    return result


def _run_rounds(context: BenchContext, peers: Peers, workstations: list[_Workstation],
                result: MeasurementResult) -> None:
    idle = _idle_fanout(peers, context.repeat)
    via_router = {name: peers.router_node for name in PEER_NAMES}
    direct = {name: peers.node(name) for name in PEER_NAMES}
    router_rounds: list[_Round] = []
    direct_rounds: list[_Round] = []
    with _FindsDuringLoad(peers) as finds:
        for _ in range(context.repeat):
            for workstation in workstations:
                workstation.expected += len(workstation.study.files)
            router_rounds.append(_move_all(via_router, workstations))
    for _ in range(context.repeat):
        for workstation in workstations:
            workstation.expected += len(workstation.study.files)
        direct_rounds.append(_move_all(direct, workstations))

    count = len(workstations)
    result.comparisons += [
        Comparison(f"{count} simultaneous C-MOVEs: wall time", [r.seconds for r in router_rounds],
                   [r.seconds for r in direct_rounds], "same C-MOVEs direct"),
        Comparison("C-FIND fan-out during the C-MOVEs", finds.via_router, finds.slowest_direct,
                   "slowest peer direct, same load", max_ratio=MAX_FANOUT_RATIO),
        Comparison("C-FIND fan-out: during the C-MOVEs vs idle", finds.via_router, idle, "router idle"),
    ]
    result.counts += [
        Count("failed C-MOVEs through the router", sum(r.failed_moves for r in router_rounds), maximum=0),
        Count("failed C-MOVEs direct", sum(r.failed_moves for r in direct_rounds)),
        Count("instances missing at the workstations", _missing_instances(workstations), maximum=0),
        Count("failed C-FINDs during the C-MOVEs", len(finds.errors), maximum=0),
    ]
    result.notes += [failure for r in router_rounds + direct_rounds for failure in r.failures][:10]
    result.notes += finds.errors[:5]
