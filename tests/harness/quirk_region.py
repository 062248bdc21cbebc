"""A router in front of SamplePacs peers that show quirks, with per-peer router options.

Each FakePeer is one SamplePacs with its FaultOptions, and one [[peer]] table
in the router's configuration with the router options under test, so a test
can put a peer configured for its quirk next to one that is not.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.ports import DicomNode, free_port
from harness.router import PeerEntry, RouterProcess, WorkstationEntry
from yicrouter.demo.samplepacs import FaultOptions, SamplePacs
from yicrouter.demo.seed import SeedStudy, build_study

ROUTER_AE = "YICROUTER"
WORKSTATION_AE = "WS1"


@dataclass(frozen=True)
class StudyRecipe:
    """A study to build: Patient ID, Patient's Name, StudyDate, source file and instance count."""

    patient_id: str
    patient_name: str
    study_date: str
    source: str = "CT_small.dcm"
    instances: int = 1


@dataclass(frozen=True)
class FakePeer:
    """One peer: the fault options of its SamplePacs and the router's options for it."""

    name: str
    faults: FaultOptions = FaultOptions()
    studies: tuple[str, ...] = ()
    router_options: dict[str, Any] = field(default_factory=dict)


@dataclass
class QuirkRegion:
    router: RouterProcess
    peers: dict[str, SamplePacs]
    studies: dict[str, SeedStudy]

    def stop(self) -> None:
        self.router.stop()
        for peer in self.peers.values():
            peer.stop()


def build_studies(seed_dir: Path, recipes: dict[str, StudyRecipe], names: Iterable[str]) -> dict[str, SeedStudy]:
    """Build the named studies from `recipes`; patient details are invented."""
    studies = {}
    for name in sorted(set(names)):
        recipe = recipes[name]
        studies[name] = build_study(
            seed_dir / name, patient_id=recipe.patient_id, patient_name=recipe.patient_name,
            accession_number=f"Q{name.upper()}"[:16], study_date=recipe.study_date,
            sources=(recipe.source,), instances_per_source=recipe.instances,
        )
    return studies


def start_quirk_region(
    work_dir: Path,
    recipes: dict[str, StudyRecipe],
    fake_peers: list[FakePeer],
    find_deadline: float = 10.0,
) -> QuirkRegion:
    """Start one SamplePacs per FakePeer and a router configured with each of them."""
    studies = build_studies(work_dir / "seed", recipes, (s for p in fake_peers for s in p.studies))
    router_port = free_port()
    peers: dict[str, SamplePacs] = {}
    entries = []
    try:
        for fake in fake_peers:
            files = [path for key in fake.studies for path in studies[key].files]
            pacs = SamplePacs(f"{fake.name.upper()}PACS"[:16], 0, files,
                              move_destinations={ROUTER_AE: ("127.0.0.1", router_port)}, options=fake.faults)
            pacs.start()
            peers[fake.name] = pacs
            entries.append(PeerEntry(fake.name, DicomNode(pacs.ae_title, pacs.port), find_deadline=find_deadline,
                                     extra={"dimse_timeout": 10.0, **fake.router_options}))
        router = RouterProcess(
            work_dir / "router", ae_title=ROUTER_AE, port=router_port, peers=entries,
            workstations=[WorkstationEntry(DicomNode(WORKSTATION_AE, free_port()))],
        )
        router.start()
    except BaseException:
        for pacs in peers.values():
            pacs.stop()
        raise
    return QuirkRegion(router, peers, studies)
