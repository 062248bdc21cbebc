"""The retry queue's rules: one live row per instance and destination, backoff, dead letters, claims.

These run against a real SQLite database in WAL mode, as the router uses it,
with the clock passed in rather than patched.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from yicrouter import retry_queue
from yicrouter.db import open_database
from yicrouter.retry_queue import DEAD, IN_FLIGHT, QUEUED, QueueEntry, RetryPolicy
from yicrouter.routing import Location

START = datetime(2026, 1, 1, 12, 0, 0)


@pytest.fixture(autouse=True)
def database(tmp_path: Path) -> Iterator[None]:
    open_database(tmp_path, [Location, QueueEntry])
    yield


def _enqueue(sop_uid: str = "1.2.3.1", destination: str = "WS1", path: str = "/spool/a.dcm",
             owner: str = "move:1", now: datetime = START) -> tuple[int, str | None]:
    return retry_queue.enqueue(
        sop_instance_uid=sop_uid, sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        transfer_syntax="1.2.840.10008.1.2.1", path=path, size=10, destination=destination,
        originator=("WS1", 7), move_id="m1", owner=owner, lease_seconds=60.0, now=now,
    )


def _state(entry_id: int) -> str:
    with QueueEntry._meta.database.connection_context():
        return str(QueueEntry.get_by_id(entry_id).state)


def test_enqueue_creates_in_flight_row() -> None:
    entry_id, replaced = _enqueue()
    assert replaced is None
    assert _state(entry_id) == IN_FLIGHT


def test_same_instance_twice_keeps_one_row() -> None:
    first_id, _ = _enqueue(path="/spool/old.dcm")
    second_id, replaced = _enqueue(path="/spool/new.dcm")
    assert second_id == first_id
    assert replaced == "/spool/old.dcm"
    assert retry_queue.depth()[IN_FLIGHT] == 1


def test_same_instance_other_destination_separate() -> None:
    first_id, _ = _enqueue(destination="WS1")
    second_id, _ = _enqueue(destination="WS2")
    assert first_id != second_id


def test_backoff_grows_and_caps() -> None:
    policy = RetryPolicy(base=10.0, maximum=60.0)
    rng = random.Random(1)
    delays = [policy.delay(attempt, rng) for attempt in range(1, 7)]
    assert 5.0 <= delays[0] <= 10.0
    assert 10.0 <= delays[1] <= 20.0
    assert all(30.0 <= delay <= 60.0 for delay in delays[3:])


def test_failure_schedules_next_attempt() -> None:
    entry_id, _ = _enqueue()
    state = retry_queue.mark_failed(entry_id, "refused", RetryPolicy(base=10.0), random.Random(1), now=START)
    assert state == QUEUED
    assert retry_queue.due_destinations(now=START) == []
    assert retry_queue.due_destinations(now=START + timedelta(seconds=11)) == ["WS1"]


def test_attempt_limit_makes_dead_letter() -> None:
    entry_id, _ = _enqueue()
    policy = RetryPolicy(base=1.0, max_attempts=3)
    states = [retry_queue.mark_failed(entry_id, "refused", policy, random.Random(1), now=START)
              for _ in range(3)]
    assert states == [QUEUED, QUEUED, DEAD]
    assert retry_queue.depth()[DEAD] == 1


def test_age_limit_makes_dead_letter() -> None:
    entry_id, _ = _enqueue(now=START)
    later = START + timedelta(seconds=101)
    state = retry_queue.mark_failed(entry_id, "refused", RetryPolicy(max_age=100.0), random.Random(1), now=later)
    assert state == DEAD


def test_dead_letter_allows_new_live_row() -> None:
    entry_id, _ = _enqueue()
    retry_queue.mark_failed(entry_id, "refused", RetryPolicy(max_attempts=1), random.Random(1), now=START)
    new_id, replaced = _enqueue()
    assert new_id != entry_id
    assert replaced is None


def test_release_returns_rows_to_queue() -> None:
    entry_id, _ = _enqueue(owner="move:9")
    released = retry_queue.release(owner="move:9", now=START)
    assert released == 1
    assert _state(entry_id) == QUEUED


def test_claim_takes_each_row_once() -> None:
    for index in range(10):
        _enqueue(sop_uid=f"1.2.3.{index}")
    retry_queue.release(now=START)
    claimed: dict[str, list[int]] = {}

    def claim(owner: str) -> None:
        rows = retry_queue.claim(owner, "WS1", limit=10, lease_seconds=60.0, now=START + timedelta(seconds=1))
        claimed[owner] = [int(row.id) for row in rows]

    workers = [threading.Thread(target=claim, args=(f"worker-{n}",)) for n in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    all_ids = [entry_id for ids in claimed.values() for entry_id in ids]
    assert sorted(all_ids) == sorted(set(all_ids))
    assert len(all_ids) == 10


def test_expired_lease_claimable_again() -> None:
    entry_id, _ = _enqueue(now=START)
    too_soon = retry_queue.claim("delivery:1", "WS1", 10, 60.0, now=START + timedelta(seconds=30))
    after_lease = retry_queue.claim("delivery:2", "WS1", 10, 60.0, now=START + timedelta(seconds=61))
    assert too_soon == []
    assert [int(row.id) for row in after_lease] == [entry_id]
