"""C-FIND fan-out: each peer's plan runs at once, matches merged as they arrive.

Each peer runs its PeerPlan (yicrouter.dialect) in its own thread, on
one association, with its own deadline. A peer that is down, rejects the
association, aborts or misses its deadline is reported in
`FanoutResult.failed_peers`; the other peers' matches still flow.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from pydicom.dataset import Dataset

from yicrouter.config import PeerSettings
from yicrouter.logs import get_logger
from yicrouter.peer_find import FindOutcome, PeerFind
from yicrouter.dialect import PeerPlan

log = get_logger(__name__)

# Seconds between checks for C-CANCEL while no peer has anything to send.
_CANCEL_POLL_INTERVAL = 0.1
# Seconds that the fan-out waits, after a C-CANCEL, for the cancelled peers'
# calls to end, so that their request counts can be reported. A peer that
# honours the C-CANCEL is expected to end well within it, and the value
# bounds the delay of the final Cancel response when a peer ignores it.
_CANCEL_SETTLE_SECONDS = 0.5


@dataclass
class FanoutResult:
    peers_asked: list[str] = field(default_factory=list)
    failed_peers: dict[str, str] = field(default_factory=dict)
    # Matches handed on to the consumer, by peer. Matches that arrive after a
    # C-CANCEL or after a peer's deadline are discarded and not counted.
    matches_by_peer: dict[str, int] = field(default_factory=dict)
    # Peers whose reply may have been cut off at max_matches and could not be split.
    truncated_peers: list[str] = field(default_factory=list)
    # C-FIND requests sent, by peer, including peers that were cancelled or
    # missed their deadline once their call has ended.
    requests_by_peer: dict[str, int] = field(default_factory=dict)
    # Peers whose call had not ended when the fan-out returned, so their
    # request counts are unknown and missing from requests_by_peer.
    unfinished_peers: list[str] = field(default_factory=list)
    # STUDY matches whose derivable keys were derived from their series, by peer (see PeerPlan.derive_keys).
    derived_by_peer: dict[str, int] = field(default_factory=dict)
    # STUDY matches whose derivation query failed, by peer.
    derive_failed_by_peer: dict[str, int] = field(default_factory=dict)
    cancelled: bool = False


@dataclass
class _Done:
    peer: str
    outcome: FindOutcome


class Fanout:
    """Run one PeerPlan per peer and merge the matches."""

    def __init__(
        self,
        peers: tuple[PeerSettings, ...],
        local_ae_title: str,
        max_pdu: int,
        log_context: dict[str, object],
    ) -> None:
        self._peers = peers
        self._local_ae_title = local_ae_title
        self._max_pdu = max_pdu
        self._log = log.bind(**log_context)
        self.result = FanoutResult(peers_asked=[p.name for p in peers])
        # The peer calls of the running matches(), by peer name.
        self.calls: dict[str, PeerFind] = {}

    def matches(
        self,
        plans: dict[str, PeerPlan],
        is_cancelled: Callable[[], bool] = lambda: False,
    ) -> Iterator[tuple[str, Dataset]]:
        """Yield (peer name, match) pairs in arrival order; `plans` maps each peer name to its plan."""
        inbox: queue.Queue[tuple[str, Dataset] | _Done] = queue.Queue()
        calls = {p.name: PeerFind(p, self._local_ae_title, self._max_pdu) for p in self._peers}
        self.calls = calls
        started = time.monotonic()
        deadlines = {p.name: started + p.find_deadline for p in self._peers}
        for name, call in calls.items():
            self._start(name, call, plans[name], inbox)

        pending = set(calls)
        unreported = set(calls)
        try:
            while pending:
                if is_cancelled():
                    self._cancel(calls, pending)
                    return
                self._expire(calls, pending, deadlines)
                if not pending:
                    break
                wait = min(deadlines[name] for name in pending) - time.monotonic()
                try:
                    item = inbox.get(timeout=max(0.0, min(wait, _CANCEL_POLL_INTERVAL)))
                except queue.Empty:
                    continue
                if isinstance(item, _Done):
                    self._finish(item, pending, unreported)
                elif item[0] in pending:
                    self.result.matches_by_peer[item[0]] = self.result.matches_by_peer.get(item[0], 0) + 1
                    yield item
        finally:
            # The consumer may stop early, for example when the requester
            # aborts; the peers still running must not run on unattended.
            for name in pending:
                calls[name].abort()
            # Peers aborted here were stopped by the router, so a late report
            # from them only adds its counts and is not logged as a failure.
            pending.clear()
            settle = _CANCEL_SETTLE_SECONDS if self.result.cancelled else 0.0
            self._settle(inbox, pending, unreported, settle)

    def _start(
        self,
        name: str,
        call: PeerFind,
        plan: PeerPlan,
        inbox: "queue.Queue[tuple[str, Dataset] | _Done]",
    ) -> None:
        def failed(reason: str) -> None:
            # The peer's thread reports again when its call ends; _finish
            # then only records the request count.
            inbox.put(_Done(name, FindOutcome(error=reason)))

        call.on_association_failed = failed

        def work() -> None:
            try:
                outcome = call.run_plan(plan, lambda match: inbox.put((name, match)))
            except Exception as exc:  # a fault in one peer's plan must not hang the fan-out
                log.exception("peer_find_error", peer=name, peer_ae_title=call.peer.ae_title)
                outcome = FindOutcome(error=f"unexpected error: {type(exc).__name__}: {exc}")
            inbox.put(_Done(name, outcome))

        threading.Thread(target=work, name=f"find-{name}", daemon=True).start()

    def _finish(self, done: _Done, pending: set[str], unreported: set[str]) -> None:
        """Record a peer's counts and, unless it was already cancelled or expired, its failure."""
        unreported.discard(done.peer)
        self.result.requests_by_peer[done.peer] = done.outcome.requests
        if done.outcome.derived:
            self.result.derived_by_peer[done.peer] = done.outcome.derived
        if done.outcome.derive_failed:
            self.result.derive_failed_by_peer[done.peer] = done.outcome.derive_failed
        if done.peer not in pending:
            return
        pending.discard(done.peer)
        if done.outcome.error:
            self._fail(done.peer, done.outcome.error)
        elif done.outcome.truncated:
            self._report_truncated(done.peer)

    def _settle(
        self,
        inbox: "queue.Queue[tuple[str, Dataset] | _Done]",
        pending: set[str],
        unreported: set[str],
        timeout: float,
    ) -> None:
        """Collect the counts of calls that ended, waiting up to `timeout` seconds for the rest.

        Matches still in the inbox are discarded.
        """
        settle_by = time.monotonic() + timeout
        while unreported:
            try:
                item = inbox.get(timeout=max(0.0, settle_by - time.monotonic()))
            except queue.Empty:
                break
            if isinstance(item, _Done):
                self._finish(item, pending, unreported)
        self.result.unfinished_peers = sorted(unreported)

    def _expire(self, calls: dict[str, PeerFind], pending: set[str], deadlines: dict[str, float]) -> None:
        now = time.monotonic()
        for name in [n for n in pending if deadlines[n] <= now]:
            pending.discard(name)
            calls[name].abort()
            peer = calls[name].peer
            self._fail(name, f"missed its deadline of {peer.find_deadline:g} s")

    def _cancel(self, calls: dict[str, PeerFind], pending: set[str]) -> None:
        """Send C-CANCEL to every running peer and return at once; PeerFind aborts those that don't stop."""
        self.result.cancelled = True
        for name in pending:
            calls[name].cancel()
        self._log.info("peer_finds_cancelled", peers=sorted(pending))
        pending.clear()

    def _report_truncated(self, name: str) -> None:
        self.result.truncated_peers.append(name)
        peer = next(p for p in self._peers if p.name == name)
        self._log.warning(
            "peer_find_truncated", peer=name, peer_ae_title=peer.ae_title, max_matches=peer.max_matches,
            reason="the peer returned max_matches matches and the request could not be split by StudyDate",
        )

    def _fail(self, name: str, reason: str) -> None:
        self.result.failed_peers[name] = reason
        peer = next(p for p in self._peers if p.name == name)
        self._log.warning(
            "peer_find_failed", peer=name, peer_ae_title=peer.ae_title,
            peer_address=f"{peer.host}:{peer.port}", reason=reason,
        )
