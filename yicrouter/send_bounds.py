"""Limits on the memory that pynetdicom uses while it sends a data set.

pynetdicom 3.0.4 splits an outgoing DIMSE message into P-DATA primitives and
puts every one of them on the DUL's to_provider_queue, which has no size
limit, while the DUL thread sends them one at a time. Reading a file is
faster than sending it, so a C-STORE of a 500 MB instance held most of the
instance in that queue, and the router's peak RSS grew with instance size.
And toward an AE whose Maximum Length is 0 (no limit), pynetdicom sends the
whole data set as one PDU, read into memory at once.

bound_sending() gives an association a queue with room for at most
MAX_QUEUED_PDUS P-DATA primitives, so the sending thread waits for room, and
caps the PDUs that it sends at MAX_SEND_PDU bytes. The receiver's Maximum
Length is an upper limit (PS3.8 D.1), so shorter PDUs are allowed. When the
queue has had no room for the association's DIMSE timeout, the receiver has
stopped reading: the queue then shuts the connection down, which ends
pynetdicom's blocked socket send, instead of waiting as long as the receiver
stays stopped.

pynetdicom also leaves its sockets without a timeout once connected, so a
send to a receiver that stopped reading blocks the DUL thread for good, and
abort() and release() wait for that thread. bound_sending() therefore gives
the socket the association's network timeout: a send blocked that long fails,
and pynetdicom closes the association (Evt17).
"""

from __future__ import annotations

import queue
import socket
import time
from typing import Any

from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.pdu_primitives import A_ABORT, A_P_ABORT, P_DATA

from yicrouter.logs import get_logger

log = get_logger(__name__)

# P-DATA primitives that may wait in one association's send queue.
MAX_QUEUED_PDUS = 16
# Largest PDU the router sends, in bytes, whatever the receiver allows.
MAX_SEND_PDU = 262144
# Seconds between checks, while the queue is full, that the DUL still runs.
_FULL_CHECK_INTERVAL = 0.5
# Seconds without room in the queue after which the receiver counts as
# stalled, when the association has no DIMSE timeout, and the socket timeout
# when it has no network timeout.
_DEFAULT_STALL_SECONDS = 30.0


class BoundedSendQueue(queue.Queue):  # type: ignore[type-arg]
    """A to_provider_queue that makes the sender of P-DATA wait while it is full.

    Other primitives (A-ASSOCIATE, A-RELEASE, A-ABORT) are queued without
    waiting, so another thread can still abort. A P-DATA for a DUL that has
    stopped, or after an A-ABORT, is dropped: the association is gone, and the
    sender's wait for a response ends it. pynetdicom's DUL would otherwise
    meet a P-DATA after its A-ABORT and end with InvalidEventError.
    """

    def __init__(self, dul: Any) -> None:
        super().__init__(maxsize=MAX_QUEUED_PDUS)
        self._dul = dul
        self._aborting = False

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        if not isinstance(item, P_DATA):
            if isinstance(item, (A_ABORT, A_P_ABORT)):
                self._aborting = True
            with self.mutex:
                self._put(item)
                self.unfinished_tasks += 1
                self.not_empty.notify()
            return
        if not block or timeout is not None:
            super().put(item, block, timeout)
            return
        stall_at = time.monotonic() + self._stall_seconds()
        while not self._aborting and not self._dul_stopped():
            try:
                super().put(item, timeout=_FULL_CHECK_INTERVAL)
                return
            except queue.Full:
                if time.monotonic() >= stall_at:
                    self._disconnect()
                    stall_at = float("inf")

    def _stall_seconds(self) -> float:
        timeout = getattr(self._dul.assoc, "dimse_timeout", None)
        return float(timeout) if timeout else _DEFAULT_STALL_SECONDS

    def _disconnect(self) -> None:
        """Shut the connection down, so that the DUL's blocked send fails and its thread ends."""
        assoc = self._dul.assoc
        remote = assoc.acceptor if assoc.is_requestor else assoc.requestor
        log.warning("send_stalled", remote_ae_title=str(remote.ae_title).strip(),
                    seconds=self._stall_seconds(),
                    reason="the receiver read nothing for the DIMSE timeout, so the connection is closed")
        sock = getattr(self._dul.socket, "socket", None)
        if sock is None:
            return
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError as exc:
            log.debug("send_stalled_shutdown_failed", error=str(exc))

    def _dul_stopped(self) -> bool:
        return bool(self._dul._kill_thread) or (self._dul.ident is not None and not self._dul.is_alive())


class CappedDIMSEServiceProvider(DIMSEServiceProvider):
    """A DIMSE provider that splits messages into PDUs of at most MAX_SEND_PDU bytes."""

    @property
    def maximum_pdu_size(self) -> int:
        allowed = int(super().maximum_pdu_size or 0)
        return MAX_SEND_PDU if allowed == 0 or allowed > MAX_SEND_PDU else allowed


def bound_sending(assoc: Any) -> None:
    """Bound the send queue, PDU size and socket timeout of `assoc`.

    Call it while nothing is being sent. Primitives already queued, if any,
    move to the new queue in order.
    """
    dul = assoc.dul
    sock = getattr(dul.socket, "socket", None)
    if sock is not None:
        sock.settimeout(float(assoc.network_timeout or _DEFAULT_STALL_SECONDS))
    if not isinstance(dul.to_provider_queue, BoundedSendQueue):
        bounded = BoundedSendQueue(dul)
        old = dul.to_provider_queue
        while True:
            try:
                bounded.put(old.get_nowait())
            except queue.Empty:
                break
        dul.to_provider_queue = bounded
    assoc.dimse.__class__ = CappedDIMSEServiceProvider
