"""The durable retry queue: one row per received instance until it is delivered.

A row is committed before the peer gets C-STORE Success, so the database and
the spool together hold every instance the router has acknowledged. States:

- `in_flight`: a worker (a running move, or the delivery job) owns the row
  until `lease_expires_at`;
- `queued`: waiting for `next_attempt_at`;
- `dead`: past the retry limits; kept with its file until an administrator
  retries or purges it.

Delivered rows are deleted. Rows are claimed with one atomic UPDATE that sets
state, owner and lease together, never with a read followed by a write, so
several routers can share one database without sending a row twice.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import peewee

from yicrouter.db import BaseModel, session

IN_FLIGHT = "in_flight"
QUEUED = "queued"
DEAD = "dead"
STATES = (IN_FLIGHT, QUEUED, DEAD)


def utc_now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


class QueueEntry(BaseModel):
    """One received instance on its way to one destination."""

    id = peewee.AutoField()
    sop_instance_uid = peewee.CharField()
    sop_class_uid = peewee.CharField()
    transfer_syntax = peewee.CharField()
    path = peewee.CharField()
    size = peewee.BigIntegerField(default=0)
    # AE title of the Move Destination, a configured workstation.
    destination = peewee.CharField()
    # Move Originator AE Title and Message ID for the C-STORE to the destination.
    originator_ae_title = peewee.CharField(default="")
    originator_message_id = peewee.IntegerField(default=0)
    move_id = peewee.CharField(default="")
    state = peewee.CharField()
    # 1 while the row is queued or in flight, NULL once dead. A unique index
    # over (instance, destination, live) allows one live row per instance and
    # destination, and any number of dead ones, in SQLite and PostgreSQL alike.
    live = peewee.IntegerField(null=True, default=1)
    attempts = peewee.IntegerField(default=0)
    next_attempt_at = peewee.DateTimeField()
    last_error = peewee.TextField(default="")
    owner = peewee.CharField(default="")
    lease_expires_at = peewee.DateTimeField(null=True)
    created_at = peewee.DateTimeField()
    updated_at = peewee.DateTimeField()

    class Meta:
        table_name = "queue_entry"
        indexes = (
            (("sop_instance_uid", "destination", "live"), True),
            (("state", "destination", "next_attempt_at"), False),
        )


@dataclass(frozen=True)
class RetryPolicy:
    """Backoff and limits; times in seconds."""

    base: float = 30.0
    maximum: float = 3600.0
    max_attempts: int = 20
    max_age: float = 259200.0

    def delay(self, attempts: int, rng: random.Random) -> float:
        """Return the wait before the next attempt: exponential, capped, with jitter.

        The jitter draws from half to all of the capped delay, so routers that
        failed together do not retry together.
        """
        capped = min(self.maximum, self.base * float(2 ** max(attempts - 1, 0)))
        return float(capped * (0.5 + rng.random() / 2))


def _database() -> peewee.Database:
    database: peewee.Database = QueueEntry._meta.database
    return database


def enqueue(
    *,
    sop_instance_uid: str,
    sop_class_uid: str,
    transfer_syntax: str,
    path: str,
    size: int,
    destination: str,
    originator: tuple[str, int],
    move_id: str,
    owner: str,
    lease_seconds: float,
    now: datetime | None = None,
) -> tuple[int, str | None]:
    """Record a received instance as in flight for `owner`; commit before returning.

    Returns the row id and, when a live row for the same instance and
    destination existed, the path of its older file, which the caller
    deletes: re-delivery of an instance replaces the queued copy.
    """
    now = now or utc_now()
    fields = {
        "sop_class_uid": sop_class_uid, "transfer_syntax": transfer_syntax, "path": path, "size": size,
        "originator_ae_title": originator[0], "originator_message_id": originator[1],
        "move_id": move_id, "state": IN_FLIGHT, "owner": owner,
        "lease_expires_at": now + timedelta(seconds=lease_seconds),
        "next_attempt_at": now, "updated_at": now,
    }
    return _insert_or_replace(sop_instance_uid, destination, path, now, fields)


def _insert_or_replace(
    sop_instance_uid: str, destination: str, path: str, now: datetime, fields: dict[str, Any]
) -> tuple[int, str | None]:
    """Insert the live row of an instance and destination, or update the one that exists."""
    # Each statement commits on its own. A transaction that reads before it
    # writes can fail at once with "database is locked" in SQLite's WAL mode,
    # without waiting for busy_timeout, so the insert comes first.
    with session(_database()):
        try:
            entry = QueueEntry.create(
                sop_instance_uid=sop_instance_uid, destination=destination, created_at=now, live=1, **fields
            )
            return int(entry.id), None
        except peewee.IntegrityError:
            pass
        existing = QueueEntry.get(
            (QueueEntry.sop_instance_uid == sop_instance_uid)
            & (QueueEntry.destination == destination) & (QueueEntry.live == 1)
        )
        old_path = str(existing.path)
        QueueEntry.update(**fields).where(QueueEntry.id == existing.id).execute()
        return int(existing.id), (old_path if old_path != path else None)


def mark_delivered(entry_id: int) -> None:
    with session(_database()):
        QueueEntry.delete().where(QueueEntry.id == entry_id).execute()


def mark_failed(
    entry_id: int, error: str, policy: RetryPolicy, rng: random.Random, now: datetime | None = None
) -> str:
    """Count a failed attempt and schedule the next one; return the new state."""
    now = now or utc_now()
    # The caller owns the row, so reading and then writing it needs no
    # transaction; see enqueue() for why one would hurt in SQLite.
    with session(_database()):
        entry = QueueEntry.get_or_none(QueueEntry.id == entry_id)
        if entry is None:
            return DEAD
        attempts = int(entry.attempts) + 1
        age = (now - entry.created_at).total_seconds()
        if attempts >= policy.max_attempts or age >= policy.max_age:
            state, live, next_attempt = DEAD, None, now
        else:
            state, live = QUEUED, 1
            next_attempt = now + timedelta(seconds=policy.delay(attempts, rng))
        QueueEntry.update(
            state=state, live=live, attempts=attempts, next_attempt_at=next_attempt,
            last_error=error[:500], owner="", lease_expires_at=None, updated_at=now,
        ).where(QueueEntry.id == entry_id).execute()
        return state


def release(owner: str | None = None, now: datetime | None = None) -> int:
    """Put rows in flight back to queued, due at once; all rows when owner is None.

    Returns how many rows were released. Used at start-up, where anything in
    flight belonged to a process that is gone, and when a move ends early.
    """
    now = now or utc_now()
    condition = QueueEntry.state == IN_FLIGHT
    if owner is not None:
        condition &= QueueEntry.owner == owner
    with session(_database()):
        return int(
            QueueEntry.update(state=QUEUED, owner="", lease_expires_at=None, next_attempt_at=now, updated_at=now)
            .where(condition)
            .execute()
        )


def _claimable(now: datetime) -> peewee.Expression:
    due = (QueueEntry.state == QUEUED) & (QueueEntry.next_attempt_at <= now)
    expired = (QueueEntry.state == IN_FLIGHT) & (QueueEntry.lease_expires_at < now)
    return due | expired


def due_destinations(now: datetime | None = None) -> list[str]:
    now = now or utc_now()
    with session(_database()):
        query = QueueEntry.select(QueueEntry.destination).where(_claimable(now)).distinct()
        return sorted(str(row.destination) for row in query)


def claim(
    owner: str, destination: str, limit: int, lease_seconds: float, now: datetime | None = None
) -> list[QueueEntry]:
    """Claim up to `limit` due rows for `destination` and return them, oldest first.

    The UPDATE repeats the due condition in its own WHERE clause, so a row
    that another worker claimed between the sub-select and the update is
    left alone.
    """
    now = now or utc_now()
    candidates = (
        QueueEntry.select(QueueEntry.id)
        .where(_claimable(now) & (QueueEntry.destination == destination))
        .order_by(QueueEntry.next_attempt_at, QueueEntry.id)
        .limit(limit)
    )
    with session(_database()):
        (
            QueueEntry.update(
                state=IN_FLIGHT, owner=owner,
                lease_expires_at=now + timedelta(seconds=lease_seconds), updated_at=now,
            )
            .where(QueueEntry.id.in_(candidates) & _claimable(now))
            .execute()
        )
        claimed = (
            QueueEntry.select()
            .where((QueueEntry.owner == owner) & (QueueEntry.state == IN_FLIGHT)
                   & (QueueEntry.destination == destination))
            .order_by(QueueEntry.id)
        )
        return list(claimed)


def depth() -> dict[str, int]:
    """Return the number of rows in each state."""
    with session(_database()):
        query = QueueEntry.select(QueueEntry.state, peewee.fn.COUNT(QueueEntry.id).alias("count")).group_by(
            QueueEntry.state
        )
        counts = {state: 0 for state in STATES}
        counts.update({str(row.state): int(getattr(row, "count")) for row in query})
        return counts


# --- Administration: the queries and single-statement changes behind `yicrouter queue`.
# Each change is one UPDATE or DELETE whose WHERE clause repeats its condition,
# so it is atomic against a router that claims rows at the same time.

# Outcomes of reschedule().
SCHEDULED = "scheduled"
NOT_FOUND = "not_found"
DUPLICATE_DELETED = "duplicate_deleted"


def select_entries(
    *,
    ids: list[int] | None = None,
    state: str | None = None,
    destination: str | None = None,
    limit: int | None = None,
) -> list[QueueEntry]:
    """Return the rows that match every given filter, newest first."""
    query = QueueEntry.select().order_by(QueueEntry.created_at.desc(), QueueEntry.id.desc())
    conditions = _filters(ids=ids, state=state, destination=destination)
    if conditions:
        query = query.where(*conditions)
    if limit is not None:
        query = query.limit(limit)
    with session(_database()):
        return list(query)


def count_entries(*, state: str | None = None, destination: str | None = None) -> int:
    query = QueueEntry.select()
    conditions = _filters(state=state, destination=destination)
    if conditions:
        query = query.where(*conditions)
    with session(_database()):
        return int(query.count())


def _filters(
    *, ids: list[int] | None = None, state: str | None = None, destination: str | None = None
) -> list[peewee.Expression]:
    conditions: list[peewee.Expression] = []
    if ids:
        conditions.append(QueueEntry.id.in_(ids))
    if state is not None:
        conditions.append(QueueEntry.state == state)
    if destination is not None:
        conditions.append(QueueEntry.destination == destination)
    return conditions


def get_entry(entry_id: int) -> QueueEntry | None:
    with session(_database()):
        entry: QueueEntry | None = QueueEntry.get_or_none(QueueEntry.id == entry_id)
        return entry


def reschedule(entry_id: int, now: datetime | None = None) -> str:
    """Make a queued or dead row due now with its attempts reset, and return the outcome.

    Returns SCHEDULED, IN_FLIGHT for a row that a worker owns (left alone),
    NOT_FOUND, or DUPLICATE_DELETED. The last one means that the row was dead
    and its instance already has a live row for the same destination, so the
    dead row was deleted to keep one live row per instance and destination.
    The caller then deletes the dead row's file if no other row uses it.
    """
    now = now or utc_now()
    with session(_database()):
        try:
            changed = (
                QueueEntry.update(
                    state=QUEUED, live=1, attempts=0, next_attempt_at=now,
                    owner="", lease_expires_at=None, updated_at=now,
                )
                .where((QueueEntry.id == entry_id) & (QueueEntry.state != IN_FLIGHT))
                .execute()
            )
        except peewee.IntegrityError:
            # Only a dead row (live NULL) can collide on the unique index when set live.
            deleted = QueueEntry.delete().where((QueueEntry.id == entry_id) & (QueueEntry.state == DEAD)).execute()
            return DUPLICATE_DELETED if deleted else NOT_FOUND
        if changed:
            return SCHEDULED
        entry = QueueEntry.get_or_none(QueueEntry.id == entry_id)
        return NOT_FOUND if entry is None else IN_FLIGHT


def delete_entry(entry_id: int, path: str, include_in_flight: bool = False) -> bool:
    """Delete one row if it still has this spool path, and return whether it was deleted.

    A row in flight is kept unless `include_in_flight` is set. Matching the
    path as well keeps a row alone that a new delivery of the same instance
    pointed at a new file after the caller read it.
    """
    condition = (QueueEntry.id == entry_id) & (QueueEntry.path == path)
    if not include_in_flight:
        condition &= QueueEntry.state != IN_FLIGHT
    with session(_database()):
        return bool(QueueEntry.delete().where(condition).execute())


def path_in_use(path: str) -> bool:
    """Return whether any row still refers to this spool file."""
    with session(_database()):
        return bool(QueueEntry.select(QueueEntry.id).where(QueueEntry.path == path).exists())


def depth_by_destination() -> dict[str, dict[str, int]]:
    """Return the number of rows in each state for each destination."""
    query = (
        QueueEntry.select(QueueEntry.destination, QueueEntry.state, peewee.fn.COUNT(QueueEntry.id).alias("count"))
        .group_by(QueueEntry.destination, QueueEntry.state)
    )
    counts: dict[str, dict[str, int]] = {}
    with session(_database()):
        for row in query:
            by_state = counts.setdefault(str(row.destination), {state: 0 for state in STATES})
            by_state[str(row.state)] = int(getattr(row, "count"))
    return counts


def oldest_queued() -> QueueEntry | None:
    """Return the queued row that arrived first, or None when no row is queued."""
    with session(_database()):
        entry: QueueEntry | None = (
            QueueEntry.select()
            .where(QueueEntry.state == QUEUED)
            .order_by(QueueEntry.created_at, QueueEntry.id)
            .first()
        )
        return entry
