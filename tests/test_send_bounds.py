"""The part of an outgoing instance that pynetdicom keeps in memory.

The receiver is a real DCMTK storescp, stopped with SIGSTOP so that it reads
nothing: the sender's queue then shows how much it would buffer. See
yicrouter/send_bounds.py.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, _config, evt
from pynetdicom.association import Association
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

from structlog.testing import capture_logs

from harness.dcmtk import StoreSCP
from harness.ports import free_port
from harness.waiting import wait_for
from yicrouter.send_bounds import MAX_QUEUED_PDUS, MAX_SEND_PDU, BoundedSendQueue, bound_sending

pytestmark = pytest.mark.timeout(120)

# Bytes of pixel data in the test instance: larger than loopback socket buffers.
_PIXEL_BYTES = 2048 * 4096 * 2


@pytest.fixture(autouse=True)
def chunked_send(monkeypatch: pytest.MonkeyPatch) -> None:
    """Send from the file in chunks, as the router does."""
    monkeypatch.setattr(_config, "STORE_SEND_CHUNKED_DATASET", True)


@pytest.fixture(scope="module")
def large_instance(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dataset = dcmread(get_testdata_file("CT_small.dcm"))
    dataset.Rows, dataset.Columns = 4096, 2048
    dataset.PixelData = np.arange(_PIXEL_BYTES // 2, dtype="<u2").tobytes()
    dataset.SOPInstanceUID = generate_uid()
    dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    path = tmp_path_factory.mktemp("send-bounds") / "large.dcm"
    dataset.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture
def stopped_storescp(tmp_path: Path) -> Iterator[StoreSCP]:
    """A storescp that accepts an association and is then stopped by the test."""
    scp = StoreSCP("BOUNDSCP", tmp_path / "received").start()
    try:
        yield scp
    finally:
        _signal(scp, signal.SIGCONT)
        scp.stop()


def _signal(scp: StoreSCP, signum: int) -> None:
    assert scp.process is not None and scp.process._popen is not None
    os.kill(scp.process._popen.pid, signum)


def _associate(node_port: int, ae_title: str, dimse_timeout: float = 10,
               network_timeout: float | None = None) -> Association:
    ae = AE(ae_title="BOUNDSCU")
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    ae.dimse_timeout = dimse_timeout
    ae.network_timeout = network_timeout or dimse_timeout
    assoc = ae.associate("127.0.0.1", node_port, ae_title=ae_title)
    assert assoc.is_established
    return assoc


def _send_in_thread(assoc: Association, path: Path) -> tuple[threading.Thread, dict[str, Any]]:
    result: dict[str, Any] = {}

    def send() -> None:
        result["rsp"] = assoc.send_c_store(path)

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    return thread, result


def _waiting_in_bounded_put(thread: threading.Thread) -> bool:
    frame = sys._current_frames().get(thread.ident or 0)
    while frame is not None:
        if frame.f_code.co_name == "put" and frame.f_globals.get("__name__") == "yicrouter.send_bounds":
            return True
        frame = frame.f_back
    return False


def test_pynetdicom_queues_the_whole_instance(stopped_storescp: StoreSCP, large_instance: Path) -> None:
    """The fault: with a receiver that reads nothing, the unbounded queue takes in the instance."""
    assoc = _associate(stopped_storescp.port, stopped_storescp.ae_title)
    pdu_bytes = int(assoc.acceptor.maximum_length or 0)
    _signal(stopped_storescp, signal.SIGSTOP)
    thread, _ = _send_in_thread(assoc, large_instance)
    queued = wait_for(
        lambda: assoc.dul.to_provider_queue.qsize() * pdu_bytes >= _PIXEL_BYTES // 2,
        timeout=60, message="pynetdicom queued less than half of the instance",
    )
    assert queued
    _signal(stopped_storescp, signal.SIGCONT)
    thread.join(timeout=60)
    assoc.release()


def test_bounded_queue_limits_and_delivers(stopped_storescp: StoreSCP, large_instance: Path) -> None:
    assoc = _associate(stopped_storescp.port, stopped_storescp.ae_title)
    bound_sending(assoc)
    assert isinstance(assoc.dul.to_provider_queue, BoundedSendQueue)
    _signal(stopped_storescp, signal.SIGSTOP)
    thread, result = _send_in_thread(assoc, large_instance)
    wait_for(lambda: _waiting_in_bounded_put(thread), timeout=60,
             message="the sender never waited for room in the bounded queue")
    assert assoc.dul.to_provider_queue.qsize() <= MAX_QUEUED_PDUS
    _signal(stopped_storescp, signal.SIGCONT)
    thread.join(timeout=60)
    assert not thread.is_alive()
    assert result["rsp"].Status == 0x0000
    assoc.release()
    [received] = wait_for(stopped_storescp.received_files, message="storescp wrote no file")
    assert dcmread(received).PixelData == dcmread(large_instance).PixelData


def test_abort_ends_blocked_sender(stopped_storescp: StoreSCP, large_instance: Path) -> None:
    """abort() and the sender return although the receiver never reads again."""
    assoc = _associate(stopped_storescp.port, stopped_storescp.ae_title, dimse_timeout=2)
    bound_sending(assoc)
    _signal(stopped_storescp, signal.SIGSTOP)
    thread, _ = _send_in_thread(assoc, large_instance)
    wait_for(lambda: _waiting_in_bounded_put(thread), timeout=60,
             message="the sender never waited for room in the bounded queue")
    # pynetdicom's abort() waits for the DUL thread, which is blocked in a
    # socket send until the socket's timeout ends it.
    aborting = threading.Thread(target=assoc.abort, daemon=True)
    aborting.start()
    aborting.join(timeout=30)
    assert not aborting.is_alive(), "abort() did not return"
    thread.join(timeout=30)
    assert not thread.is_alive(), "the sender kept waiting after the association was aborted"


def test_stalled_receiver_is_disconnected(stopped_storescp: StoreSCP, large_instance: Path) -> None:
    """A receiver that reads nothing for the DIMSE timeout loses the connection; the sender returns."""
    # The socket's own timeout, the network timeout, must not end the send first.
    assoc = _associate(stopped_storescp.port, stopped_storescp.ae_title, dimse_timeout=2, network_timeout=60)
    bound_sending(assoc)
    _signal(stopped_storescp, signal.SIGSTOP)
    with capture_logs() as events:
        thread, result = _send_in_thread(assoc, large_instance)
        thread.join(timeout=30)
    assert not thread.is_alive(), "the sender still waits for a receiver that stopped reading"
    assert "Status" not in result["rsp"]
    assert [event["event"] for event in events].count("send_stalled") == 1


def test_pdus_capped_without_receiver_limit(large_instance: Path) -> None:
    """An AE with Maximum Length 0 (no limit) gets PDUs of at most MAX_SEND_PDU bytes."""
    scp = AE(ae_title="NOLIMIT")
    scp.maximum_pdu_size = 0
    scp.add_supported_context(CTImageStorage, ExplicitVRLittleEndian)
    server = scp.start_server(("127.0.0.1", free_port()), block=False,
                              evt_handlers=[(evt.EVT_C_STORE, lambda event: 0x0000)])
    assert server is not None
    try:
        assoc = _associate(server.server_address[1], "NOLIMIT")
        assert assoc.acceptor.maximum_length == 0
        bound_sending(assoc)
        sizes: list[int] = []
        assoc.bind(evt.EVT_PDU_SENT,
                   lambda event: sizes.append(len(event.pdu.encode())) if isinstance(event.pdu, P_DATA_TF) else None)
        assert assoc.send_c_store(large_instance).Status == 0x0000
        assoc.release()
    finally:
        server.shutdown()
    # Maximum Length counts the PDU's variable field, not its 6-byte header (PS3.8 D.1).
    assert sizes and max(sizes) - 6 <= MAX_SEND_PDU
    assert sum(sizes) > _PIXEL_BYTES
