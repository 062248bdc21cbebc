"""Requests that no peer can serve: every peer is down, or the requester can take no instance.

The peers are dcmqrscp archives. One is killed before the query, and one is
stopped with SIGSTOP, so that it accepts the TCP connection but never responds
and misses its find_deadline.
"""

from __future__ import annotations

import re
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness.dcmqrscp import DcmqrscpServer
from harness.dcmtk import run_findscu
from harness.ports import DicomNode, free_port
from harness.retrieve_scu import run_get, study_identifier
from harness.router import PeerEntry, RouterProcess, WorkstationEntry
from yicrouter import status
from yicrouter.demo.seed import SeedStudy, build_study

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

ROUTER_AE = "YICROUTER"
FIND_DEADLINE = 1.5
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
STUDY_KEYS: dict[str, str | None] = {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": None, "PatientID": None}


@dataclass
class Peers:
    """A live archive with one study, a killed one and a stopped (SIGSTOP) one."""

    live: DcmqrscpServer
    killed: DcmqrscpServer
    frozen: DcmqrscpServer
    study: SeedStudy
    router_node: DicomNode
    workstation: DicomNode

    def entry(self, name: str) -> PeerEntry:
        server = {"live": self.live, "killed": self.killed, "frozen": self.frozen}[name]
        return PeerEntry(name, server.node, find_deadline=FIND_DEADLINE)


def _searches_seen(server: DcmqrscpServer, service: str) -> int:
    """Count the "Find", "Move" or "Get" requests in a dcmqrscp log (written with -v)."""
    return server.log_text().count(f"Received {service} SCP")


@pytest.fixture(scope="module")
def peers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Peers]:
    work_dir = tmp_path_factory.mktemp("no-peers")
    router_node = DicomNode(ROUTER_AE, free_port())
    workstation = DicomNode("WS1", free_port())
    study = build_study(work_dir / "seed", patient_id="NOPEER-1", patient_name="Nopeer^Ada",
                        accession_number="NP0001", sources=("CT_small.dcm",), instances_per_source=3)
    servers = {
        name: DcmqrscpServer(name, f"{name.upper()}PACS", work_dir / name,
                             move_destinations={"router": router_node})
        for name in ("live", "killed", "frozen")
    }
    try:
        for server in servers.values():
            server.start()
        servers["live"].seed(study.files)
        killed = servers["killed"].process
        assert killed is not None
        killed.send_signal(signal.SIGKILL)
        killed.wait(timeout=10.0)
        frozen = servers["frozen"].process
        assert frozen is not None
        frozen.send_signal(signal.SIGSTOP)
        yield Peers(servers["live"], servers["killed"], servers["frozen"], study, router_node, workstation)
    finally:
        frozen_process = servers["frozen"].process
        if frozen_process is not None and frozen_process.is_running():
            frozen_process.send_signal(signal.SIGCONT)
        for server in servers.values():
            server.stop()


@pytest.fixture
def start_router(peers: Peers, tmp_path: Path) -> Iterator[Callable[..., RouterProcess]]:
    """Factory: a router on the reserved port, configured with the named peers."""
    started: list[RouterProcess] = []

    def start(*names: str) -> RouterProcess:
        router = RouterProcess(tmp_path / f"router-{len(started)}", ae_title=ROUTER_AE,
                               port=peers.router_node.port, peers=[peers.entry(name) for name in names],
                               workstations=[WorkstationEntry(peers.workstation)])
        started.append(router)
        return router.start()

    yield start
    for router in started:
        router.stop()


# --- C-FIND when peers are down ----------------------------------------------------


def test_find_every_peer_down_fails(peers: Peers, start_router: Callable[..., RouterProcess]) -> None:
    router = start_router("killed", "frozen")

    result = run_findscu(router.node, STUDY_KEYS, calling_ae="WS1")

    assert result.final_status == status.FIND_UNABLE_TO_PROCESS, result.describe()
    assert result.datasets == []
    assert "no peer could be searched" in result.output, result.describe()
    line = router.wait_for_log(r"[^\n]*find_completed[^\n]*").group(0)
    assert "[warning" in line
    assert "failed_peers=['frozen', 'killed']" in line
    assert "reason='no peer could be searched'" in line


def test_find_some_peers_down_succeeds(peers: Peers, start_router: Callable[..., RouterProcess]) -> None:
    router = start_router("live", "killed", "frozen")

    result = run_findscu(router.node, STUDY_KEYS, calling_ae="WS1")

    assert result.final_status == status.SUCCESS, result.describe()
    assert [str(ds.StudyInstanceUID) for ds in result.datasets] == [peers.study.study_uid]
    line = router.wait_for_log(r"[^\n]*find_completed[^\n]*").group(0)
    assert "failed_peers=['frozen', 'killed']" in line
    assert "reason=None" in line


# --- C-GET that the requester can take nothing of ------------------------------------


@pytest.mark.parametrize("without_role", [[], [CT_IMAGE_STORAGE]], ids=["no-storage-context", "no-scp-role"])
def test_get_without_any_scp_role_skips_peer(
    peers: Peers, start_router: Callable[..., RouterProcess], without_role: list[str]
) -> None:
    router = start_router("live")
    seen = {service: _searches_seen(peers.live, service) for service in ("Find", "Move", "Get")}

    run = run_get(router.node, "WS1", study_identifier(peers.study.study_uid), scp_role_for=[],
                  without_role=without_role)

    final = run.final
    assert final.code == status.GET_OUT_OF_RESOURCES_SUBOPERATIONS
    assert "SCP role" in str(final.status.get("ErrorComment", ""))
    assert run.stored == []
    router.wait_for_log(r"get_rejected")
    assert len(re.findall(r"get_rejected", router.log_text())) == 1
    for service, before in seen.items():
        assert _searches_seen(peers.live, service) == before, f"the peer got a {service} request"
