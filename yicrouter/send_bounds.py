"""Limits on the memory that pynetdicom uses while it sends a data set.

pynetdicom 3.0.4 splits an outgoing DIMSE message into P-DATA primitives and
puts every one of them on the DUL's to_provider_queue, which has no size
limit, while the DUL thread sends them one at a time. Reading a file is
faster than sending it, so a C-STORE of a 500 MB instance held most of the
instance in that queue, and the router's peak RSS grew with instance size.
And toward an AE whose Maximum Length is 0 (no limit), pynetdicom sends the
whole data set as one PDU, read into memory at once.

bound_sending() gives an association a queue that holds at most
MAX_QUEUED_PDUS P-DATA primitives, so the sending thread waits for room, and
caps the PDUs that it sends at MAX_SEND_PDU bytes. A sender may always send
PDUs shorter than the receiver's Maximum Length (PS3.8 D.1).
"""

from __future__ import annotations

import queue
from typing import Any

from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.pdu_primitives import P_DATA

# P-DATA primitives that may wait in one association's send queue.
MAX_QUEUED_PDUS = 16
# Largest PDU the router sends, in bytes, whatever the receiver allows.
MAX_SEND_PDU = 262144
# Seconds between checks, while the queue is full, that the DUL still runs.
_FULL_CHECK_INTERVAL = 0.5


class BoundedSendQueue(queue.Queue):  # type: ignore[type-arg]
    """A to_provider_queue that makes the sender of P-DATA wait while it is full.

    Other primitives (A-ASSOCIATE, A-RELEASE, A-ABORT) are queued without
    waiting, so another thread can still abort. A P-DATA for a DUL that has stopped is dropped:
    the association is gone and the sender's wait for a response ends it.
    """

    def __init__(self, dul: Any) -> None:
        super().__init__(maxsize=MAX_QUEUED_PDUS)
        self._dul = dul

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        if not isinstance(item, P_DATA):
            with self.mutex:
                self._put(item)
                self.unfinished_tasks += 1
                self.not_empty.notify()
            return
        if not block or timeout is not None:
            super().put(item, block, timeout)
            return
        while not self._dul_stopped():
            try:
                super().put(item, timeout=_FULL_CHECK_INTERVAL)
                return
            except queue.Full:
                pass

    def _dul_stopped(self) -> bool:
        return bool(self._dul._kill_thread) or (self._dul.ident is not None and not self._dul.is_alive())


class CappedDIMSEServiceProvider(DIMSEServiceProvider):
    """A DIMSE provider that splits messages into PDUs of at most MAX_SEND_PDU bytes."""

    @property
    def maximum_pdu_size(self) -> int:
        allowed = int(super().maximum_pdu_size or 0)
        return MAX_SEND_PDU if allowed == 0 or allowed > MAX_SEND_PDU else allowed


def bound_sending(assoc: Any) -> None:
    """Bound the send queue and PDU size of `assoc`; call it while nothing is being sent.

    Primitives already queued, if any, move to the new queue in order.
    """
    dul = assoc.dul
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
