"""The loopback ceiling: DCMTK storescu to storescp, against the router's C-MOVE relay.

storescu sends the CT study straight to storescp, both with TCP_NODELAY=1.
That is the fastest DICOM transfer of these files that the suite measures. In the
same run the router relays the study by C-MOVE from a dcmqrscp peer (also with
TCP_NODELAY=1) to the same storescp. The router's fraction of the ceiling is
the ceiling's time over the router's time.

Also in the same run, bench.pynetdicom_limit times pynetdicom alone
receiving the study from storescu and sending it to storescp. The router
does both in one process, so those rates bound its relay rate.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import bench  # noqa: F401  (puts tests/ on sys.path for the harness imports)
from bench.context import BenchContext
from bench.data import build_ct_study
from bench.peers import running_peers, running_router
from bench.pynetdicom_limit import time_receive, time_send
from bench.relay import (
    FULL_CT_INSTANCES, SMOKE_CT_INSTANCES, BenchError, DetailedResult, Destination, PathSamples,
    RetrieveSample, clear_folder, count_files, first_arrival, movescu_args, process_environment,
    restart_peer, socket_environment, study_bytes, timed_retrieve,
)
from bench.stats import Comparison, MeasurementResult, median
from harness.dcmtk import dcmtk_tool
from yicrouter.demo.seed import SeedStudy

PEER = "dcmqrscp"
MODE = "nodelay"


def timed_store(destination: Destination, study: SeedStudy) -> RetrieveSample:
    """Send every file of `study` with one storescu association and time it."""
    clear_folder(destination.output_dir)
    node = destination.node
    args = [dcmtk_tool("storescu"), "-aet", "BENCHSTORESCU", "-aec", node.ae_title,
            node.host, str(node.port), *map(str, study.files)]
    started_wall = time.time()
    started = time.perf_counter()
    completed = subprocess.run(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, env=socket_environment(MODE),
                               timeout=900, check=False)
    seconds = time.perf_counter() - started
    received = count_files(destination.output_dir)
    if completed.returncode != 0 or received != len(study.files):
        output = completed.stdout.decode("utf-8", errors="replace")[-3000:]
        raise BenchError(f"storescu stored {received} of {len(study.files)} instances "
                         f"(exit status {completed.returncode}):\n{output}")
    return RetrieveSample(seconds, first_arrival(destination.output_dir) - started_wall, received)


def run_ceiling(work_dir: Path, *, smoke: bool, repeat: int) -> DetailedResult:
    instances = SMOKE_CT_INSTANCES if smoke else FULL_CT_INSTANCES
    study = build_ct_study(work_dir / "data" / "ct", instances=instances, patient_id="CEILING-CT")
    megabytes = study_bytes(study) / 1e6
    result = DetailedResult("ceiling")
    destination = Destination(work_dir / "destination")
    with process_environment(socket_environment(MODE)):
        peers_context = running_peers(work_dir / "peers", {PEER: [study]},
                                      workstations={"destination": destination.node})
        peers = peers_context.__enter__()
    ceiling, relayed = PathSamples(), PathSamples()
    receive: list[float] = []
    send: list[float] = []
    try:
        restart_peer(peers, PEER, MODE)
        destination.start(MODE)
        calling_ae = destination.node.ae_title
        with running_router(work_dir / "router", peers, peers.entries([PEER])) as router:
            router_args = movescu_args(router.node, calling_ae, calling_ae, study)
            for _ in range(repeat):
                ceiling.add(timed_store(destination, study))
                relayed.add(timed_retrieve(router_args, MODE, destination.output_dir, len(study.files)))
                receive.append(time_receive(study))
                send.append(time_send(study, destination))
    finally:
        destination.stop()
        peers_context.__exit__(None, None, None)

    result.comparisons += [
        Comparison("C-MOVE relay vs storescu ceiling", relayed.seconds, ceiling.seconds,
                   "storescu to storescp, TCP_NODELAY=1"),
        Comparison("pynetdicom alone receiving vs ceiling", receive, ceiling.seconds,
                   "storescu to storescp, TCP_NODELAY=1"),
        Comparison("pynetdicom alone sending vs ceiling", send, ceiling.seconds,
                   "storescu to storescp, TCP_NODELAY=1"),
    ]
    rates = {
        "ceiling_mb_per_s": megabytes / median(ceiling.seconds),
        "router_mb_per_s": megabytes / median(relayed.seconds),
        "pynetdicom_receive_mb_per_s": megabytes / median(receive),
        "pynetdicom_send_mb_per_s": megabytes / median(send),
    }
    # Receiving and sending each instance one after the other, as the GIL allows.
    rates["pynetdicom_serial_mb_per_s"] = 1 / (1 / rates["pynetdicom_receive_mb_per_s"]
                                               + 1 / rates["pynetdicom_send_mb_per_s"])
    ceiling_rate = rates["ceiling_mb_per_s"]
    result.notes.append(
        f"{instances} x 512x512 CT, {megabytes:.1f} MB: ceiling {ceiling_rate:.1f} MB/s, "
        f"router {rates['router_mb_per_s']:.1f} MB/s = {rates['router_mb_per_s'] / ceiling_rate:.2f} of the ceiling"
    )
    result.notes.append(
        f"pynetdicom alone: receives {rates['pynetdicom_receive_mb_per_s']:.1f} MB/s, sends "
        f"{rates['pynetdicom_send_mb_per_s']:.1f} MB/s, both in turn "
        f"{rates['pynetdicom_serial_mb_per_s']:.1f} MB/s = "
        f"{rates['pynetdicom_serial_mb_per_s'] / ceiling_rate:.2f} of the ceiling"
    )
    result.data = {"megabytes": megabytes, "fraction": rates["router_mb_per_s"] / ceiling_rate, **rates}
    return result


def measure_ceiling(context: BenchContext) -> MeasurementResult:
    return run_ceiling(context.work_dir, smoke=context.smoke, repeat=context.repeat)
