"""The `yicrouter` command as a process: start-up faults, stop on SIGTERM, the demo's folder.

Every router and demo here runs as a subprocess on loopback ports. The start-up
fault tests check that each fault ends in one error line on stderr, a
`router_start_failed` event and exit status 1, without a Python traceback.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelMove  # type: ignore[attr-defined]

from harness import LoggedProcess
from harness.dcmtk import StoreSCP
from harness.ports import LOOPBACK, DicomNode, free_port
from harness.router import PeerEntry, RouterProcess, WorkstationEntry, render_router_config
from harness.waiting import wait_for
from yicrouter import status
from yicrouter.demo.samplepacs import FaultOptions, SamplePacs
from yicrouter.demo.seed import build_study

pytestmark = pytest.mark.timeout(120)

ROUTER_AE = "YICROUTER"
# An address from TEST-NET-1 (RFC 5737), which no machine is given, so binding it fails.
NON_LOCAL_ADDRESS = "192.0.2.1"
# Seconds after SIGTERM within which a router with a frozen peer must have exited:
# the router's 5 s wait for running moves plus time to spare.
STOP_DEADLINE = 10.0


# --- start-up faults ----------------------------------------------------------------


@dataclass(frozen=True)
class StartupFault:
    """A [router] table that keeps the router from starting, and what the error must name."""

    key: str
    value: object
    bind: str = LOOPBACK
    port: int | None = None
    state_dir: Path | None = None


def _run_serve(config_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "yicrouter", "serve", "--config", str(config_path)],
        cwd=config_path.parent,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def _write_config(work_dir: Path, fault: StartupFault) -> Path:
    config_path = work_dir / "yicrouter.toml"
    text = render_router_config(
        ae_title=ROUTER_AE,
        port=fault.port if fault.port is not None else free_port(),
        state_dir=fault.state_dir if fault.state_dir is not None else work_dir / "state",
        bind=fault.bind,
        log_level="info",
    )
    config_path.write_text(text, encoding="utf-8")
    return config_path


def _assert_start_failed(result: subprocess.CompletedProcess[str], config_path: Path, fault: StartupFault) -> None:
    lines = result.stderr.splitlines()
    expected_start = f"yicrouter: not starting: {config_path}: {fault.key} = {fault.value!r}: "
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert lines, "nothing on stderr"
    assert lines[0].startswith(expected_start), result.stderr
    assert "router_start_failed" in result.stderr, result.stderr
    assert "router_started" not in result.stderr, result.stderr


def test_serve_state_dir_under_file(tmp_path: Path) -> None:
    blocking_file = tmp_path / "not-a-folder"
    blocking_file.write_text("", encoding="utf-8")
    state_dir = blocking_file / "state"
    fault = StartupFault("router.state_dir", str(state_dir), state_dir=state_dir)
    config_path = _write_config(tmp_path, fault)

    result = _run_serve(config_path)

    _assert_start_failed(result, config_path, fault)
    assert f"because {blocking_file} is a file" in result.stderr


def test_serve_state_dir_in_proc(tmp_path: Path) -> None:
    # The kernel lets no user, root included, create a folder in /proc.
    state_dir = Path("/proc/yicrouter-test-state")
    fault = StartupFault("router.state_dir", str(state_dir), state_dir=state_dir)
    config_path = _write_config(tmp_path, fault)

    result = _run_serve(config_path)

    _assert_start_failed(result, config_path, fault)


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write to read-only folders")
def test_serve_state_dir_read_only(tmp_path: Path) -> None:
    state_dir = tmp_path / "read-only"
    (state_dir / "spool" / "incoming").mkdir(parents=True)
    for folder in (state_dir / "spool" / "incoming", state_dir / "spool", state_dir):
        folder.chmod(0o555)
    fault = StartupFault("router.state_dir", str(state_dir), state_dir=state_dir)
    config_path = _write_config(tmp_path, fault)
    try:
        result = _run_serve(config_path)
    finally:
        for folder in (state_dir, state_dir / "spool", state_dir / "spool" / "incoming"):
            folder.chmod(0o755)

    _assert_start_failed(result, config_path, fault)


def test_serve_port_in_use(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind((LOOPBACK, 0))
        listener.listen()
        port = int(listener.getsockname()[1])
        fault = StartupFault("router.port", port, port=port)
        config_path = _write_config(tmp_path, fault)

        result = _run_serve(config_path)

    _assert_start_failed(result, config_path, fault)
    assert "already in use" in result.stderr


def test_serve_second_router_same_state_dir(tmp_path: Path) -> None:
    state_dir = tmp_path / "shared-state"
    first = RouterProcess(tmp_path / "first", ae_title=ROUTER_AE, extra_router={"state_dir": str(state_dir)},
                          workstations=[WorkstationEntry(DicomNode("WS1", free_port()))])
    first.start()
    try:
        fault = StartupFault("router.state_dir", str(state_dir), state_dir=state_dir)
        config_path = _write_config(tmp_path, fault)

        result = _run_serve(config_path)

        _assert_start_failed(result, config_path, fault)
        assert "another yicrouter" in result.stderr
        assert first.is_running()
    finally:
        assert first.stop() == 0


def test_serve_non_local_bind(tmp_path: Path) -> None:
    fault = StartupFault("router.bind", NON_LOCAL_ADDRESS, bind=NON_LOCAL_ADDRESS)
    config_path = _write_config(tmp_path, fault)

    result = _run_serve(config_path)

    _assert_start_failed(result, config_path, fault)
    assert "not an address of this machine" in result.stderr


# --- SIGTERM while a peer is frozen ---------------------------------------------------


class BackgroundMove:
    """A C-MOVE from WS1 through the router, sent in a thread.

    `first_response` is set when the router sends its first response, which
    for a silent peer is the Pending response that it sends after 5 s of
    silence. By then the router's C-MOVE at the peer is running.
    """

    def __init__(self, router: RouterProcess, study_uid: str) -> None:
        self.first_response = threading.Event()
        self.statuses: list[int] = []
        self.errors: list[BaseException] = []
        self._router = router
        self._study_uid = study_uid
        self._thread = threading.Thread(target=self._run, name="test-move", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def _run(self) -> None:
        ae = AE(ae_title="WS1")
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
        try:
            assoc = ae.associate(LOOPBACK, self._router.port, ae_title=ROUTER_AE)
            if not assoc.is_established:
                raise RuntimeError(f"association with the router on port {self._router.port} failed")
            identifier = Dataset()
            identifier.QueryRetrieveLevel = "STUDY"
            identifier.StudyInstanceUID = self._study_uid
            for response, _ in assoc.send_c_move(identifier, "WS1", StudyRootQueryRetrieveInformationModelMove):
                if "Status" in response:
                    self.statuses.append(int(response.Status))
                    self.first_response.set()
            assoc.release()
        except Exception as exc:  # reported by the test
            self.errors.append(exc)
        finally:
            ae.shutdown()


@pytest.fixture
def frozen_peer(tmp_path: Path) -> Iterator[tuple[SamplePacs, str, int]]:
    """Start a peer that waits 60 s before each C-STORE sub-operation.

    Yields the peer, the Study Instance UID of its one study, and the router
    port in its Move Destination entry.
    """
    study = build_study(tmp_path / "seed", patient_id="FROZEN-1", patient_name="Frozen^Fay",
                        accession_number="FROZEN1", sources=("CT_small.dcm",))
    router_port = free_port()
    peer = SamplePacs("FROZENPACS", free_port(), study.files,
                      move_destinations={ROUTER_AE: (LOOPBACK, router_port)},
                      options=FaultOptions(store_delay=60.0))
    peer.start()
    try:
        yield peer, study.study_uid, router_port
    finally:
        peer.stop()


def test_sigterm_with_frozen_peer_exits_fast(tmp_path: Path, frozen_peer: tuple[SamplePacs, str, int]) -> None:
    peer, study_uid, router_port = frozen_peer
    router = RouterProcess(
        tmp_path / "router", ae_title=ROUTER_AE, port=router_port,
        peers=[PeerEntry("frozen", DicomNode(peer.ae_title, peer.port))],
        workstations=[WorkstationEntry(DicomNode("WS1", free_port()))],
    )  # fmt: skip
    router.start()
    move = BackgroundMove(router, study_uid)
    try:
        move.start()
        assert move.first_response.wait(20.0), f"no C-MOVE response: {move.errors}\n{router.log_text()[-3000:]}"
        assert move.statuses[0] == status.PENDING
        assert router.process is not None

        router.process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        try:
            exit_status = router.process.wait(timeout=STOP_DEADLINE)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the router still ran {STOP_DEADLINE} s after SIGTERM:\n{router.log_text()[-3000:]}")
        elapsed = time.monotonic() - signalled
    finally:
        router.stop()
        move.join(10.0)

    assert exit_status == 0, router.log_text()[-3000:]
    assert elapsed < STOP_DEADLINE
    assert "router_stopped" in router.log_text()
    assert "router_stop_forced" in router.log_text()
    assert "running_moves=1" in router.log_text()
    assert move.statuses[-1] == status.MOVE_UNABLE_TO_PROCESS, move.statuses
    assert "the router is shutting down" in router.log_text()


def test_sigterm_lets_running_move_finish(tmp_path: Path) -> None:
    study = build_study(tmp_path / "seed", patient_id="SLOW-1", patient_name="Slow^Sam",
                        accession_number="SLOW1", sources=("CT_small.dcm",), instances_per_source=4)
    router_port = free_port()
    peer = SamplePacs("SLOWPACS", free_port(), study.files, move_destinations={ROUTER_AE: (LOOPBACK, router_port)},
                      options=FaultOptions(store_delay=0.5))
    destination = StoreSCP("WS1", tmp_path / "ws1", port=free_port())
    router = RouterProcess(
        tmp_path / "router", ae_title=ROUTER_AE, port=router_port,
        peers=[PeerEntry("slow", DicomNode(peer.ae_title, peer.port))],
        workstations=[WorkstationEntry(DicomNode("WS1", destination.port))],
    )  # fmt: skip
    peer.start()
    destination.start()
    router.start()
    move = BackgroundMove(router, study.study_uid)
    try:
        move.start()
        destination.wait_for_files(1, timeout=20.0)
        assert router.process is not None
        router.process.send_signal(signal.SIGTERM)
        exit_status = router.process.wait(timeout=STOP_DEADLINE)
        move.join(10.0)
    finally:
        router.stop()
        destination.stop()
        peer.stop()

    assert exit_status == 0, router.log_text()[-3000:]
    assert move.statuses[-1] == status.SUCCESS, move.statuses
    assert len(destination.received()) == len(study.files)
    assert "router_stop_forced" not in router.log_text()


# --- the demo's state folder ----------------------------------------------------------


def _demo_process(tmp_path: Path, port: int, *options: str) -> LoggedProcess:
    """Build an unstarted `yicrouter demo` process whose temporary folders go to tmp_path/tmp."""
    temporary_root = tmp_path / "tmp"
    temporary_root.mkdir(exist_ok=True)
    args = [sys.executable, "-m", "yicrouter", "demo", "--port", str(port),
            "--workstation-port", str(free_port()), *options]
    environment = dict(os.environ, TMPDIR=str(temporary_root), PYTHONUNBUFFERED="1")
    return LoggedProcess("yicrouter demo", args, tmp_path / "demo.log", cwd=tmp_path, env=environment)


def _demo_folders(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "tmp").glob("yicrouter-demo-*"))


def test_demo_removes_its_folder_on_stop(tmp_path: Path) -> None:
    process = _demo_process(tmp_path, free_port())
    process.start()
    try:
        wait_for(lambda: "Press Ctrl-C to stop." in process.log_text(), timeout=30.0,
                 message=lambda: f"the demo did not start:\n{process.log_tail()}")
        assert len(_demo_folders(tmp_path)) == 1

        process.send_signal(signal.SIGINT)
        exit_status = process.wait(timeout=15.0)
    finally:
        process.stop()

    assert exit_status == 0, process.log_tail()
    assert _demo_folders(tmp_path) == []


def test_demo_removes_its_folder_on_failure(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind((LOOPBACK, 0))
        listener.listen()
        process = _demo_process(tmp_path, int(listener.getsockname()[1]))
        process.start()
        try:
            exit_status = process.wait(timeout=30.0)
        finally:
            process.stop()

    assert exit_status == 1, process.log_tail()
    assert "Choose another port with --port." in process.log_text()
    assert "Traceback" not in process.log_text()
    assert _demo_folders(tmp_path) == []


def test_demo_keeps_given_state_dir(tmp_path: Path) -> None:
    state_dir = tmp_path / "demo-state"
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind((LOOPBACK, 0))
        listener.listen()
        process = _demo_process(tmp_path, int(listener.getsockname()[1]), "--state-dir", str(state_dir))
        process.start()
        try:
            exit_status = process.wait(timeout=30.0)
        finally:
            process.stop()

    assert exit_status == 1, process.log_tail()
    assert sorted((state_dir / "seed").rglob("*.dcm")), f"the demo removed {state_dir}"
