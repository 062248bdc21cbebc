"""Session fixtures: a region of three partner-trust PACS on loopback ports.

NORTH and SOUTH are Orthanc instances, EAST is a DCMTK dcmqrscp archive. Each
stores two studies of its own, and NORTH and EAST both store one more study
with the same UIDs. Every port is reserved before any server starts, so each peer
knows the router and the workstations as Move Destinations and the router
configuration knows every peer.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence, Union

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset

from harness.dcmqrscp import DcmqrscpServer
from harness.dcmtk import StoreSCP
from harness.orthanc import OrthancServer
from harness.ports import DicomNode, free_port
from harness.router import PeerEntry, RouterProcess, WorkstationEntry
from yicrouter.demo.seed import SeedStudy, build_study

ROUTER_AE = "YICROUTER"
# Per-peer C-FIND deadline in the router configuration, in seconds.
FIND_DEADLINE = 5.0

Server = Union[OrthancServer, DcmqrscpServer]
# make_router(peers=None, workstations=None, **RouterProcess options) -> a started router
RouterFactory = Callable[..., RouterProcess]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "e2e: end-to-end test that sends DICOM traffic through a running yicrouter"
    )


@dataclass
class Trust:
    """One partner trust: its PACS and the studies seeded into it."""

    name: str
    server: Server
    studies: list[SeedStudy]

    @property
    def node(self) -> DicomNode:
        return self.server.node

    def peer_entry(self, find_deadline: float | None = FIND_DEADLINE) -> PeerEntry:
        return PeerEntry(self.name, self.node, find_deadline=find_deadline)

    def requests_seen(self, service: str) -> int:
        """Count the "Find", "Move" or "Get" requests in the server log so far.

        Tests compare the count before and after a request to prove that a
        request never reached this peer.
        """
        if service not in ("Find", "Move", "Get"):
            raise ValueError(f"service must be Find, Move or Get, got {service!r}")
        # Orthanc logs these lines with --verbose, dcmqrscp with -v.
        marker = (
            f"Incoming {service} request"
            if isinstance(self.server, OrthancServer)
            else f"Received {service} SCP"
        )
        return self.server.log_text().count(marker)


@dataclass
class Region:
    """The running peers, the seeded studies and the ports reserved for the router."""

    work_dir: Path
    router_node: DicomNode
    north: Trust
    south: Trust
    east: Trust
    # Stored at NORTH and EAST with the same UIDs. It is also in both trusts' `studies`.
    shared_study: SeedStudy
    # Workstation AE title to address, for example "WS1".
    workstations: dict[str, DicomNode]
    # Seconds from the start of the fixture until every peer was seeded.
    startup_seconds: float = 0.0
    _source_cache: dict[str, Dataset] = field(default_factory=dict, repr=False)

    @property
    def trusts(self) -> list[Trust]:
        return [self.north, self.south, self.east]

    @property
    def all_studies(self) -> list[SeedStudy]:
        """Every distinct study in the region, the shared one once."""
        unique: dict[str, SeedStudy] = {}
        for trust in self.trusts:
            for study in trust.studies:
                unique.setdefault(study.study_uid, study)
        return list(unique.values())

    def peer_entries(self, find_deadline: float | None = FIND_DEADLINE) -> list[PeerEntry]:
        return [trust.peer_entry(find_deadline) for trust in self.trusts]

    def workstation_entries(self) -> list[WorkstationEntry]:
        return [WorkstationEntry(node) for node in self.workstations.values()]

    def source_dataset(self, sop_instance_uid: str) -> Dataset:
        """Return the seeded file of an instance, read once and cached."""
        if not self._source_cache:
            for study in self.all_studies:
                for path in study.files:
                    dataset = dcmread(path)
                    self._source_cache[str(dataset.SOPInstanceUID)] = dataset
        return self._source_cache[sop_instance_uid]


def _build_studies(seed_dir: Path) -> dict[str, SeedStudy]:
    """Write the region's studies. Patient details are invented."""
    specs = {
        "north-1": ("NORTH-0001", "Nordmann^Kari", "NACC0001", "20240110", ("CT_small.dcm",), 3),
        # The JPEG Baseline series lets tests check that compressed pixel data
        # arrives byte-identical.
        "north-2": (
            "NORTH-0002", "Holm^Ingrid", "NACC0002", "20240212",
            ("SC_rgb_jpeg_dcmtk.dcm", "MR_small.dcm"), 2,
        ),
        "south-1": ("SOUTH-0001", "Sud^Pierre", "SACC0001", "20231105", ("MR_small.dcm",), 3),
        "south-2": (
            "SOUTH-0002", "Costa^Lucia", "SACC0002", "20240301",
            ("JPEG2000.dcm", "CT_small.dcm"), 2,
        ),
        # EAST is a dcmqrscp archive, which can move uncompressed instances only.
        "east-1": ("EAST-0001", "Ost^Jana", "EACC0001", "20230720", ("CT_small.dcm",), 2),
        "east-2": (
            "EAST-0002", "Wong^Mei", "EACC0002", "20240405", ("MR_small.dcm", "CT_small.dcm"), 2,
        ),
        "shared": (
            "SHARED-0001", "Common^Alex", "XACC0001", "20240115",
            ("CT_small.dcm", "MR_small.dcm"), 2,
        ),
    }  # fmt: skip
    studies = {}
    for key, (patient_id, patient_name, accession, study_date, sources, count) in specs.items():
        studies[key] = build_study(
            seed_dir / key,
            patient_id=patient_id,
            patient_name=patient_name,
            accession_number=accession,
            study_date=study_date,
            sources=sources,
            instances_per_source=count,
        )
    return studies


