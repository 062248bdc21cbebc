"""`yicrouter demo`: the router and two sample peer PACS on loopback.

Everything runs in this one process and needs nothing but yicrouter's own
dependencies. The peers are seeded from DICOM files that pydicom ships, and
one study is held at both, so a query shows de-duplication at work. Without
--state-dir, the seed files and the router's state go to a temporary folder
that is removed when the demo ends.
"""

from __future__ import annotations

import signal
import socket
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType

from yicrouter.config import Config, PeerSettings, RouterSettings, WorkstationSettings
from yicrouter.daemon import Router
from yicrouter.startup_errors import RouterStartError
from yicrouter.demo.samplepacs import SamplePacs
from yicrouter.demo.seed import SeedStudy, build_study
from yicrouter.logs import configure_logging

ROUTER_AE_TITLE = "YICROUTER"
WORKSTATION_AE_TITLE = "DEMOWS"
LOOPBACK = "127.0.0.1"

# Seconds between checks of the stop flag that the signal handlers set.
_STOP_POLL_INTERVAL = 0.2

# Fixes for a router that can't start, by the [router] key that failed. The
# demo sets these keys from its command-line options, so the fixes name those.
_DEMO_FIXES = {
    "router.port": "Choose another port with --port",
    "router.bind": "Choose another port with --port",
    "router.state_dir": "Choose another folder with --state-dir",
}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LOOPBACK, 0))
        return int(probe.getsockname()[1])


def seed_region(seed_dir: Path) -> dict[str, list[SeedStudy]]:
    """Write the demo studies and return them by peer name."""
    shared = build_study(seed_dir / "shared", patient_id="DEMO-003", patient_name="Shared^Sam",
                         accession_number="DEMOACC3", study_date="20240301",
                         sources=("CT_small.dcm",), instances_per_source=2)
    north = build_study(seed_dir / "north", patient_id="DEMO-001", patient_name="North^Nora",
                        accession_number="DEMOACC1", study_date="20240110",
                        sources=("CT_small.dcm", "SC_rgb_jpeg_dcmtk.dcm"), instances_per_source=3)
    south = build_study(seed_dir / "south", patient_id="DEMO-002", patient_name="South^Sid",
                        accession_number="DEMOACC2", study_date="20240220",
                        sources=("MR_small.dcm",), instances_per_source=4)
    return {"north": [north, shared], "south": [south, shared]}


def demo_config(port: int, state_dir: Path, peer_ports: dict[str, int], workstation_port: int) -> Config:
    peers = tuple(
        PeerSettings(name=name, ae_title=f"{name.upper()}PACS", host=LOOPBACK, port=peer_port,
                     find_deadline=5.0)
        for name, peer_port in peer_ports.items()
    )
    workstation = WorkstationSettings(ae_title=WORKSTATION_AE_TITLE, host=LOOPBACK, port=workstation_port)
    router = RouterSettings(ae_title=ROUTER_AE_TITLE, bind=LOOPBACK, port=port, state_dir=state_dir)
    return Config(router=router, peers=peers, workstations=(workstation,))


def _instructions(port: int, workstation_port: int, studies: dict[str, list[SeedStudy]]) -> str:
    study_uid = studies["north"][0].study_uid
    common = f"-aet {WORKSTATION_AE_TITLE} -aec {ROUTER_AE_TITLE}"
    python = sys.executable
    return f"""
yicrouter demo region is running.
  router      {ROUTER_AE_TITLE} at {LOOPBACK}:{port}
  peers       NORTHPACS (2 studies) and SOUTHPACS (2 studies); one study is held at both
  workstation {WORKSTATION_AE_TITLE} at {LOOPBACK}:{workstation_port} (the allowed caller and Move Destination)

Query every peer through the router (pynetdicom's apps, installed with yicrouter):
  {python} -m pynetdicom findscu {LOOPBACK} {port} {common} -S -k QueryRetrieveLevel=STUDY \\
      -k StudyInstanceUID= -k PatientName= -k StudyDate= -k ModalitiesInStudy=

Retrieve a study; movescu runs the Move Destination itself and writes to ./received:
  {python} -m pynetdicom movescu {LOOPBACK} {port} {common} -aem {WORKSTATION_AE_TITLE} \\
      --store --store-port {workstation_port} -od received -S \\
      -k QueryRetrieveLevel=STUDY -k StudyInstanceUID={study_uid}

Or retrieve it with C-GET, on the same association, as many viewers do:
  {python} -m pynetdicom getscu {LOOPBACK} {port} {common} -od received -S \\
      -k QueryRetrieveLevel=STUDY -k StudyInstanceUID={study_uid}

With DCMTK instead, first start a Move Destination that writes to ./received, in another terminal:
  mkdir -p received && /usr/bin/storescp -aet {WORKSTATION_AE_TITLE} -od received +xa {workstation_port}
  /usr/bin/findscu {common} -S -k QueryRetrieveLevel=STUDY -k StudyInstanceUID= -k PatientName= {LOOPBACK} {port}
  /usr/bin/movescu {common} -aem {WORKSTATION_AE_TITLE} -S -k QueryRetrieveLevel=STUDY \\
      -k StudyInstanceUID={study_uid} {LOOPBACK} {port}
  /usr/bin/getscu {common} -S -k QueryRetrieveLevel=STUDY -k StudyInstanceUID={study_uid} \\
      -od received {LOOPBACK} {port}

Press Ctrl-C to stop.
"""


def run_demo(port: int = 11112, state_dir: Path | None = None, workstation_port: int = 11113) -> int:
    """Run the demo region until SIGINT or SIGTERM; return the exit status.

    Without `state_dir`, the demo works in a new temporary folder and removes
    it on every exit path. A `state_dir` that the caller passed is kept.
    """
    configure_logging("info")
    if state_dir is not None:
        return _run_region(port, state_dir, workstation_port)
    with tempfile.TemporaryDirectory(prefix="yicrouter-demo-", ignore_cleanup_errors=True) as folder:
        return _run_region(port, Path(folder), workstation_port)


def _run_region(port: int, state_dir: Path, workstation_port: int) -> int:
    studies = seed_region(state_dir / "seed")
    router_address = (LOOPBACK, port)
    peers = {
        name: SamplePacs(
            f"{name.upper()}PACS", _free_port(),
            [path for study in held for path in study.files],
            move_destinations={ROUTER_AE_TITLE: router_address},
        )
        for name, held in studies.items()
    }
    try:
        for peer in peers.values():
            peer.start()
        config = demo_config(port, state_dir, {n: p.port for n, p in peers.items()}, workstation_port)
        router = Router(config)
        try:
            router.start()
        except RouterStartError as exc:
            fix = _DEMO_FIXES.get(exc.key, exc.fix)
            print(f"yicrouter demo: not starting: {exc.error}. {fix}.", file=sys.stderr)
            return 1
        print(_instructions(router.port, workstation_port, studies), flush=True)
        _wait_for_signal()
        router.stop()
        return 0
    finally:
        for peer in peers.values():
            peer.stop()


def _wait_for_signal() -> None:
    received: list[int] = []

    def request_stop(signum: int, frame: FrameType | None) -> None:
        received.append(signum)

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    while not received:
        time.sleep(_STOP_POLL_INTERVAL)
