"""Transfer rates of pynetdicom alone on this machine, with no router work.

The router receives every instance with pynetdicom and sends it on with
pynetdicom, in one Python process. These two timings bound its relay rate:

- receive: DCMTK storescu sends the study to a pynetdicom Storage SCP in this
  process, whose C-STORE handler does nothing with the file;
- send: a pynetdicom Storage SCU in this process sends the study to DCMTK
  storescp.

Both use the router's settings: chunked data sets on disk, TCP_NODELAY and
TCP_QUICKACK (yicrouter.net) and the receiving PDU size of router.max_pdu.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pynetdicom import AE, _config, evt
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

import bench  # noqa: F401  (puts tests/ on sys.path for the harness imports)
from bench.relay import BenchError, Destination, clear_folder, count_files, socket_environment
from harness.dcmtk import dcmtk_tool
from harness.ports import free_port
from yicrouter.config import RouterSettings
from yicrouter.contexts import context_list
from yicrouter.demo.seed import SeedStudy
from yicrouter.net import TUNING_HANDLERS
from yicrouter.send_bounds import bound_sending

_RECEIVER_AE = "PYNETRECEIVER"
_SENDER_AE = "PYNETSENDER"
_SYNTAXES = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]


@contextmanager
def _chunked_datasets() -> Iterator[None]:
    saved = (_config.STORE_RECV_CHUNKED_DATASET, _config.STORE_SEND_CHUNKED_DATASET)
    _config.STORE_RECV_CHUNKED_DATASET = _config.STORE_SEND_CHUNKED_DATASET = True
    try:
        yield
    finally:
        _config.STORE_RECV_CHUNKED_DATASET, _config.STORE_SEND_CHUNKED_DATASET = saved


def time_receive(study: SeedStudy) -> float:
    """Return the seconds that storescu takes to send `study` to an in-process pynetdicom SCP."""
    received: list[str] = []

    def on_store(event: Any) -> int:
        received.append(event.dataset_path)
        return 0x0000

    ae = AE(ae_title=_RECEIVER_AE)
    ae.maximum_pdu_size = RouterSettings().max_pdu
    ae.add_supported_context(CTImageStorage, _SYNTAXES)
    port = free_port()
    with _chunked_datasets():
        server = ae.start_server(("127.0.0.1", port), block=False,
                                 evt_handlers=[*TUNING_HANDLERS, (evt.EVT_C_STORE, on_store)],
                                 contexts=context_list(ae.supported_contexts))
        assert server is not None
        try:
            args = [dcmtk_tool("storescu"), "-aet", "BENCHSTORESCU", "-aec", _RECEIVER_AE,
                    "127.0.0.1", str(port), *map(str, study.files)]
            started = time.perf_counter()
            completed = subprocess.run(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                       stderr=subprocess.STDOUT, env=socket_environment("nodelay"),
                                       timeout=900, check=False)
            seconds = time.perf_counter() - started
        finally:
            server.shutdown()
    if completed.returncode != 0 or len(received) != len(study.files):
        raise BenchError(f"pynetdicom received {len(received)} of {len(study.files)} instances:\n"
                         + completed.stdout.decode("utf-8", errors="replace")[-3000:])
    return seconds


def time_send(study: SeedStudy, destination: Destination) -> float:
    """Return the seconds that an in-process pynetdicom SCU takes to send `study` to storescp."""
    clear_folder(destination.output_dir)
    ae = AE(ae_title=_SENDER_AE)
    ae.add_requested_context(CTImageStorage, _SYNTAXES)
    node = destination.node
    with _chunked_datasets():
        started = time.perf_counter()
        assoc = ae.associate(node.host, node.port, ae_title=node.ae_title, evt_handlers=TUNING_HANDLERS)
        if not assoc.is_established:
            raise BenchError(f"storescp {node} did not accept the association")
        bound_sending(assoc)
        try:
            failed = [path for path in study.files if assoc.send_c_store(path).get("Status") != 0x0000]
        finally:
            assoc.release()
        seconds = time.perf_counter() - started
    if failed or count_files(destination.output_dir) != len(study.files):
        raise BenchError(f"pynetdicom sent {len(study.files) - len(failed)} of {len(study.files)} instances")
    return seconds
