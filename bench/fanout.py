"""C-FIND fan-out: one STUDY-level query through yicrouter to three peers.

Each scenario times the same query, from the same in-process pynetdicom client,
through the router and directly to each peer, alternating the two paths in
every repetition. The peers are Orthanc, DCMTK dcmqrscp and a pynetdicom
SamplePacs. The scenarios are: all peers healthy, the pynetdicom peer replaced
by one that waits 2 s before each Pending response, and a fourth peer whose
port has no listener.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from bench.client import TimedFind, expect_matches, study_query, timed_find
from bench.context import BenchContext
from bench.data import build_small_study
from bench.peers import CLIENT_AE, PEER_NAMES, SLOW_PEER_NAME, Peers, dead_peer_entry, running_peers, running_router
from bench.stats import Comparison, MeasurementResult
from yicrouter.demo.seed import SeedStudy

# Studies per peer. Each peer stores its own studies, so a match identifies the peer that sent it.
STUDIES_PER_PEER = 3
PATIENT_ID_PATTERN = "FANOUT-*"
# Seconds that the slow peer waits before each Pending response.
SLOW_FIND_DELAY = 2.0
# Targets for the medians.
MAX_FANOUT_RATIO = 1.2
MAX_FIRST_MATCH_LAG = 0.010


def _build_holdings(seed_dir: Path) -> dict[str, list[SeedStudy]]:
    holdings = {
        name: [build_small_study(seed_dir / f"{name}-{number}", instances=1,
                                 patient_id=f"FANOUT-{name[:4].upper()}-{number}")
               for number in range(STUDIES_PER_PEER)]
        for name in PEER_NAMES
    }
    # One match keeps each slow query at SLOW_FIND_DELAY seconds.
    holdings[SLOW_PEER_NAME] = holdings["pynetdicom"][:1]
    return holdings


def _study_uids(holdings: dict[str, list[SeedStudy]], names: Sequence[str]) -> set[str]:
    return {study.study_uid for name in names for study in holdings.get(name, ())}


class _Sampler:
    """Collect timed C-FINDs through the router and directly to each peer."""

    def __init__(self, peers: Peers, holdings: dict[str, list[SeedStudy]], direct_names: Sequence[str]):
        self.peers = peers
        self.holdings = holdings
        self.direct_names = list(direct_names)
        self.via_router: list[TimedFind] = []
        self.direct: dict[str, list[TimedFind]] = {name: [] for name in direct_names}

    def run(self, repeat: int) -> None:
        identifier = study_query(PATIENT_ID_PATTERN)
        # One untimed query per path opens Orthanc's and dcmqrscp's caches and
        # the router's imports, so the first sample is not a cold start.
        for _ in range(repeat + 1):
            self.via_router.append(timed_find(self.peers.router_node, identifier, CLIENT_AE))
            for name in self.direct_names:
                self.direct[name].append(timed_find(self.peers.node(name), identifier, CLIENT_AE))
        self.via_router.pop(0)
        for samples in self.direct.values():
            samples.pop(0)
        self._check()

    def _check(self) -> None:
        for name, samples in self.direct.items():
            for sample in samples:
                expect_matches(sample, _study_uids(self.holdings, [name]))
        expected = _study_uids(self.holdings, self.direct_names)
        for sample in self.via_router:
            expect_matches(sample, expected)

    def slowest_direct_totals(self) -> list[float]:
        """Per repetition, the total time of the slowest peer queried directly."""
        return [max(self.direct[name][i].total for name in self.direct_names)
                for i in range(len(self.via_router))]

    def fastest_direct_first_matches(self, names: Sequence[str]) -> list[float]:
        return [min(self.direct[name][i].first_match for name in names)
                for i in range(len(self.via_router))]


def _healthy(context: BenchContext, peers: Peers, holdings: dict[str, list[SeedStudy]]) -> list[Comparison]:
    sampler = _Sampler(peers, holdings, PEER_NAMES)
    with running_router(context.work_dir / "router-healthy", peers, peers.entries(PEER_NAMES)):
        sampler.run(context.repeat)
    return [
        Comparison("fan-out, 3 peers: total", [s.total for s in sampler.via_router],
                   sampler.slowest_direct_totals(), "slowest peer direct", max_ratio=MAX_FANOUT_RATIO),
        Comparison("fan-out, 3 peers: first match", [s.first_match for s in sampler.via_router],
                   sampler.fastest_direct_first_matches(PEER_NAMES), "fastest peer direct",
                   max_difference=MAX_FIRST_MATCH_LAG),
        # The client's association setup is the same on both paths, so this
        # row shows the router's own cost, including its associations to the peers.
        Comparison("fan-out, 3 peers: after association", [s.total - s.associated for s in sampler.via_router],
                   [max(sampler.direct[name][i].total - sampler.direct[name][i].associated for name in PEER_NAMES)
                    for i in range(len(sampler.via_router))], "slowest peer direct"),
    ]


def _slow_peer(context: BenchContext, peers: Peers, holdings: dict[str, list[SeedStudy]]) -> list[Comparison]:
    fast_names = ("orthanc", "dcmqrscp")
    names = (*fast_names, SLOW_PEER_NAME)
    sampler = _Sampler(peers, holdings, names)
    with running_router(context.work_dir / "router-slow", peers, peers.entries(names)):
        sampler.run(context.repeat)
    fast_uids = _study_uids(holdings, fast_names)
    fast_direct = [max(sampler.direct[name][i].total for name in fast_names)
                   for i in range(len(sampler.via_router))]
    return [
        Comparison(f"slow peer ({SLOW_FIND_DELAY:g} s per match): first match",
                   [s.first_match for s in sampler.via_router],
                   sampler.fastest_direct_first_matches(fast_names), "fastest peer direct",
                   max_difference=MAX_FIRST_MATCH_LAG),
        Comparison("slow peer: last match of the other peers",
                   [s.last_match_of(fast_uids) for s in sampler.via_router], fast_direct,
                   "slowest other peer direct", max_ratio=MAX_FANOUT_RATIO),
        Comparison("slow peer: total", [s.total for s in sampler.via_router],
                   sampler.slowest_direct_totals(), "slow peer direct", max_ratio=MAX_FANOUT_RATIO),
    ]


def _dead_peer(context: BenchContext, peers: Peers, holdings: dict[str, list[SeedStudy]]) -> list[Comparison]:
    sampler = _Sampler(peers, holdings, PEER_NAMES)
    entries = [*peers.entries(PEER_NAMES), dead_peer_entry()]
    with running_router(context.work_dir / "router-dead", peers, entries):
        sampler.run(context.repeat)
    return [
        Comparison("dead peer (port closed): total", [s.total for s in sampler.via_router],
                   sampler.slowest_direct_totals(), "slowest live peer direct", max_ratio=MAX_FANOUT_RATIO),
        Comparison("dead peer: first match", [s.first_match for s in sampler.via_router],
                   sampler.fastest_direct_first_matches(PEER_NAMES), "fastest peer direct",
                   max_difference=MAX_FIRST_MATCH_LAG),
    ]


def measure_fanout(context: BenchContext) -> MeasurementResult:
    """Run the healthy, slow-peer and dead-peer C-FIND scenarios."""
    holdings = _build_holdings(context.work_dir / "seed")
    result = MeasurementResult("fanout")
    with running_peers(context.work_dir / "peers", holdings, slow_find_delay=SLOW_FIND_DELAY) as peers:
        for scenario in (_healthy, _slow_peer, _dead_peer):
            result.comparisons += scenario(context, peers, holdings)
    result.notes.append(
        f"STUDY-level C-FIND for PatientID={PATIENT_ID_PATTERN}, {STUDIES_PER_PEER} matches per peer (1 from the slow peer); "
        "times run from the association request to the response, pynetdicom SCU in-process"
    )
    return result
