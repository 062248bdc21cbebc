"""The delivery job: send due instances from the retry queue to their destinations.

apscheduler runs `DeliveryJob.run` every `poll_interval` seconds, never two
at once. Each run claims due rows destination by destination, so the rows of
one destination share one association, and records each outcome.
"""

from __future__ import annotations

import itertools
import os
import random
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import peewee
from apscheduler.schedulers.background import BackgroundScheduler

from yicrouter import retry_queue, status
from yicrouter.config import Config, WorkstationSettings
from yicrouter.forwarder import Forwarder
from yicrouter.logs import get_logger
from yicrouter.moves import ReceivedInstance
from yicrouter.queue_book import QueueBook
from yicrouter.spool import Spool

log = get_logger(__name__)


@dataclass(frozen=True)
class DeliverySettings:
    poll_interval: float = 5.0
    batch_size: int = 100
    # Seconds a claimed row stays leased to this run before another worker may take it.
    lease_seconds: float = 600.0


@dataclass
class DestinationRun:
    delivered: int = 0
    failed: int = 0
    dead: int = 0
    # Why the destination's association failed, or None when it was established.
    unreachable: str | None = None


class DeliveryJob:
    def __init__(self, config: Config, spool: Spool, policy: retry_queue.RetryPolicy,
                 settings: DeliverySettings) -> None:
        self._config = config
        self._spool = spool
        self._policy = policy
        self._settings = settings
        self._node = f"{socket.gethostname()}:{os.getpid()}"
        self._runs = itertools.count(1)
        self._scheduler: BackgroundScheduler | None = None
        # Destinations whose association failed, with the monotonic time
        # before which no run contacts them, and their consecutive failures.
        self._paused_until: dict[str, float] = {}
        self._failures: dict[str, int] = {}
        self._rng = random.Random()

    def start(self) -> None:
        scheduler = BackgroundScheduler(daemon=True)
        scheduler.add_job(self.run, "interval", seconds=self._settings.poll_interval,
                          max_instances=1, coalesce=True, id="delivery")
        scheduler.start()
        self._scheduler = scheduler

    def stop(self) -> None:
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
            self._scheduler = None

    def run(self) -> None:
        """Deliver what is due now; log and survive any database fault."""
        try:
            destinations = retry_queue.due_destinations()
        except peewee.PeeweeException as exc:
            log.error("queue_read_failed", error=str(exc))
            return
        for destination in destinations:
            if self._paused_until.get(destination, 0.0) > time.monotonic():
                continue
            try:
                self._deliver_to(destination)
            except peewee.PeeweeException as exc:
                log.error("queue_write_failed", destination_ae_title=destination, error=str(exc))
            except Exception:  # the job must run again next time, whatever went wrong
                log.exception("queue_delivery_failed", destination_ae_title=destination)

    def _deliver_to(self, destination: str) -> None:
        owner = f"delivery:{self._node}:{next(self._runs)}"
        entries = retry_queue.claim(owner, destination, self._settings.batch_size, self._settings.lease_seconds)
        if not entries:
            return
        workstation = self._config.workstation_by_ae_title(destination)
        log_context: dict[str, object] = {"destination_ae_title": destination, "run": owner}
        book = QueueBook(self._spool, self._policy, log_context)
        outcome = DestinationRun()
        if workstation is None:
            for entry in entries:
                self._record(book, _instance(entry), "destination is no longer a configured workstation", outcome)
        else:
            self._send(workstation, entries, book, outcome, log_context)
        log.info("queue_delivery", **log_context, delivered=outcome.delivered,
                 failed=outcome.failed, dead_letters=outcome.dead)
        self._update_pause(destination, outcome)

    def _update_pause(self, destination: str, outcome: DestinationRun) -> None:
        """Pause a destination whose association failed, so that each run does not try it again.

        Without the pause, a backlog larger than batch_size would open a new
        association attempt on every run, although each row backs off on its own.
        """
        if outcome.unreachable is None:
            self._failures.pop(destination, None)
            self._paused_until.pop(destination, None)
            return
        failures = self._failures.get(destination, 0) + 1
        self._failures[destination] = failures
        delay = self._policy.delay(failures, self._rng)
        self._paused_until[destination] = time.monotonic() + delay
        log.warning("destination_paused", destination_ae_title=destination, seconds=round(delay, 1),
                    consecutive_failures=failures, reason=outcome.unreachable)

    def _send(self, workstation: WorkstationSettings, entries: list[retry_queue.QueueEntry],
              book: QueueBook, outcome: DestinationRun, log_context: dict[str, object]) -> None:
        router = self._config.router
        forwarder = Forwarder(workstation, router.ae_title, router.max_pdu, ("", 0), log_context)
        try:
            for entry in entries:
                instance = _instance(entry)
                if not instance.path.exists():
                    self._record(book, instance, f"spool file is missing: {instance.path}", outcome)
                    continue
                result = forwarder.send(instance, (str(entry.originator_ae_title), int(entry.originator_message_id)))
                if status.is_failure(result.status):
                    self._record(book, instance, result.reason or f"C-STORE status 0x{result.status:04X}", outcome)
                else:
                    book.delivered(instance)
                    outcome.delivered += 1
        finally:
            outcome.unreachable = forwarder.unreachable_reason
            forwarder.close()

    def _record(self, book: QueueBook, instance: ReceivedInstance, reason: str, outcome: DestinationRun) -> None:
        state = book.failed(instance, reason)
        outcome.failed += 1
        if state == retry_queue.DEAD:
            outcome.dead += 1


def _instance(entry: retry_queue.QueueEntry) -> ReceivedInstance:
    return ReceivedInstance(
        path=Path(str(entry.path)),
        sop_class_uid=str(entry.sop_class_uid),
        sop_instance_uid=str(entry.sop_instance_uid),
        transfer_syntax=str(entry.transfer_syntax),
        size=int(entry.size),
        entry_id=int(entry.id),
    )
