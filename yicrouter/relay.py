"""The retrieve relay loop: peer retrieve in, C-STOREs out, live counts back.

It runs in the requester's association thread, while a helper thread runs the
C-MOVE or C-GET at the peer. The C-STORE handler puts each received instance
into the job's inbox. This loop sends it on at once with an InstanceSender
(to the Move Destination of a C-MOVE, or back on the requester's own
association for a C-GET), then sends a Pending response with the router's own
counts: after the first instance, and then at most every 0.2 s. The final
response goes out only after the last send has finished.

Each instance that the router acknowledged to the peer is counted once: sent
on (completed, warning or failed), kept in the retry queue (failed), or, after
a C-CANCEL only, dropped (remaining). When the peer's retrieve ends, the relay
first waits, at most _SETTLE_SECONDS, for C-STOREs of the job that are still
being stored, because they arrive on another association than the peer's
final response or A-ABORT.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from pydicom.dataset import Dataset

from yicrouter import dialect, status
from yicrouter.config import PeerSettings
from yicrouter.forwarder import ForwardResult
from yicrouter.logs import get_logger
from yicrouter.moves import MoveJob, PeerFinished, ReceivedInstance
from yicrouter.peer_move import MoveOutcome, MoveProgress
from yicrouter.query import InformationModel
from yicrouter.queue_book import QueueBook

log = get_logger(__name__)

# Seconds between checks for C-CANCEL and a lost requester while idle.
_POLL_INTERVAL = 0.2
# Seconds without a Pending response after which the router sends one with
# unchanged counts, so a requester waiting on a slow peer (for example one
# large instance) learns that the move is still running.
_QUIET_PENDING_INTERVAL = 5.0
# Seconds that must pass between two Pending responses sent after instances.
# Encoding and sending one per instance cost about a tenth of the router's
# CPU time in a relay of 512x512 CT (docs/benchmarks.md).
_PENDING_MIN_INTERVAL = 0.2
# Seconds that the relay waits, after the peer's retrieve has ended, for
# C-STOREs of the job that are still being stored. Storing one takes a file
# rename and a database commit once the data set has arrived.
_SETTLE_SECONDS = 5.0
# Seconds between checks while waiting for those C-STOREs.
_SETTLE_POLL_INTERVAL = 0.02


class InstanceSender(Protocol):
    """Sends one received instance on, and returns the C-STORE status."""

    def send(self, instance: ReceivedInstance) -> ForwardResult: ...


class RetrieveCall(Protocol):
    """A C-MOVE or C-GET at one peer that another thread may cancel or abort."""

    def run(
        self,
        model: InformationModel,
        identifier: Dataset,
        message_id: int,
        on_progress: Callable[[MoveProgress], None],
    ) -> MoveOutcome: ...

    def cancel(self) -> None: ...

    def abort(self) -> None: ...


@dataclass
class MoveCounts:
    """Sub-operation counts from the router's own C-STOREs to the destination or requester."""

    completed: int = 0
    failed: int = 0
    warning: int = 0
    failed_uids: list[str] = field(default_factory=list)
    bytes_forwarded: int = 0
    # Instances received but not forwarded, now in the retry queue.
    queued_for_retry: int = 0
    # Instances received but not sent on because the requester sent C-CANCEL.
    # The Cancel response counts them as remaining.
    dropped: int = 0
    # C-STOREs still being stored when the relay closed the job. Each counts
    # as failed, and as queued for retry for a C-MOVE: the C-STORE handler
    # sends its row to the delivery job.
    unsettled: int = 0

    def add(self, instance: ReceivedInstance, store_status: int, retried: bool = True) -> None:
        """Count one sub-operation; `retried` is True when a failed one went to the retry queue."""
        if status.is_success(store_status):
            self.completed += 1
            self.bytes_forwarded += instance.size
        elif status.is_warning(store_status):
            self.warning += 1
            self.bytes_forwarded += instance.size
        else:
            self.failed += 1
            self.failed_uids.append(instance.sop_instance_uid)
            if retried:
                self.queued_for_retry += 1

    def add_unsent(self, instance: ReceivedInstance, kept: bool) -> None:
        """Count one received instance that the relay did not send; `kept` when it stays queued for retry."""
        self.failed += 1
        self.failed_uids.append(instance.sop_instance_uid)
        if kept:
            self.queued_for_retry += 1

    def add_unsettled(self, stores: int, kept: bool) -> None:
        """Count C-STOREs that were still being stored when the job closed."""
        self.unsettled += stores
        self.failed += stores
        if kept:
            self.queued_for_retry += stores


def announced_total(progress: MoveProgress) -> int | None:
    """Return the number of sub-operations the peer announced, or None before it did."""
    if progress.remaining is None:
        return None
    return progress.remaining + progress.completed + progress.failed + progress.warning


