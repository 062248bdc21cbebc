"""Peak resident memory of the router while it relays studies of growing size.

A fresh router relays each study by C-MOVE from a dcmqrscp peer to a DCMTK
storescp, so VmHWM in /proc/<pid>/status after the relay is the peak of that
study alone. The peers run with TCP_NODELAY=1. The same study moved directly
by the peer is the paired baseline for time and instances/s.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import bench  # noqa: F401  (puts tests/ on sys.path for the harness imports)
from bench.context import BenchContext
from bench.data import build_ct_study, build_large_instance, build_small_study
from bench.peers import Peers, running_peers, running_router
from bench.relay import (
    BenchError, DetailedResult, Destination, PathSamples, movescu_args, process_environment, restart_peer,
    socket_environment, study_bytes, timed_retrieve,
)
from bench.stats import Comparison, Count, MeasurementResult, median
from harness.dcmtk import dcmtk_tool
from harness.ports import DicomNode
from yicrouter.demo.seed import SeedStudy

PEER = "dcmqrscp"
MODE = "nodelay"
# The calling AE title that harness.dcmqrscp.DcmqrscpServer accepts stores from.
SEEDING_AE = "SEEDSCU"
# Seconds that seeding every study may take.
SEEDING_TIMEOUT = 1800.0
# Peak RSS target for the router, in MB (10**6 bytes).
MAX_PEAK_RSS_MB = 200


@dataclass(frozen=True)
class StudySizes:
    ct_instances: int
    small_instances: int
    large_megabytes: int


FULL_STUDY_SIZES = StudySizes(ct_instances=500, small_instances=5000, large_megabytes=500)
SMOKE_STUDY_SIZES = StudySizes(ct_instances=10, small_instances=50, large_megabytes=8)


def peak_rss_megabytes(pid: int) -> float:
    """Return VmHWM (peak resident set size) of a process, in MB."""
    for line in Path(f"/proc/{pid}/status").read_text(encoding="ascii").splitlines():
        if line.startswith("VmHWM:"):
            kilobytes = int(line.split()[1])
            return kilobytes * 1024 / 1e6
    raise RuntimeError(f"/proc/{pid}/status has no VmHWM line")


def _build_studies(data_dir: Path, sizes: StudySizes) -> dict[str, SeedStudy]:
    return {
        f"{sizes.ct_instances} x 512x512 CT": build_ct_study(
            data_dir / "ct", instances=sizes.ct_instances, patient_id="MEM-CT"),
        f"{sizes.small_instances} small instances": build_small_study(
            data_dir / "small", instances=sizes.small_instances, patient_id="MEM-SMALL"),
        f"one {sizes.large_megabytes} MB instance": build_large_instance(
            data_dir / "large", megabytes=sizes.large_megabytes, patient_id="MEM-LARGE"),
    }


def seed_peer(node: DicomNode, data_dir: Path) -> None:
    """Store every file under `data_dir` in the peer with one quiet storescu run.

    DcmqrscpServer.seed runs storescu with debug output and a 60 s limit, which
    thousands of instances exceed. Missing instances show up later, because
    every relay checks the number of files at the destination.
    """
    args = [dcmtk_tool("storescu"), "-aet", SEEDING_AE, "-aec", node.ae_title, "+sd", "+r",
            node.host, str(node.port), str(data_dir)]
    completed = subprocess.run(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, env=socket_environment(MODE),
                               timeout=SEEDING_TIMEOUT, check=False)
    if completed.returncode != 0:
        output = completed.stdout.decode("utf-8", errors="replace")[-3000:]
        raise BenchError(f"storescu failed to seed {node} from {data_dir} "
                         f"(exit status {completed.returncode}):\n{output}")


def _relay_one(work_dir: Path, peers: Peers, destination: Destination, study: SeedStudy,
               repeat: int) -> tuple[PathSamples, PathSamples, float, float]:
    """Relay one study through a fresh router `repeat` times and time the direct path too.

    Returns the direct samples, the router samples, the router's VmHWM after
    start-up and its VmHWM after the relays, in MB.
    """
    direct, relayed = PathSamples(), PathSamples()
    calling_ae = destination.node.ae_title
    expected = len(study.files)
    direct_args = movescu_args(peers.node(PEER), calling_ae, calling_ae, study)
    for _ in range(repeat):
        direct.add(timed_retrieve(direct_args, MODE, destination.output_dir, expected))
    with running_router(work_dir, peers, peers.entries([PEER])) as router:
        assert router.process is not None and router.process.pid is not None
        pid = router.process.pid
        idle = peak_rss_megabytes(pid)
        router_args = movescu_args(router.node, calling_ae, calling_ae, study)
        for _ in range(repeat):
            relayed.add(timed_retrieve(router_args, MODE, destination.output_dir, expected))
        peak = peak_rss_megabytes(pid)
    return direct, relayed, idle, peak


def run_memory(work_dir: Path, *, smoke: bool, repeat: int) -> DetailedResult:
    sizes = SMOKE_STUDY_SIZES if smoke else FULL_STUDY_SIZES
    studies = _build_studies(work_dir / "data", sizes)
    result = DetailedResult("memory")
    destination = Destination(work_dir / "destination")
    with process_environment(socket_environment(MODE)):
        peers_context = running_peers(work_dir / "peers", {},
                                      workstations={"destination": destination.node})
        peers = peers_context.__enter__()
    try:
        seed_peer(peers.node(PEER), work_dir / "data")
        restart_peer(peers, PEER, MODE)
        destination.start(MODE)
        for number, (label, study) in enumerate(studies.items(), start=1):
            direct, relayed, idle, peak = _relay_one(work_dir / f"router-{number}", peers,
                                                     destination, study, repeat)
            _record(result, label, study, direct, relayed, idle, peak)
    finally:
        destination.stop()
        peers_context.__exit__(None, None, None)
    return result


def _record(result: DetailedResult, label: str, study: SeedStudy, direct: PathSamples,
            relayed: PathSamples, idle: float, peak: float) -> None:
    instances = len(study.files)
    megabytes = study_bytes(study) / 1e6
    result.comparisons.append(Comparison(f"C-MOVE time, {label}", relayed.seconds, direct.seconds,
                                         f"direct, peers {MODE}"))
    result.counts.append(Count(f"router peak RSS MB, {label}", round(peak), MAX_PEAK_RSS_MB))
    router_rate = instances / median(relayed.seconds)
    direct_rate = instances / median(direct.seconds)
    result.notes.append(f"{label} ({megabytes:.1f} MB): router peak RSS {peak:.1f} MB "
                        f"(after start-up {idle:.1f} MB); router {router_rate:.0f} instances/s, "
                        f"{megabytes / median(relayed.seconds):.1f} MB/s; direct "
                        f"{direct_rate:.0f} instances/s, {megabytes / median(direct.seconds):.1f} MB/s")
    result.data.setdefault("studies", []).append({
        "label": label, "instances": instances, "megabytes": megabytes,
        "idle_rss_mb": idle, "peak_rss_mb": peak,
        "router_seconds": median(relayed.seconds), "direct_seconds": median(direct.seconds),
        "router_instances_per_s": router_rate, "direct_instances_per_s": direct_rate,
        "router_mb_per_s": megabytes / median(relayed.seconds),
        "direct_mb_per_s": megabytes / median(direct.seconds),
    })


def measure_memory(context: BenchContext) -> MeasurementResult:
    return run_memory(context.work_dir, smoke=context.smoke, repeat=context.repeat)
