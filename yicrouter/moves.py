"""Retrieves in progress, and the matching of incoming C-STOREs to their retrieve.

A MoveJob is one C-MOVE or C-GET that a workstation sent to the router.

The router asks a peer to C-MOVE with the router's own AE title as the Move
Destination, so the peer's C-STORE sub-operations arrive on a separate
association. Each one is matched to its move by Move Originator AE Title and
Move Originator Message ID (PS3.7 9.3.1.1) when the peer sends them. Many
peers leave them out, so the fallback takes the oldest move from that peer
whose identifier covers the instance and that has not yet received it.
"""

from __future__ import annotations

import itertools
import queue
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from yicrouter.config import PeerSettings, WorkstationSettings
from yicrouter.peer_move import MoveOutcome, MoveProgress
from yicrouter.query import Query


# Prefix of the spool folders of jobs whose instances have no retry-queue rows.
GET_SPOOL_PREFIX = "get-"

# States of a MoveJob. A FINISHED job takes no new C-STOREs, and a C-STORE
# that was in progress when it closed goes to the retry queue for the
# delivery job. A CANCELLED job refuses even those (PS3.4 C.4.2.3: no
# C-STORE sub-operation may follow a C-CANCEL).
OPEN = "open"
FINISHED = "finished"
CANCELLED = "cancelled"


@dataclass(frozen=True)
class InstanceKeys:
    """The keys of a received instance that decide which move it belongs to."""

    patient_id: str
    study_uid: str
    series_uid: str
    sop_instance_uid: str


@dataclass(frozen=True)
class ReceivedInstance:
    path: Path
    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax: str
    size: int
    # The instance's row in the retry queue; 0 when it has none.
    entry_id: int = 0


@dataclass(frozen=True)
class PeerFinished:
    """Put in a move's inbox when the peer's C-MOVE has ended."""

    peer: PeerSettings
    outcome: MoveOutcome


@dataclass
class MoveJob:
    requester_ae_title: str
    requester_message_id: int
    # The workstation that receives the instances: the Move Destination of a
    # C-MOVE, or the requester itself for a C-GET.
    destination: WorkstationSettings
    query: Query
    upstream_message_id: int
    peer: PeerSettings | None = None
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    inbox: "queue.Queue[ReceivedInstance | PeerFinished]" = field(default_factory=queue.Queue)
    received_uids: set[str] = field(default_factory=set)
    peer_progress: MoveProgress = field(default_factory=MoveProgress)
    # True when received instances get retry-queue rows, so that a failed
    # forward is retried later. A C-GET sends back on the requester's own
    # association, which is gone by then, so its instances get no rows and
    # a failed sub-operation stays failed.
    durable: bool = True
    # OPEN while the relay takes instances; FINISHED or CANCELLED once closed.
    state: str = OPEN
    # C-STOREs matched to this job whose handler has not yet put the instance
    # in the inbox or refused it.
    stores_in_progress: int = 0
    # Instances put in the inbox: each one is the relay's to count.
    handed_over: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @property
    def accepting(self) -> bool:
        return self.state == OPEN

    def begin_store(self) -> bool:
        """Count a C-STORE for this job as in progress; return False once the job is closed."""
        with self._lock:
            if self.state != OPEN:
                return False
            self.stores_in_progress += 1
            return True

    def hand_over(self, instance: ReceivedInstance) -> str:
        """End a C-STORE begun with begin_store() and return the job's state.

        While the job is OPEN the instance goes into the inbox. Otherwise the
        caller owns the instance: the relay has counted it when it closed the
        job (see close()).
        """
        with self._lock:
            self.stores_in_progress -= 1
            if self.state == OPEN:
                self.inbox.put(instance)
                self.handed_over += 1
            return self.state

    def abandon_store(self) -> None:
        """End a C-STORE begun with begin_store() that was refused before its hand-over."""
        with self._lock:
            self.stores_in_progress -= 1

    def close(self, cancelled: bool) -> int:
        """Take no more instances, and return the C-STOREs still in progress.

        After this returns the inbox gets nothing new, and handed_over is final.
        """
        with self._lock:
            if self.state == OPEN:
                self.state = CANCELLED if cancelled else FINISHED
            return self.stores_in_progress

    @property
    def queue_owner(self) -> str:
        """Return the owner name of this move's rows in the retry queue."""
        return f"move:{self.id}"

    @property
    def spool_folder(self) -> str:
        """Return the name of this job's folder in the spool.

        Folders of jobs without retry-queue rows start with GET_SPOOL_PREFIX,
        so that start-up can delete those that a stopped process left behind.
        """
        return self.id if self.durable else f"{GET_SPOOL_PREFIX}{self.id}"

    def covers(self, keys: InstanceKeys) -> bool:
        """Return True if the move's identifier selects this instance."""
        checks = {
            "PatientID": keys.patient_id,
            "StudyInstanceUID": keys.study_uid,
            "SeriesInstanceUID": keys.series_uid,
            "SOPInstanceUID": keys.sop_instance_uid,
        }
        for keyword, value in checks.items():
            wanted = self.query.key_values(keyword)
            if wanted and value not in wanted:
                return False
        return True


