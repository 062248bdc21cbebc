"""Bookkeeping of forward outcomes in the retry queue and the spool.

Every outcome touches both: a delivered instance loses its row and its file,
a failed one keeps its file and gets its next attempt scheduled, and a
dropped one (its move was cancelled) loses both, as do all rows of a
cancelled move. A database fault is logged
and never stops a move: the row then stays as it was, so at worst an
instance is sent again, never lost.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

import peewee

from yicrouter import retry_queue
from yicrouter.db import session
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

    def purge_move(self, move_id: str, owner: str) -> int:
        """Delete every row of a cancelled move and its file; return how many rows went.

        A row that the delivery job has claimed is being sent already, so it
        is left alone.

        NOTE: when this move received an instance that an earlier move had
        queued for the same destination, enqueue() gave it that row, so the
        purge deletes the earlier move's only copy too. Keeping it needs the
        row to record which move created it. Comparing times is not enough
        when moves overlap.
        """
        entry = retry_queue.QueueEntry
        mine = (entry.move_id == move_id) & ((entry.state != retry_queue.IN_FLIGHT) | (entry.owner == owner))
        try:
            with session(entry._meta.database):
                rows = [(int(row.id), str(row.path)) for row in entry.select(entry.id, entry.path).where(mine)]
                purged = [(entry_id, path) for entry_id, path in rows
                          if entry.delete().where(mine & (entry.id == entry_id)).execute()]
            for _, path in purged:
                if not retry_queue.path_in_use(path):
                    self._spool.discard(Path(path))
        except peewee.PeeweeException as exc:
            self._log.error("queue_write_failed", owner=owner, error=str(exc))
            return 0
        if purged:
            self._log.info("queue_rows_purged", owner=owner, entries=len(purged),
                           reason="the move was cancelled, so its instances are not sent")
        return len(purged)

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
