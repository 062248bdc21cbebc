"""C-MOVE at one peer, and what C-MOVE and C-GET share: C-CANCEL and the sub-operation counts of the responses."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from pydicom.dataset import Dataset
from pynetdicom.association import Association

from yicrouter import status
from yicrouter.config import PeerSettings
from yicrouter.peer_client import PeerCall, PeerError, context_id
from yicrouter.query import InformationModel, split_values
from yicrouter.reactor import pause_reactor

# The responses of pynetdicom's send_c_move() and send_c_get(): each status with its identifier.
Responses = Iterator[tuple[Dataset, Dataset | None]]


@dataclass
class MoveProgress:
    """The peer's own counts, from its latest C-MOVE response."""

    remaining: int | None = None
    completed: int = 0
    failed: int = 0
    warning: int = 0


@dataclass
class MoveOutcome:
    final_status: int | None = None
    progress: MoveProgress = field(default_factory=MoveProgress)
    failed_uids: list[str] = field(default_factory=list)
    error: str | None = None
    error_comment: str | None = None


def _read_progress(rsp: Dataset) -> MoveProgress:
    def count(keyword: str) -> int:
        value = rsp.get(keyword)
        return int(value) if value is not None else 0

    remaining = rsp.get("NumberOfRemainingSuboperations")
    return MoveProgress(
        remaining=int(remaining) if remaining is not None else None,
        completed=count("NumberOfCompletedSuboperations"),
        failed=count("NumberOfFailedSuboperations"),
        warning=count("NumberOfWarningSuboperations"),
    )


class PeerRetrieve(PeerCall):
    """A C-MOVE or C-GET at one peer, which another thread may cancel or abort."""

    def __init__(self, peer: PeerSettings, local_ae_title: str, max_pdu: int) -> None:
        super().__init__(peer, local_ae_title, max_pdu)
        self.cancel_requested = False
        # The association, Message ID and presentation context ID that a
        # C-CANCEL refers to, once the request is about to be sent.
        self._cancel_target: tuple[Association, int, int] | None = None

    def _send_retrieve(
        self,
        assoc: Association,
        sop_class_uid: str,
        message_id: int,
        send: Callable[[], Responses],
        outcome: MoveOutcome,
        on_progress: Callable[[MoveProgress], None],
    ) -> bool:
        """Send one C-MOVE or C-GET and record its responses in `outcome`; return False when a cancel came first."""
        pause_reactor(assoc)
        responses = self._send_cancellable(assoc, sop_class_uid, message_id, send)
        if responses is None:
            outcome.final_status = status.CANCEL
            return False
        for rsp, rsp_identifier in responses:
            _handle_retrieve_response(rsp, rsp_identifier, outcome, on_progress)
        return True

    def _send_cancellable(
        self, assoc: Association, sop_class_uid: str, message_id: int, send: Callable[[], Responses]
    ) -> Responses | None:
        """Call `send` unless a cancel came first, and record what a later C-CANCEL refers to.

        pynetdicom's send_c_move() and send_c_get() send the request when
        called, so holding the lock meanwhile keeps a C-CANCEL from going out
        before its request. Returns None when the request was not sent.
        """
        target = (assoc, message_id, context_id(assoc, sop_class_uid))
        with self._lock:
            if self.cancel_requested:
                return None
            sent = send()
            self._cancel_target = target
            return sent

    def cancel(self) -> None:
        """Send C-CANCEL for the running request (PS3.7 9.3.3.3, 9.3.4.3).

        A cancel that comes before the request was sent stops it from being sent.
        """
        with self._lock:
            self.cancel_requested = True
            target = self._cancel_target
        if target is None:
            return
        assoc, message_id, presentation_context_id = target
        if assoc.is_established:
            assoc.send_c_cancel(message_id, presentation_context_id)


class PeerMove(PeerRetrieve):
    """A C-MOVE at one peer, with the router's own AE title as Move Destination."""

    def run(
        self,
        model: InformationModel,
        identifier: Dataset,
        message_id: int,
        on_progress: Callable[[MoveProgress], None],
    ) -> MoveOutcome:
        outcome = MoveOutcome()

        def exchange(assoc: Association) -> None:
            self._send_retrieve(
                assoc, model.move_sop_class, message_id,
                lambda: assoc.send_c_move(identifier, self._local_ae_title, model.move_sop_class, msg_id=message_id),
                outcome, on_progress,
            )

        outcome.error = self._exchange(model.move_sop_class, exchange)
        return outcome


def _handle_retrieve_response(
    rsp: Dataset,
    rsp_identifier: Dataset | None,
    outcome: MoveOutcome,
    on_progress: Callable[[MoveProgress], None],
) -> None:
    """Record one C-MOVE or C-GET response in `outcome`; raise PeerError when there was none."""
    if "Status" not in rsp:
        raise PeerError("association aborted or DIMSE response timed out")
    rsp_status = int(rsp.Status)
    outcome.progress = _read_progress(rsp)
    if status.is_pending(rsp_status):
        on_progress(outcome.progress)
        return
    outcome.final_status = rsp_status
    outcome.error_comment = str(rsp.get("ErrorComment", "") or "") or None
    if rsp_identifier is not None and "FailedSOPInstanceUIDList" in rsp_identifier:
        outcome.failed_uids = split_values(rsp_identifier.FailedSOPInstanceUIDList)
