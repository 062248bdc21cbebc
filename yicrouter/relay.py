"""The retrieve relay loop: peer retrieve in, C-STOREs out, live counts back.

It runs in the requester's association thread, while a helper thread runs the
C-MOVE or C-GET at the peer. The C-STORE handler puts each received instance
into the job's inbox. This loop sends it on at once with an InstanceSender
(to the Move Destination of a C-MOVE, or back on the requester's own
association for a C-GET), then sends a Pending response with the router's own
counts. The final response goes out only after the last send has finished.
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

    def unreceived(self) -> int | None:
        """Return how many announced sub-operations never reached the router.

        None means the peer never announced a total, so the number is unknown.
        Sub-operations that the peer itself counts as failed are not included.
        """
        announced = announced_total(self.job.peer_progress)
        if announced is None:
            return None
        return max(announced - self.job.peer_progress.failed - len(self.job.received_uids), 0)


@dataclass(frozen=True)
class RequesterHooks:
    """Callbacks to the requester's association: responses, C-CANCEL and connection state."""

    send_pending: Callable[[MoveCounts, int], None]
    is_cancelled: Callable[[], bool]
    requester_alive: Callable[[], bool]
    # True for a C-GET: instances go back on the requester's association, so
    # the retrieve stops when that association is lost.
    stops_without_requester: bool = False


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
            self.job.accepting = False
            # Instances that arrived while the loop ended have nowhere to go.
            self._empty_inbox(keep=self.job.durable)

    def _relay(self) -> RelayResult:
        deadline = time.monotonic() + max(p.move_deadline for p in self._peers)
        result = RelayResult(self.counts, None, self.job)
        while True:
            if not result.requester_lost and not self._requester.requester_alive():
                result.requester_lost = True
                self._log.warning("move_requester_lost", reason="the requester's association closed")
            if not result.requester_lost and self._requester.is_cancelled():
                result.cancelled = True
            elif time.monotonic() > deadline:
                result.timed_out = True
            elif self._router_stopping():
                result.router_stopping = True
            requester_gone = result.requester_lost and self._requester.stops_without_requester
            if result.cancelled or result.timed_out or result.router_stopping or requester_gone:
                self._stop_peer(cancel=not result.timed_out)
                self._empty_inbox(keep=self.job.durable and not result.cancelled and not requester_gone)
                return result
            try:
                item = self.job.inbox.get(timeout=_POLL_INTERVAL)
            except queue.Empty:
                if time.monotonic() - self._last_pending_at > _QUIET_PENDING_INTERVAL:
                    self._report_progress(result.requester_lost)
                continue
            if isinstance(item, PeerFinished):
                result.outcome = item.outcome
                return result
            self._forward(item)
            self._report_progress(result.requester_lost)

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
        if not requester_lost:
            self._requester.send_pending(self.counts, self.remaining())

    def remaining(self) -> int:
        """Return the sub-operations not yet done: announced by the peer, or queued."""
        done = self.counts.completed + self.counts.failed + self.counts.warning
        queued = max(len(self.job.received_uids) - done, 0)
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

    def _empty_inbox(self, keep: bool) -> None:
        """Remove instances not yet sent on; unless `keep`, drop their rows and files.

        Kept instances stay in the retry queue, and the delivery job sends
        them once the move has released its rows.
        """
        while True:
            try:
                item = self.job.inbox.get_nowait()
            except queue.Empty:
                return
            if isinstance(item, ReceivedInstance) and not keep:
                self._queue.dropped(item)