@dataclass
class RelayResult:
    counts: MoveCounts
    outcome: MoveOutcome | None
    job: MoveJob
    cancelled: bool = False
    requester_lost: bool = False
    timed_out: bool = False
    router_stopping: bool = False

    @property
    def peer(self) -> PeerSettings | None:
        return self.job.peer

    def unreceived(self, progress: MoveProgress | None = None) -> int | None:
        """Return how many announced sub-operations never reached the router.

        None means the peer never announced a total, so the number is unknown.
        Sub-operations that the peer itself counts as failed are not included,
        and neither are instances that the relay has counted. `progress` is
        the peer's progress to use, by default the latest.
        """
        if progress is None:
            progress = self.job.peer_progress
        announced = announced_total(progress)
        if announced is None:
            return None
        accounted = self.job.handed_over + self.counts.unsettled
        return max(announced - progress.failed - accounted, 0)


@dataclass(frozen=True)
class RequesterHooks:
    """Callbacks to the requester's association: responses, C-CANCEL and connection state."""

    send_pending: Callable[[MoveCounts, int], None]
    is_cancelled: Callable[[], bool]
    requester_alive: Callable[[], bool]
    # True for a C-GET: instances go back on the requester's association, so
    # the retrieve stops when that association is lost.
    stops_without_requester: bool = False
    # "move" or "get": the first word of the service's log events.
    service_name: str = "move"


