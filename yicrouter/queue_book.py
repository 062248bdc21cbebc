"""Bookkeeping of forward outcomes in the retry queue and the spool.

Every outcome touches both: a delivered instance loses its row and its file,
a failed one keeps its file and gets its next attempt scheduled, and a
dropped one (its move was cancelled) loses both. A database fault is logged
and never stops a move: the row then stays as it was, so at worst an
instance is sent again, never lost.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import peewee

from yicrouter import retry_queue
from yicrouter.logs import get_logger
from yicrouter.moves import ReceivedInstance
from yicrouter.spool import Spool

log = get_logger(__name__)


class QueueBook:
    def __init__(self, spool: Spool, policy: retry_queue.RetryPolicy, log_context: dict[str, object]) -> None:
        self._spool = spool
        self._policy = policy
        self._rng = random.Random()
        self._log = log.bind(**log_context)

    def delivered(self, instance: ReceivedInstance) -> None:
        if self._update(instance, lambda: retry_queue.mark_delivered(instance.entry_id)):
            self._spool.discard(instance.path)

    def failed(self, instance: ReceivedInstance, reason: str) -> str | None:
        """Schedule the next attempt; return the new state, or None when the database failed."""
        states: list[str] = []
        self._update(instance, lambda: states.append(
            retry_queue.mark_failed(instance.entry_id, reason, self._policy, self._rng)))
        if states and states[0] == retry_queue.DEAD:
            self._log.error("dead_letter", sop_instance_uid=instance.sop_instance_uid,
                            entry_id=instance.entry_id, path=str(instance.path), reason=reason)
        return states[0] if states else None

    def dropped(self, instance: ReceivedInstance) -> None:
        if self._update(instance, lambda: retry_queue.mark_delivered(instance.entry_id)):
            self._spool.discard(instance.path)

    def _update(self, instance: ReceivedInstance, change: Callable[[], object]) -> bool:
        if instance.entry_id == 0:
            return True
        try:
            change()
        except peewee.PeeweeException as exc:
            self._log.error("queue_write_failed", sop_instance_uid=instance.sop_instance_uid,
                            entry_id=instance.entry_id, error=str(exc))
            return False
        return True


def release_rows(owner: str, log_context: dict[str, object]) -> None:
    """Hand a finished move's rows still in flight to the delivery job."""
    try:
        released = retry_queue.release(owner=owner)
    except peewee.PeeweeException as exc:
        log.error("queue_write_failed", **log_context, owner=owner, error=str(exc))
        return
    if released:
        log.info("queue_rows_released", **log_context, owner=owner, entries=released)
