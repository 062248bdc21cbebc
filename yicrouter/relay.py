"""The C-MOVE relay loop: peer C-MOVE in, C-STOREs out, live counts back.

It runs in the requester's association thread, while a helper thread runs the
C-MOVE at the peer. The C-STORE handler puts each received instance into the
move's inbox. This loop forwards it to the Move Destination at once, then
sends a Pending response with the router's own counts. The final response goes out
only after the last forward has finished.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from yicrouter import status
from yicrouter.config import PeerSettings
from yicrouter.forwarder import Forwarder
from yicrouter.logs import get_logger
from yicrouter.moves import MoveJob, PeerFinished, ReceivedInstance
from yicrouter.peer_client import MoveOutcome, MoveProgress, PeerMove
from yicrouter.queue_book import QueueBook

log = get_logger(__name__)

# Seconds between checks for C-CANCEL and a lost requester while idle.
_POLL_INTERVAL = 0.2
# Seconds without a Pending response after which the router sends one with
# unchanged counts, so a requester waiting on a slow peer (for example one
# large instance) learns that the move is still running.
_QUIET_PENDING_INTERVAL = 5.0


@dataclass
class MoveCounts:
    """Sub-operation counts from the router's own C-STOREs to the destination."""

    completed: int = 0
    failed: int = 0
    warning: int = 0
    failed_uids: list[str] = field(default_factory=list)
    bytes_forwarded: int = 0
    # Instances received but not forwarded, now in the retry queue.
    queued_for_retry: int = 0

    def add(self, instance: ReceivedInstance, store_status: int) -> None:
        if status.is_success(store_status):
            self.completed += 1
            self.bytes_forwarded += instance.size
        elif status.is_warning(store_status):
            self.warning += 1
            self.bytes_forwarded += instance.size
        else:
            self.failed += 1
            self.failed_uids.append(instance.sop_instance_uid)
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


class MoveRelay:
    def __init__(
        self,
        job: MoveJob,
        peers: list[PeerSettings],
        forwarder: Forwarder,
        queue_book: QueueBook,
        local_ae_title: str,
        max_pdu: int,
        send_pending: Callable[[MoveCounts, int], None],
        is_cancelled: Callable[[], bool],
        requester_alive: Callable[[], bool],
        router_stopping: Callable[[], bool],
        log_context: dict[str, object],
    ) -> None:
        self.job = job
        self._peers = peers
        self._forwarder = forwarder
        self._queue = queue_book
        self._local_ae_title = local_ae_title
        self._max_pdu = max_pdu
        self._send_pending = send_pending
        self._is_cancelled = is_cancelled
        self._requester_alive = requester_alive
        self._router_stopping = router_stopping
        self._log = log.bind(**log_context)
        self._current: PeerMove | None = None
        self._stop = threading.Event()
        self._last_pending_at = time.monotonic()
        self.counts = MoveCounts()

    def run(self) -> RelayResult:
        """Relay until the peer has finished and every received instance is forwarded.

        A requester that goes away does not stop the move: the Move
        Destination still gets the study, and only the responses stop.
        """
        threading.Thread(target=self._run_peer_moves, name=f"move-{self.job.id}", daemon=True).start()
        deadline = time.monotonic() + max(p.move_deadline for p in self._peers)
        result = RelayResult(self.counts, None, self.job)
        while True:
            if not result.requester_lost and not self._requester_alive():
                result.requester_lost = True
                self._log.warning("move_requester_lost", reason="the requester's association closed")
            if not result.requester_lost and self._is_cancelled():
                result.cancelled = True
            elif time.monotonic() > deadline:
                result.timed_out = True
            elif self._router_stopping():
                result.router_stopping = True
            if result.cancelled or result.timed_out or result.router_stopping:
                self._stop_peer(cancel=not result.timed_out)
                self._empty_inbox(keep=not result.cancelled)
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
        forwarded = self._forwarder.send(instance)
        self.counts.add(instance, forwarded.status)
        if status.is_failure(forwarded.status):
            # The first failure of a move is a warning; the rest would repeat
            # it per instance, so they go to DEBUG and move_completed counts them.
            level = "warning" if self.counts.failed == 1 else "debug"
            getattr(self._log, level)(
                "forward_failed", sop_instance_uid=instance.sop_instance_uid,
                store_status=f"0x{forwarded.status:04X}", reason=forwarded.reason,
                queued_for_retry=True,
            )
            self._queue.failed(instance, forwarded.reason or f"C-STORE status 0x{forwarded.status:04X}")
        else:
            self._queue.delivered(instance)

    def _report_progress(self, requester_lost: bool) -> None:
        self._last_pending_at = time.monotonic()
        if not requester_lost:
            self._send_pending(self.counts, self.remaining())

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
            call = PeerMove(peer, self._local_ae_title, self._max_pdu)
            self._current = call
            outcome = call.run(self.job.query.model, self.job.query.identifier,
                               self.job.upstream_message_id, self._on_progress)
            if not self._should_try_next_peer(outcome):
                break
            self._log.warning("peer_move_failed", peer=peer.name, peer_ae_title=peer.ae_title,
                              reason=outcome.error or f"final status 0x{outcome.final_status:04X}",
                              trying_next_peer=peer is not self._peers[-1])
        self.job.inbox.put(PeerFinished(peer, outcome))

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
        """Remove instances not yet forwarded; drop them too when cancelled.

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
