"""C-MOVE and C-GET of one CT study through yicrouter against the direct path.

The destination is a DCMTK storescp (or getscu for C-GET). Each path moves the
same study from the same peer in the same run:

- direct: movescu sends the C-MOVE request to the peer, with storescp as the
  Move Destination. getscu retrieves the study from the peer with C-GET.
- router: movescu sends the same C-MOVE request to the router, and getscu
  sends its C-GET request to the router. The router retrieves the study from
  the peer and forwards each instance.

The peers and the destination run twice: with their default sockets and with
the environment variable TCP_NODELAY=1. DCMTK 3.6.7 as Debian ships it leaves
Nagle's algorithm on unless TCP_NODELAY=1 is set (checked with strace: only
then does it call setsockopt(TCP_NODELAY)). Orthanc 1.10.1 uses the same
libdcmnet for DICOM, so the variable applies to it too; its own "TcpNoDelay"
option configures only the HTTP server.

Time to the first instance is the modification time of the earliest file in
the destination folder, measured from the start of movescu or getscu.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import bench  # noqa: F401  (puts tests/ on sys.path for the harness imports)
from bench.context import BenchContext
from bench.data import build_ct_study
from bench.peers import Peers, running_peers, running_router
from bench.stats import Comparison, MeasurementResult, median
from harness import LoggedProcess
from harness.dcmtk import dcmtk_tool, echo_succeeds
from harness.dcmqrscp import DcmqrscpServer
from harness.orthanc import OrthancServer
from harness.ports import DicomNode, free_port
from harness.router import RouterProcess
from yicrouter.demo.seed import SeedStudy

DESTINATION_AE = "BENCHDEST"
# The two socket settings of the peers, the destination and the DCMTK SCUs.
SOCKET_MODES = ("default", "nodelay")
# Peers that take part in the relay measurement, by bench.peers name.
RELAY_PEERS = ("dcmqrscp", "orthanc")
# Instances of 512x512 16-bit CT in the relayed study.
FULL_CT_INSTANCES = 500
SMOKE_CT_INSTANCES = 10
# DIMSE timeout of movescu and getscu, in seconds.
RETRIEVE_TIMEOUT = 900.0

# Targets. The router's time over the direct time with TCP_NODELAY=1 peers:
# at least 0.8 x the direct throughput.
MAX_RATIO_NODELAY = 1 / 0.8
# Against default-socket peers, at least 5 x faster than the direct C-MOVE.
MAX_RATIO_DEFAULT = 1 / 5
# The first instance arrives at most 100 ms later than on the direct path.
MAX_FIRST_INSTANCE_DELAY = 0.1


class BenchError(RuntimeError):
    """Raised when a retrieve does not deliver the whole study."""


@dataclass
class DetailedResult(MeasurementResult):
    """A MeasurementResult with structured numbers for bench.plot."""

    data: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        document = super().to_json()
        document["data"] = self.data
        return document


@dataclass(frozen=True)
class RetrieveSample:
    """One timed retrieve: total seconds, seconds to the first instance, files received."""

    seconds: float
    first_instance_seconds: float
    files: int


def socket_environment(mode: str) -> dict[str, str]:
    """Return os.environ with TCP_NODELAY=1 for mode "nodelay", without it for "default"."""
    environment = dict(os.environ)
    environment.pop("TCP_NODELAY", None)
    if mode == "nodelay":
        environment["TCP_NODELAY"] = "1"
    elif mode != "default":
        raise ValueError(f"socket mode must be 'default' or 'nodelay', got {mode!r}")
    return environment


@contextmanager
def process_environment(environment: Mapping[str, str]) -> Iterator[None]:
    """Set os.environ for child processes whose harness class takes no env argument."""
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(environment)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def study_bytes(study: SeedStudy) -> int:
    return sum(path.stat().st_size for path in study.files)


class Destination:
    """A DCMTK storescp that writes every instance it receives into one folder.

    Unlike harness.dcmtk.StoreSCP it runs no command per file, because forking
    a shell per instance would dominate the time of small instances.
    """

    def __init__(self, work_dir: Path, ae_title: str = DESTINATION_AE, port: int | None = None) -> None:
        self.work_dir = work_dir
        self.output_dir = work_dir / "received"
        self.node = DicomNode(ae_title, port if port is not None else free_port())
        self.process: LoggedProcess | None = None

    def start(self, mode: str) -> None:
        """Start storescp with the sockets of `mode`, stopping a running one first."""
        self.stop()
        self.output_dir.mkdir(parents=True, exist_ok=True)
        args = [dcmtk_tool("storescp"), "-aet", self.node.ae_title, "-od", str(self.output_dir),
                "+xa", str(self.node.port)]
        self.process = LoggedProcess(f"storescp {self.node.ae_title}", args,
                                     self.work_dir / "storescp.log", env=socket_environment(mode))
        self.process.start()
        self.process.wait_until_ready(lambda: echo_succeeds(self.node), 10.0,
                                      f"storescp responds to C-ECHO on port {self.node.port}")

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
            self.process = None

    def clear(self) -> None:
        clear_folder(self.output_dir)


def clear_folder(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)


def first_arrival(folder: Path) -> float:
    """Return the earliest modification time (seconds since the epoch) of a file in `folder`."""
    times = [entry.stat().st_mtime for entry in os.scandir(folder) if entry.is_file()]
    if not times:
        raise BenchError(f"no file arrived in {folder}")
    return min(times)


def count_files(folder: Path) -> int:
    return sum(1 for entry in os.scandir(folder) if entry.is_file())


def _retrieve_keys(study: SeedStudy) -> list[str]:
    return ["-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study.study_uid}"]


def _network_args(calling_ae: str, called: DicomNode) -> list[str]:
    return ["-aet", calling_ae, "-aec", called.ae_title, "-to", "30", "-ta", "30",
            "-td", str(int(RETRIEVE_TIMEOUT))]


def movescu_args(called: DicomNode, calling_ae: str, destination_ae: str, study: SeedStudy) -> list[str]:
    return [dcmtk_tool("movescu"), "-S", *_network_args(calling_ae, called), "-aem", destination_ae,
            *_retrieve_keys(study), called.host, str(called.port)]


def getscu_args(called: DicomNode, calling_ae: str, output_dir: Path, study: SeedStudy) -> list[str]:
    return [dcmtk_tool("getscu"), "-S", *_network_args(calling_ae, called), "-od", str(output_dir),
            *_retrieve_keys(study), called.host, str(called.port)]


def timed_retrieve(args: Sequence[str], mode: str, output_dir: Path, expected: int) -> RetrieveSample:
    """Run movescu or getscu, and return its time and the time to the first instance.

    Raises BenchError unless `expected` files are in `output_dir` afterwards.
    """
    clear_folder(output_dir)
    started_wall = time.time()
    started = time.perf_counter()
    completed = subprocess.run(list(args), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, env=socket_environment(mode),
                               timeout=RETRIEVE_TIMEOUT + 30.0, check=False)
    seconds = time.perf_counter() - started
    received = count_files(output_dir)
    if received != expected:
        output = completed.stdout.decode("utf-8", errors="replace")[-3000:]
        raise BenchError(f"{Path(args[0]).name} delivered {received} of {expected} instances "
                         f"(exit status {completed.returncode}):\n{output}")
    return RetrieveSample(seconds, first_arrival(output_dir) - started_wall, received)


def restart_peer(peers: Peers, name: str, mode: str) -> None:
    """Restart one dcmqrscp or Orthanc peer with the sockets of `mode`.

    Both keep their storage across restarts, so the seeded study stays.
    """
    server = peers.servers[name]
    if not isinstance(server, (OrthancServer, DcmqrscpServer)):
        raise ValueError(f"peer {name} cannot be restarted with another environment")
    server.stop()
    with process_environment(socket_environment(mode)):
        server.start_process()
    server.wait_until_ready()


@dataclass
class PathSamples:
    """Samples of one retrieve path."""

    seconds: list[float] = field(default_factory=list)
    first_instance: list[float] = field(default_factory=list)

    def add(self, sample: RetrieveSample) -> None:
        self.seconds.append(sample.seconds)
        self.first_instance.append(sample.first_instance_seconds)


def measure_move(peers: Peers, router: RouterProcess, destination: Destination, peer_name: str,
                 study: SeedStudy, mode: str, repeat: int) -> tuple[PathSamples, PathSamples]:
    """Time C-MOVE of `study` to `destination`, direct from the peer and through the router."""
    direct, relayed = PathSamples(), PathSamples()
    expected = len(study.files)
    calling_ae = destination.node.ae_title
    direct_args = movescu_args(peers.node(peer_name), calling_ae, calling_ae, study)
    router_args = movescu_args(router.node, calling_ae, calling_ae, study)
    for round_number in range(repeat):
        # Alternate the order so that neither path always runs on a warmer cache.
        order = [(direct, direct_args), (relayed, router_args)]
        for samples, args in order if round_number % 2 == 0 else reversed(order):
            samples.add(timed_retrieve(args, mode, destination.output_dir, expected))
    return direct, relayed


def measure_get(peers: Peers, router: RouterProcess, work_dir: Path, calling_ae: str, peer_name: str,
                study: SeedStudy, mode: str, repeat: int) -> tuple[PathSamples, PathSamples]:
    """Time C-GET of `study` with getscu, direct from the peer and through the router."""
    direct, relayed = PathSamples(), PathSamples()
    output_dir = work_dir / "getscu"
    expected = len(study.files)
    direct_args = getscu_args(peers.node(peer_name), calling_ae, output_dir, study)
    router_args = getscu_args(router.node, calling_ae, output_dir, study)
    for round_number in range(repeat):
        order = [(direct, direct_args), (relayed, router_args)]
        for samples, args in order if round_number % 2 == 0 else reversed(order):
            samples.add(timed_retrieve(args, mode, output_dir, expected))
    return direct, relayed


def _comparisons(label: str, mode: str, direct: PathSamples, relayed: PathSamples) -> list[Comparison]:
    max_ratio = MAX_RATIO_NODELAY if mode == "nodelay" else MAX_RATIO_DEFAULT
    return [
        Comparison(f"{label} time, peers {mode}", relayed.seconds, direct.seconds,
                   f"direct, peers {mode}", max_ratio=max_ratio),
        Comparison(f"{label} first instance, peers {mode}", relayed.first_instance,
                   direct.first_instance, f"direct, peers {mode}",
                   max_difference=MAX_FIRST_INSTANCE_DELAY),
    ]


def _throughput(megabytes: float, samples: PathSamples) -> float:
    return megabytes / median(samples.seconds)


def _record(result: DetailedResult, label: str, mode: str, megabytes: float,
            direct: PathSamples, relayed: PathSamples) -> None:
    result.comparisons += _comparisons(label, mode, direct, relayed)
    result.data.setdefault("throughput", []).append({
        "path": label, "mode": mode, "megabytes": megabytes,
        "direct_mb_per_s": _throughput(megabytes, direct),
        "router_mb_per_s": _throughput(megabytes, relayed),
    })
    result.notes.append(f"{label}, peers {mode}: router {_throughput(megabytes, relayed):.1f} MB/s, "
                        f"direct {_throughput(megabytes, direct):.1f} MB/s ({megabytes:.0f} MB)")


def run_relay(work_dir: Path, *, smoke: bool, repeat: int) -> DetailedResult:
    """Measure C-MOVE and C-GET through the router against the direct path, in both socket modes."""
    instances = SMOKE_CT_INSTANCES if smoke else FULL_CT_INSTANCES
    study = build_ct_study(work_dir / "data" / "ct", instances=instances, patient_id="RELAY-CT")
    megabytes = study_bytes(study) / 1e6
    result = DetailedResult("relay")
    result.notes.append(f"study: {instances} instances of 512x512 16-bit CT, {megabytes:.1f} MB; "
                        f"{repeat} repeats; destination DCMTK storescp or getscu")
    destination = Destination(work_dir / "destination")
    holdings = {name: [study] for name in RELAY_PEERS}
    with process_environment(socket_environment("nodelay")):
        peers_context = running_peers(work_dir / "peers", holdings,
                                      workstations={"destination": destination.node})
        peers = peers_context.__enter__()
    try:
        for peer_name in RELAY_PEERS:
            # One router per peer, so that the router cannot fetch the study
            # from the other peer that also stores it.
            router_dir = work_dir / f"router-{peer_name}"
            with running_router(router_dir, peers, peers.entries([peer_name])) as router:
                for mode in SOCKET_MODES:
                    restart_peer(peers, peer_name, mode)
                    destination.start(mode)
                    direct, relayed = measure_move(peers, router, destination, peer_name, study, mode, repeat)
                    _record(result, f"C-MOVE from {peer_name}", mode, megabytes, direct, relayed)
                    direct, relayed = measure_get(peers, router, work_dir, destination.node.ae_title,
                                                  peer_name, study, mode, repeat)
                    _record(result, f"C-GET from {peer_name}", mode, megabytes, direct, relayed)
    finally:
        destination.stop()
        peers_context.__exit__(None, None, None)
    return result


def measure_relay(context: BenchContext) -> MeasurementResult:
    return run_relay(context.work_dir, smoke=context.smoke, repeat=context.repeat)
