"""A guard against a response-stealing race in pynetdicom 3.0.4.

Every association (requestor and acceptor) runs a reactor thread that takes
decoded DIMSE messages off the queue. Before a `send_*()` call waits for its
response, pynetdicom pauses that thread by clearing an Event and polling a
flag, `_is_paused`, which the reactor sets *before* it calls `Event.wait()`.
If the reactor has just returned from `wait()` but not yet reset the flag,
the sender sees a stale True, sends, and the reactor then takes the response
and drops it ("Received unexpected C-STORE service message"). The sender
waits until its DIMSE timeout. pynetdicom issues #850 and #875 report this.

`pause_reactor` closes the window: it clears the Event and then waits until
the reactor thread is actually blocked inside `Event.wait()`, which is when
the Event's condition has a waiter. pynetdicom's own pause then finds the
reactor parked, and the reactor cannot wake until the send call sets the
Event again at its end.
"""

from __future__ import annotations

import time
from typing import Any

# Seconds to wait for the reactor to park; it loops every millisecond.
_PARK_TIMEOUT = 2.0


def _reactor_is_parked(assoc: Any) -> bool:
    # CPython's threading.Event keeps a Condition whose _waiters deque holds
    # one lock per thread blocked in wait().
    return bool(assoc._reactor_checkpoint._cond._waiters)


def pause_reactor(assoc: Any) -> bool:
    """Park the reactor thread of `assoc` before a send call; True when parked."""
    assoc._reactor_checkpoint.clear()
    deadline = time.monotonic() + _PARK_TIMEOUT
    while not _reactor_is_parked(assoc):
        if not assoc.is_alive() or time.monotonic() > deadline:
            return False
        time.sleep(0.0001)
    return True


def resume_reactor(assoc: Any) -> None:
    """Let the reactor run again, after a send call that raised before sending."""
    assoc._reactor_checkpoint.set()