class MoveRegistry:
    """The moves in progress, shared by the C-MOVE and C-STORE handlers."""

    def __init__(self, router_ae_title: str) -> None:
        self._router_ae_title = router_ae_title
        self._lock = threading.Lock()
        self._jobs: dict[int, MoveJob] = {}
        self._order = itertools.count()
        self._ranks: dict[str, int] = {}
        self._next_id = 0

    def allocate_message_id(self) -> int:
        """Return a Message ID (1 to 65535) that no running move uses upstream."""
        with self._lock:
            for _ in range(65535):
                self._next_id = self._next_id % 65535 + 1
                if self._next_id not in self._jobs:
                    return self._next_id
        raise RuntimeError("all 65535 Message IDs are in use by running moves")

    def add(self, job: MoveJob) -> None:
        with self._lock:
            self._jobs[job.upstream_message_id] = job
            self._ranks[job.id] = next(self._order)

    def remove(self, job: MoveJob) -> None:
        with self._lock:
            self._jobs.pop(job.upstream_message_id, None)
            self._ranks.pop(job.id, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._jobs)

    def claim(
        self,
        calling_ae_title: str,
        originator_ae_title: str | None,
        originator_message_id: int | None,
        keys: InstanceKeys,
    ) -> MoveJob | None:
        """Return the open move that an incoming instance belongs to, with its C-STORE begun.

        The caller ends the C-STORE with job.hand_over() or job.abandon_store().
        Returns None when no open move expects the instance, including when its
        Move Originator fields name a move that has closed.
        """
        with self._lock:
            job = self._by_originator(originator_ae_title, originator_message_id, keys)
            if job is None and not self._names_ended_move(originator_ae_title, originator_message_id):
                job = self._by_fallback(calling_ae_title.strip(), keys)
            if job is None or not job.begin_store():
                return None
            job.received_uids.add(keys.sop_instance_uid)
            return job

    def _by_originator(
        self, originator_ae_title: str | None, message_id: int | None, keys: InstanceKeys
    ) -> MoveJob | None:
        if not originator_ae_title or message_id is None:
            return None
        if originator_ae_title.strip() != self._router_ae_title:
            return None
        job = self._jobs.get(int(message_id))
        if job is not None and job.covers(keys):
            return job
        return None

    def _names_ended_move(self, originator_ae_title: str | None, message_id: int | None) -> bool:
        """Return True when the Move Originator fields name a move of this router that is gone.

        Such an instance belongs to that move, so the fallback must not hand
        it to a later move of the same study.
        """
        if not originator_ae_title or message_id is None:
            return False
        return originator_ae_title.strip() == self._router_ae_title and int(message_id) not in self._jobs

    def _by_fallback(self, calling_ae_title: str, keys: InstanceKeys) -> MoveJob | None:
        candidates = [
            job for job in self._jobs.values()
            if job.accepting and job.covers(keys) and keys.sop_instance_uid not in job.received_uids
        ]
        from_peer = [j for j in candidates if j.peer is not None and j.peer.ae_title == calling_ae_title]
        pool = from_peer or candidates
        if not pool:
            return None
        return min(pool, key=lambda job: self._ranks[job.id])
