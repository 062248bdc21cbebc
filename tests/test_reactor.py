"""The pynetdicom 3.0.4 reactor race, shown and then guarded by pause_reactor.

The race needs two scheduling delays that a busy CPU produces by chance: the
reactor thread is preempted between returning from `Event.wait()` and
resetting `_is_paused`, and the sending thread is slow to start waiting for
its response. The test widens both windows on purpose: `SlowWakeEvent`
lingers after a wait that did not block until a DIMSE message is queued (at
most 200 ms), and the sender's blocking `get_msg` starts 50 ms late. The first test shows pynetdicom losing C-STORE
responses then; the second shows that pause_reactor, called before each
send, loses none.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pynetdicom import AE, evt
from pynetdicom.association import Association
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

from harness.ports import free_port
from harness.waiting import WaitTimeout, wait_for
from yicrouter.reactor import pause_reactor

STORES = 4


class SlowWakeEvent(threading.Event):
    """An Event whose wait() lingers until a message is queued, if it did not block."""

    def __init__(self, assoc: Association) -> None:
        super().__init__()
        self._assoc = assoc

    def wait(self, timeout: float | None = None) -> bool:
        was_set = self.is_set()
        result = super().wait(timeout)
        if was_set:
            try:
                wait_for(lambda: not self._assoc.dimse.msg_queue.empty(), timeout=0.2, interval=0.0005)
            except WaitTimeout:
                pass
        return result


@pytest.fixture
def storage_scp() -> Iterator[int]:
    ae = AE(ae_title="RACESCP")
    ae.add_supported_context(CTImageStorage)
    port = free_port()
    handlers = [(evt.EVT_C_STORE, lambda event: 0x0000)]
    server = ae.start_server(("127.0.0.1", port), block=False, evt_handlers=handlers)
    yield port
    server.shutdown()


def _racy_association(port: int) -> Association:
    ae = AE(ae_title="RACESCU")
    ae.add_requested_context(CTImageStorage)
    ae.dimse_timeout = 1.0
    assoc = ae.associate("127.0.0.1", port, ae_title="RACESCP")
    assert assoc.is_established
    assoc._reactor_checkpoint = SlowWakeEvent(assoc)
    assoc._reactor_checkpoint.set()
    unhurried_get = assoc.dimse.get_msg

    def late_blocking_get(block: bool = False) -> object:
        if block:
            time.sleep(0.05)
        return unhurried_get(block=block)

    assoc.dimse.get_msg = late_blocking_get
    return assoc


def _count_lost(assoc: Association, guard: bool) -> int:
    dataset = dcmread(get_testdata_file("CT_small.dcm"))
    lost = 0
    for _ in range(STORES):
        if not assoc.is_established:
            assoc = _racy_association(assoc.acceptor.port)
        time.sleep(0.005)  # let the reactor run a cycle, as between real instances
        if guard:
            pause_reactor(assoc)
        rsp = assoc.send_c_store(dataset)
        if "Status" not in rsp:
            lost += 1
    if assoc.is_established:
        assoc.release()
    return lost


def test_pynetdicom_loses_responses_in_race(storage_scp: int) -> None:
    lost = _count_lost(_racy_association(storage_scp), guard=False)
    assert lost >= 1, "the race did not show; the pynetdicom workaround may no longer be needed"


def test_pause_reactor_prevents_lost_responses(storage_scp: int) -> None:
    lost = _count_lost(_racy_association(storage_scp), guard=True)
    assert lost == 0
