"""PATIENT-level C-MOVE: the router queries every peer afresh and never trusts the routing table.

Patient IDs are unique only within one trust. Peer "dqr" (dcmqrscp) holds
patient PMU from the start. During a test, peer "orth" (Orthanc) gets a
different person with the same Patient ID by C-STORE from DCMTK storescu,
after the routing table has recorded "dqr" as the only holder.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness.dcmqrscp import DcmqrscpServer
from harness.dcmtk import StoreSCP, run_movescu, run_storescu
from harness.orthanc import OrthancServer
from harness.ports import DicomNode, free_port
from harness.router import PeerEntry, RouterProcess, WorkstationEntry
from yicrouter import status
from yicrouter.demo.seed import SeedStudy, build_study

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

ROUTER_AE = "YICROUTER"
LOADER_AE = "LOADER"
PATIENT_KEYS: dict[str, str | None] = {"QueryRetrieveLevel": "PATIENT", "PatientID": "PMU"}


@dataclass
class Region:
    dqr: DcmqrscpServer
    orth: OrthancServer
    # A dcmqrscp archive that was killed before any test ran.
    gone: DcmqrscpServer
    dqr_study: SeedStudy
    # Another person with Patient ID PMU, stored at "orth" by the test that needs it.
    other_person: SeedStudy
    router_node: DicomNode
    workstation: DicomNode

    def entry(self, name: str) -> PeerEntry:
        server = {"dqr": self.dqr, "orth": self.orth, "gone": self.gone}[name]
        return PeerEntry(name, server.node, find_deadline=5.0)


@pytest.fixture(scope="module")
def region(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Region]:
    work_dir = tmp_path_factory.mktemp("locate-fresh")
    router_node = DicomNode(ROUTER_AE, free_port())
    workstation = DicomNode("WS1", free_port())
    dqr_study = build_study(work_dir / "seed-dqr", patient_id="PMU", patient_name="Mueller^Anna",
                            accession_number="PMU0001", sources=("CT_small.dcm",), instances_per_source=2)
    other_person = build_study(work_dir / "seed-orth", patient_id="PMU", patient_name="Morgan^Paul",
                               accession_number="PMU0002", sources=("MR_small.dcm",), instances_per_source=1)
    unrelated = build_study(work_dir / "seed-unrelated", patient_id="ORTH-1", patient_name="Other^Olga",
                            accession_number="ORT0001", sources=("CT_small.dcm",), instances_per_source=1)
    dqr = DcmqrscpServer("dqr", "DQRPACS", work_dir / "dqr", move_destinations={"router": router_node})
    gone = DcmqrscpServer("gone", "GONEPACS", work_dir / "gone", move_destinations={"router": router_node})
    orth = OrthancServer("orth", "ORTHPACS", work_dir / "orth",
                         modalities={"router": router_node, "loader": DicomNode(LOADER_AE, free_port())})
    servers: list[DcmqrscpServer | OrthancServer] = [dqr, gone, orth]
    try:
        for server in servers:
            server.start()
        dqr.seed(dqr_study.files)
        orth.seed(unrelated.files)
        assert gone.process is not None
        gone.process.send_signal(signal.SIGKILL)
        gone.process.wait(timeout=10.0)
        yield Region(dqr, orth, gone, dqr_study, other_person, router_node, workstation)
    finally:
        for server in servers:
            server.stop()


@pytest.fixture
def start_router(region: Region, tmp_path: Path) -> Iterator[Callable[..., RouterProcess]]:
    """Factory: a router on the port that the peers know, with an empty routing table."""
    started: list[RouterProcess] = []

    def start(*names: str) -> RouterProcess:
        router = RouterProcess(tmp_path / f"router-{len(started)}", ae_title=ROUTER_AE,
                               port=region.router_node.port, peers=[region.entry(name) for name in names],
                               workstations=[WorkstationEntry(region.workstation)])
        started.append(router)
        return router.start()

    yield start
    for router in started:
        router.stop()


@pytest.fixture
def ws1(region: Region, tmp_path: Path) -> Iterator[StoreSCP]:
    scp = StoreSCP("WS1", tmp_path / "ws1", port=region.workstation.port)
    try:
        yield scp.start()
    finally:
        scp.stop()


def _move_patient(router: RouterProcess) -> int | None:
    result = run_movescu(router.node, "WS1", PATIENT_KEYS, model="patient", calling_ae="WS1", timeout=60.0)
    return result.final_status


def test_patient_move_sees_new_holder(
    region: Region, start_router: Callable[..., RouterProcess], ws1: StoreSCP
) -> None:
    router = start_router("dqr", "orth")
    assert _move_patient(router) == status.SUCCESS
    assert len(ws1.received()) == len(region.dqr_study.files)

    # The routing table now records "dqr" as the only holder of PMU.
    run_storescu(region.orth.node, region.other_person.files, calling_ae=LOADER_AE)
    finds_before = region.orth.log_text().count("Incoming Find request")

    assert _move_patient(router) == status.MOVE_UNABLE_TO_PROCESS
    assert len(ws1.received()) == len(region.dqr_study.files), "another move reached the Move Destination"
    assert region.orth.log_text().count("Incoming Find request") > finds_before, "orth was not asked afresh"
    router.wait_for_log(r"move_rejected[^\n]*several trusts")


def test_patient_move_refused_when_peer_unsearchable(
    region: Region, start_router: Callable[..., RouterProcess], ws1: StoreSCP
) -> None:
    router = start_router("dqr", "gone")
    moves_before = region.dqr.log_text().count("Received Move SCP")

    assert _move_patient(router) == status.MOVE_UNABLE_TO_PROCESS
    assert ws1.received() == []
    assert region.dqr.log_text().count("Received Move SCP") == moves_before, "dqr was asked to move"
    router.wait_for_log(r"move_rejected[^\n]*could not be searched: gone")


def test_study_move_ignores_unsearchable_peer(
    region: Region, start_router: Callable[..., RouterProcess], ws1: StoreSCP
) -> None:
    # A Study Instance UID is unique everywhere, so only PATIENT-level
    # retrieves need every peer searched.
    router = start_router("dqr", "gone")
    keys = {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": region.dqr_study.study_uid}

    result = run_movescu(router.node, "WS1", keys, calling_ae="WS1", timeout=60.0)

    assert result.final_status == status.SUCCESS, result.describe()
    assert len(ws1.received()) == len(region.dqr_study.files)