@pytest.fixture(scope="session")
def region(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Region]:
    """Start and seed NORTH, SOUTH and EAST, and stop them at the end of the session."""
    started = time.monotonic()
    work_dir = tmp_path_factory.mktemp("region")
    studies = _build_studies(work_dir / "seed")

    router_node = DicomNode(ROUTER_AE, free_port())
    workstations = {"WS1": DicomNode("WS1", free_port()), "WS2": DicomNode("WS2", free_port())}
    destinations = {
        "router": router_node,
        "ws1": workstations["WS1"],
        "ws2": workstations["WS2"],
    }

    north = OrthancServer("NORTH", "NORTHPACS", work_dir / "north", modalities=destinations)
    south = OrthancServer("SOUTH", "SOUTHPACS", work_dir / "south", modalities=destinations)
    east = DcmqrscpServer("EAST", "EASTPACS", work_dir / "east", move_destinations=destinations)
    servers: list[Server] = [north, south, east]
    try:
        for server in servers:
            server.start_process()
        for server in servers:
            server.wait_until_ready()

        north_studies = [studies["north-1"], studies["north-2"], studies["shared"]]
        south_studies = [studies["south-1"], studies["south-2"]]
        east_studies = [studies["east-1"], studies["east-2"], studies["shared"]]
        north.seed(path for study in north_studies for path in study.files)
        south.seed(path for study in south_studies for path in study.files)
        east.seed([path for study in east_studies for path in study.files])

        yield Region(
            work_dir=work_dir,
            router_node=router_node,
            north=Trust("north", north, north_studies),
            south=Trust("south", south, south_studies),
            east=Trust("east", east, east_studies),
            shared_study=studies["shared"],
            workstations=workstations,
            startup_seconds=time.monotonic() - started,
        )
    finally:
        # Orthanc 1.10.1 takes about 3.5 s to shut down cleanly, so the servers
        # stop in parallel.
        with ThreadPoolExecutor(max_workers=len(servers)) as pool:
            list(pool.map(lambda server: server.stop(), servers))


@pytest.fixture(scope="session")
def router(region: Region, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RouterProcess]:
    """The yicrouter that the peers know as a Move Destination, with every peer configured."""
    process = RouterProcess(
        tmp_path_factory.mktemp("router"),
        ae_title=ROUTER_AE,
        port=region.router_node.port,
        peers=region.peer_entries(),
        workstations=region.workstation_entries(),
    )
    try:
        process.start()
        yield process
    finally:
        exit_status = process.stop()
    assert exit_status == 0, f"the router exited with {exit_status}:\n{process.log_text()[-3000:]}"


@pytest.fixture
def make_router(
    region: Region, tmp_path: Path
) -> Iterator[RouterFactory]:
    """Factory for extra routers with their own configuration and a new port.

    The peers send C-MOVE sub-operations for the AE title YICROUTER to the port
    of the session `router`, so an extra router suits C-FIND tests only.
    Every router the factory started is stopped after the test.
    """
    started: list[RouterProcess] = []

    def start_router(
        peers: Sequence[PeerEntry] | None = None,
        workstations: Sequence[WorkstationEntry] | None = None,
        **options: object,
    ) -> RouterProcess:
        process = RouterProcess(
            tmp_path / f"router-{len(started) + 1}",
            ae_title=ROUTER_AE,
            peers=region.peer_entries() if peers is None else peers,
            workstations=region.workstation_entries() if workstations is None else workstations,
            **options,  # type: ignore[arg-type]
        )
        started.append(process)
        return process.start()

    yield start_router
    exit_statuses = [process.stop() for process in started]
    assert exit_statuses == [0] * len(started), f"extra routers exited with {exit_statuses}"


def _start_workstation(region: Region, ae_title: str, tmp_path: Path) -> Iterator[StoreSCP]:
    node = region.workstations[ae_title]
    scp = StoreSCP(ae_title, tmp_path / ae_title.lower(), port=node.port)
    try:
        yield scp.start()
    finally:
        scp.stop()


@pytest.fixture
def ws1(region: Region, tmp_path: Path) -> Iterator[StoreSCP]:
    """storescp with AE title WS1 on its reserved port, receiving into a fresh folder."""
    yield from _start_workstation(region, "WS1", tmp_path)


@pytest.fixture
def ws2(region: Region, tmp_path: Path) -> Iterator[StoreSCP]:
    """storescp with AE title WS2 on its reserved port, receiving into a fresh folder."""
    yield from _start_workstation(region, "WS2", tmp_path)
