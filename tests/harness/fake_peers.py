"""A router with SamplePacs peers in this process, for faults that real PACS can't show.

Each peer contains studies built from pydicom's test files and knows the router
as a Move Destination. PeerSpec.extra adds [[peer]] keys, for example
{"retrieve": "c-get"}.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.ports import DicomNode, free_port
from harness.router import PeerEntry, RouterProcess, WorkstationEntry
from yicrouter.demo.samplepacs import FaultOptions, SamplePacs
from yicrouter.demo.seed import SeedStudy, build_study

ROUTER_AE = "YICROUTER"


@dataclass(frozen=True)
class PeerSpec:
    faults: FaultOptions
    # Names of the studies the peer holds, keys of the `studies` given to FakeRegion.start.
    holds: tuple[str, ...]
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StudyRecipe:
    patient_id: str
    source: str
    instances: int


@dataclass
class FakeRegion:
    """SamplePacs peers and a router, started by start() and stopped by stop()."""

    work_dir: Path
    router: RouterProcess | None = None
    peers: dict[str, SamplePacs] = field(default_factory=dict)
    studies: dict[str, SeedStudy] = field(default_factory=dict)
    workstations: dict[str, DicomNode] = field(default_factory=dict)

    def start(self, specs: dict[str, PeerSpec], recipes: dict[str, StudyRecipe]) -> "FakeRegion":
        for name in sorted({study for spec in specs.values() for study in spec.holds}):
            recipe = recipes[name]
            self.studies[name] = build_study(
                self.work_dir / "seed" / name, patient_id=recipe.patient_id, patient_name=f"Fake^{name}",
                accession_number=f"FK{name.upper()}"[:16], sources=(recipe.source,),
                instances_per_source=recipe.instances,
            )
        router_port = free_port()
        for name, spec in specs.items():
            files = [path for key in spec.holds for path in self.studies[key].files]
            peer = SamplePacs(f"{name.upper()}PACS", free_port(), files,
                              move_destinations={ROUTER_AE: ("127.0.0.1", router_port)}, options=spec.faults)
            peer.start()
            self.peers[name] = peer
        self.workstations = {title: DicomNode(title, free_port()) for title in ("WS1", "WS2")}
        self.router = RouterProcess(
            self.work_dir / "router", ae_title=ROUTER_AE, port=router_port,
            peers=[PeerEntry(name, DicomNode(peer.ae_title, peer.port), find_deadline=5.0,
                             extra={"dimse_timeout": 10.0, **specs[name].extra})
                   for name, peer in self.peers.items()],
            workstations=[WorkstationEntry(node) for node in self.workstations.values()],
        )
        self.router.start()
        return self

    @property
    def node(self) -> DicomNode:
        assert self.router is not None
        return self.router.node

    def stop(self) -> None:
        if self.router is not None:
            self.router.stop()
        for peer in self.peers.values():
            peer.stop()
