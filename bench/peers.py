"""Start real peers and yicrouter on free loopback ports for one measurement.

The peers are an Orthanc, a DCMTK dcmqrscp and two pynetdicom SamplePacs: one
without faults and one that waits before each C-FIND Pending response. Every
peer has the router and every workstation configured as Move Destinations, so the same
study can be moved through the router and directly.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping, Sequence, Union

import bench  # noqa: F401  (puts tests/ on sys.path for the harness imports)
from harness.dcmqrscp import DcmqrscpServer
from harness.orthanc import OrthancServer
from harness.ports import DicomNode, free_port
from harness.router import PeerEntry, RouterProcess, WorkstationEntry
from yicrouter.demo.samplepacs import FaultOptions, SamplePacs
from yicrouter.demo.seed import SeedStudy

ROUTER_AE = "YICROUTER"
# Calling AE title of the in-process pynetdicom client. The router has it
# configured as a workstation, and every peer accepts queries from it.
CLIENT_AE = "BENCHSCU"

PEER_NAMES = ("orthanc", "dcmqrscp", "pynetdicom")
SLOW_PEER_NAME = "pynetdicom-slow"

Server = Union[OrthancServer, DcmqrscpServer, SamplePacs]


@dataclass
class Peers:
    """Running peers keyed by name: the three of PEER_NAMES and SLOW_PEER_NAME."""

    servers: dict[str, Server]
    router_node: DicomNode
    client_node: DicomNode
    workstations: dict[str, DicomNode]

    def node(self, name: str) -> DicomNode:
        server = self.servers[name]
        if isinstance(server, SamplePacs):
            return DicomNode(server.ae_title, server.port)
        return server.node

    def entries(self, names: Sequence[str], find_deadline: float = 10.0) -> list[PeerEntry]:
        return [PeerEntry(name, self.node(name), find_deadline=find_deadline) for name in names]


def _known_nodes(router_node: DicomNode, client_node: DicomNode,
                 workstations: Mapping[str, DicomNode]) -> dict[str, DicomNode]:
    """Return every AE that a peer accepts, keyed by AE title."""
    return {node.ae_title: node for node in (router_node, client_node, *workstations.values())}


def _start_sample_pacs(ae_title: str, files: list[Path], known: dict[str, DicomNode],
                       find_delay: float) -> SamplePacs:
    pacs = SamplePacs(ae_title, free_port(), files,
                      move_destinations={title: (node.host, node.port) for title, node in known.items()},
                      options=FaultOptions(find_delay=find_delay))
    pacs.start()
    return pacs


@contextmanager
def running_peers(
    work_dir: Path,
    holdings: Mapping[str, Sequence[SeedStudy]],
    *,
    workstations: Mapping[str, DicomNode] | None = None,
    slow_find_delay: float = 2.0,
) -> Iterator[Peers]:
    """Start and seed the peers, yield them, and stop them all afterwards.

    `holdings` maps a peer name to the studies it stores. Without an entry of
    its own, the slow peer stores the same studies as the pynetdicom peer.
    """
    router_node = DicomNode(ROUTER_AE, free_port())
    client_node = DicomNode(CLIENT_AE, free_port())
    workstations = dict(workstations or {})
    known = _known_nodes(router_node, client_node, workstations)
    orthanc = OrthancServer("BENCH", "ORTHANCPACS", work_dir / "orthanc", modalities=known, verbose=False)
    dcmqrscp = DcmqrscpServer("BENCH", "DCMQRSCPPACS", work_dir / "dcmqrscp", move_destinations=known)

    def files(name: str) -> list[Path]:
        return [path for study in holdings.get(name, ()) for path in study.files]

    with ExitStack() as stack:
        for process in (orthanc, dcmqrscp):
            process.start_process()
            stack.callback(process.stop)
        orthanc.wait_until_ready()
        dcmqrscp.wait_until_ready()
        fast = _start_sample_pacs("PYNETPACS", files("pynetdicom"), known, 0.0)
        stack.callback(fast.stop)
        slow_files = files(SLOW_PEER_NAME) if SLOW_PEER_NAME in holdings else files("pynetdicom")
        slow = _start_sample_pacs("SLOWPACS", slow_files, known, slow_find_delay)
        stack.callback(slow.stop)
        orthanc.seed(files("orthanc"))
        if files("dcmqrscp"):
            dcmqrscp.seed(files("dcmqrscp"))
        servers: dict[str, Server] = {"orthanc": orthanc, "dcmqrscp": dcmqrscp,
                                      "pynetdicom": fast, SLOW_PEER_NAME: slow}
        yield Peers(servers, router_node, client_node, workstations)
        # Orthanc 1.10.1 takes seconds to shut down, so the slow stops overlap.
        with ThreadPoolExecutor(max_workers=2) as pool:
            list(pool.map(lambda process: process.stop(), (orthanc, dcmqrscp)))


def dead_peer_entry() -> PeerEntry:
    """Return a peer whose port has no listener, so every connection is refused."""
    return PeerEntry("dead", DicomNode("DEADPACS", free_port()), find_deadline=10.0)


@contextmanager
def running_router(work_dir: Path, peers: Peers, entries: Sequence[PeerEntry]) -> Iterator[RouterProcess]:
    """Start yicrouter on the reserved router port with the given peers.

    The router logs at INFO, as in production, because DEBUG logging costs
    time on every message.
    """
    workstation_nodes = [peers.client_node, *peers.workstations.values()]
    router = RouterProcess(
        work_dir,
        ae_title=ROUTER_AE,
        port=peers.router_node.port,
        peers=entries,
        workstations=[WorkstationEntry(node) for node in workstation_nodes],
        log_level="info",
        echo_calling_ae=CLIENT_AE,
    )
    router.start()
    try:
        yield router
    finally:
        router.stop()