class MoveRelay:
    def __init__(
        self,
        job: MoveJob,
        peers: list[PeerSettings],
        sender: InstanceSender,
        queue_book: QueueBook,
        start_call: Callable[[PeerSettings], RetrieveCall],
        requester: RequesterHooks,
        router_stopping: Callable[[], bool],
        log_context: dict[str, object],
    ) -> None:
        self.job = job
        self._peers = peers
        self._sender = sender
        self._queue = queue_book
        self._start_call = start_call
        self._requester = requester
        self._router_stopping = router_stopping
        self._log = log.bind(**log_context)
        self._current: RetrieveCall | None = None
        self._stop = threading.Event()
        self._last_pending_at = time.monotonic()
        self._pending_sent = False
        self.counts = MoveCounts()

    def run(self) -> RelayResult:
        """Relay until the peer has finished and every received instance is sent on.

        A requester that goes away does not stop a C-MOVE: the Move
        Destination still gets the study, and only the responses stop.
        """
        threading.Thread(target=self._run_peer_moves, name=f"move-{self.job.id}", daemon=True).start()
        try:
            return self._relay()
        finally:
            if self.job.accepting:
                # Only an exception in the loop gets here with the job open.
                self.job.close(cancelled=False)
                self._settle_inbox(keep=self.job.durable, cancelled=False)

    def _relay(self) -> RelayResult:
        deadline = time.monotonic() + max(p.move_deadline for p in self._peers)
        result = RelayResult(self.counts, None, self.job)
        settle_until: float | None = None
        while True:
            if self._must_stop(result, deadline):
                self._end_early(result)
                return result
            if settle_until is not None and self._settled(settle_until):
                self._end_finished()
                return result
            item = self._next_item(result, settling=settle_until is not None)
            if item is None:
                continue
            if isinstance(item, PeerFinished):
                result.outcome = item.outcome
                settle_until = time.monotonic() + _SETTLE_SECONDS
                continue
            self._forward(item)
            if not self._pending_sent or time.monotonic() - self._last_pending_at >= _PENDING_MIN_INTERVAL:
                self._report_progress(result.requester_lost)

    def _must_stop(self, result: RelayResult, deadline: float) -> bool:
        """Record a C-CANCEL, a lost requester, the deadline or shutdown; return True to stop now."""
        if not result.requester_lost and not self._requester.requester_alive():
            result.requester_lost = True
            self._log.warning(f"{self._requester.service_name}_requester_lost",
                              reason="the requester's association closed")
        if not result.requester_lost and self._requester.is_cancelled():
            result.cancelled = True
        elif time.monotonic() > deadline:
            result.timed_out = True
        elif self._router_stopping():
            result.router_stopping = True
        requester_gone = result.requester_lost and self._requester.stops_without_requester
        return result.cancelled or result.timed_out or result.router_stopping or requester_gone

    def _next_item(self, result: RelayResult, settling: bool) -> ReceivedInstance | PeerFinished | None:
        """Return the next inbox item, or None after a poll interval without one."""
        try:
            return self.job.inbox.get(timeout=_SETTLE_POLL_INTERVAL if settling else _POLL_INTERVAL)
        except queue.Empty:
            if time.monotonic() - self._last_pending_at > _QUIET_PENDING_INTERVAL:
                self._report_progress(result.requester_lost)
            return None

    def _settled(self, settle_until: float) -> bool:
        """Return True when no C-STORE of the job is being stored and the inbox is empty, or time is up."""
        idle = self.job.stores_in_progress == 0 and self.job.inbox.empty()
        return idle or time.monotonic() >= settle_until

    def _end_finished(self) -> None:
        """Close the job after the peer's retrieve ended, and send on what it still holds."""
        unsettled = self.job.close(cancelled=False)
        while True:
            try:
                item = self.job.inbox.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, ReceivedInstance):
                self._forward(item)
        self._count_unsettled(unsettled)

    def _end_early(self, result: RelayResult) -> None:
        """Close the job, stop the peer, and count or drop every instance not yet sent on.

        After a C-CANCEL nothing more goes to the destination: instances not
        yet sent are dropped, and so are the move's rows in the retry queue.
        """
        requester_gone = result.requester_lost and self._requester.stops_without_requester
        unsettled = self.job.close(cancelled=result.cancelled)
        self._stop_peer(cancel=not result.timed_out)
        keep = self.job.durable and not result.cancelled and not requester_gone
        self._settle_inbox(keep, cancelled=result.cancelled)
        if result.cancelled:
            # A C-STORE still being stored is refused by its handler, so the
            # Cancel response counts it as remaining.
            self._purge_rows()
        else:
            self._count_unsettled(unsettled)

    def _count_unsettled(self, stores: int) -> None:
        if stores == 0:
            return
        kept = self.job.durable
        self.counts.add_unsettled(stores, kept)
        self._log.warning("stores_unsettled", stores=stores, queued_for_retry=kept,
                          reason=f"still being stored {_SETTLE_SECONDS:g} s after the peer's retrieve ended")

    def _purge_rows(self) -> None:
        """Delete the retry-queue rows of a cancelled move, so that nothing is sent later."""
        if not self.job.durable:
            return
        self._queue.purge_move(self.job.id, self.job.queue_owner)
        self.counts.queued_for_retry = 0

    def _forward(self, instance: ReceivedInstance) -> None:
        forwarded = self._sender.send(instance)
        retried = self.job.durable
        self.counts.add(instance, forwarded.status, retried)
        if not status.is_failure(forwarded.status):
            self._queue.delivered(instance)
            return
        # The first failure of a move is a warning; the rest would repeat
        # it per instance, so they go to DEBUG and move_completed counts them.
        level = "warning" if self.counts.failed == 1 else "debug"
        getattr(self._log, level)(
            "forward_failed", sop_instance_uid=instance.sop_instance_uid,
            store_status=f"0x{forwarded.status:04X}", reason=forwarded.reason,
            queued_for_retry=retried,
        )
        if retried:
            self._queue.failed(instance, forwarded.reason or f"C-STORE status 0x{forwarded.status:04X}")
        else:
            self._queue.dropped(instance)

    def _report_progress(self, requester_lost: bool) -> None:
        self._last_pending_at = time.monotonic()
        self._pending_sent = True
        if not requester_lost:
            self._requester.send_pending(self.counts, self.remaining())

    def remaining(self) -> int:
        """Return the sub-operations not yet done: announced by the peer, or queued."""
        done = self.counts.completed + self.counts.failed + self.counts.warning
        queued = max(self.job.handed_over - done, 0)
        announced = announced_total(self.job.peer_progress)
        if announced is None:
            return queued
        return max(announced - self.job.peer_progress.failed - done, queued, 0)

    def _run_peer_moves(self) -> None:
        """Try each peer that holds the data until one delivers or fails partway."""
        outcome = MoveOutcome(error="no peer holds the requested data")
        peer = self._peers[0]
        for peer in self._peers:
            if self._stop.is_set():
                break
            self.job.peer = peer
            call = self._start_call(peer)
            self._current = call
            if self._stop.is_set():
                # The relay stopped while the call was being created, so it
                # could not reach this call to cancel it.
                call.cancel()
            outcome = self._run_call(call, peer)
            if not self._should_try_next_peer(outcome):
                break
            self._log.warning("peer_move_failed", peer=peer.name, peer_ae_title=peer.ae_title,
                              reason=outcome.error or f"final status 0x{outcome.final_status:04X}",
                              trying_next_peer=peer is not self._peers[-1])
        self.job.inbox.put(PeerFinished(peer, outcome))

    def _run_call(self, call: RetrieveCall, peer: PeerSettings) -> MoveOutcome:
        """Run the retrieve at one peer, in the form that this peer accepts."""
        try:
            model, identifier = dialect.retrieve_request(peer, self.job.query)
        except dialect.RetrieveNotTranslatable as exc:
            return MoveOutcome(error=str(exc))
        return call.run(model, identifier, self.job.upstream_message_id, self._on_progress)

    def _should_try_next_peer(self, outcome: MoveOutcome) -> bool:
        if self.job.received_uids:
            return False
        if outcome.error is not None:
            return True
        final = outcome.final_status
        return final is not None and status.is_failure(final)

    def _on_progress(self, progress: MoveProgress) -> None:
        self.job.peer_progress = progress

    def _stop_peer(self, cancel: bool) -> None:
        self._stop.set()
        call = self._current
        if call is None:
            return
        if cancel:
            call.cancel()
        else:
            call.abort()

    def _settle_inbox(self, keep: bool, cancelled: bool) -> None:
        """Count each instance not yet sent on; unless `keep`, drop its row and file.

        Kept instances stay in the retry queue, and the delivery job sends
        them once the move has released its rows.
        """
        while True:
            try:
                item = self.job.inbox.get_nowait()
            except queue.Empty:
                return
            if not isinstance(item, ReceivedInstance):
                continue
            if not keep:
                self._queue.dropped(item)
            if cancelled:
                self.counts.dropped += 1
            else:
                self.counts.add_unsent(item, kept=keep)
