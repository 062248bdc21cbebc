"""The SCU side: C-FIND and C-MOVE requests to one peer PACS.

A peer's failure never raises out of this module. Each call returns an outcome
that names what went wrong, so the caller can log it once and answer the
workstation with a DICOM status.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.association import Association

from yicrouter import status
from yicrouter.config import PeerSettings
from yicrouter.logs import get_logger
from yicrouter.net import TUNING_HANDLERS
from yicrouter.reactor import pause_reactor, resume_reactor
from yicrouter.query import InformationModel, split_values


log = get_logger(__name__)


class PeerError(Exception):
    """Raised inside this module when a peer refuses, aborts or times out."""


def _make_ae(local_ae_title: str, peer: PeerSettings, max_pdu: int) -> AE:
    ae = AE(ae_title=local_ae_title)
    ae.connection_timeout = peer.connect_timeout
    ae.acse_timeout = peer.acse_timeout
    ae.dimse_timeout = peer.dimse_timeout
    ae.network_timeout = max(peer.dimse_timeout, peer.acse_timeout)
    ae.maximum_pdu_size = max_pdu
    return ae


class PeerCall:
    """One association to one peer, which another thread may abort."""

    def __init__(self, peer: PeerSettings, local_ae_title: str, max_pdu: int) -> None:
        self.peer = peer
        self._local_ae_title = local_ae_title
        self._max_pdu = max_pdu
        self._assoc: Association | None = None
        self._lock = threading.Lock()
        self.aborted = False

    def _associate(self, sop_class_uid: str) -> Association:
        ae = _make_ae(self._local_ae_title, self.peer, self._max_pdu)
        ae.add_requested_context(sop_class_uid)
        assoc = ae.associate(
            self.peer.host, self.peer.port, ae_title=self.peer.ae_title,
            evt_handlers=TUNING_HANDLERS,
        )
        with self._lock:
            self._assoc = assoc
            if self.aborted:
                assoc.abort()
        if assoc.is_rejected:
            raise PeerError("association rejected")
        if not assoc.is_established:
            raise PeerError("association failed: peer unreachable or aborted")
        return assoc

    def abort(self) -> None:
        """Abort the association from any thread; the running call then ends."""
        with self._lock:
            self.aborted = True
            if self._assoc is not None and self._assoc.is_established:
                self._assoc.abort()

    def _exchange(self, sop_class_uid: str, exchange: Callable[[Association], None]) -> str | None:
        """Associate, run `exchange`, then release; return what went wrong, or None."""
        try:
            assoc = self._associate(sop_class_uid)
        except PeerError as exc:
            return str(exc)
        except Exception as exc:  # pynetdicom raises many types, e.g. for an unresolvable host
            log.exception("peer_call_error", peer=self.peer.name, peer_ae_title=self.peer.ae_title)
            return f"association failed: {type(exc).__name__}: {exc}"
        try:
            exchange(assoc)
            return None
        except PeerError as exc:
            return "aborted by the router" if self.aborted else str(exc)
        except Exception as exc:  # pynetdicom and pydicom raise many types
            log.exception("peer_call_error", peer=self.peer.name, peer_ae_title=self.peer.ae_title)
            return f"unexpected error: {type(exc).__name__}: {exc}"
        finally:
            resume_reactor(assoc)
            if assoc.is_established:
                assoc.release()


@dataclass
class FindOutcome:
    matches: int = 0
    error: str | None = None
    final_status: int | None = None


class PeerFind(PeerCall):
    """A C-FIND to one peer that hands each pending match to a callback."""

    def run(
        self,
        model: InformationModel,
        identifier: Dataset,
        on_match: Callable[[Dataset], None],
    ) -> FindOutcome:
        outcome = FindOutcome()

        def exchange(assoc: Association) -> None:
            for rsp_status, match in self._responses(assoc, model, identifier):
                if status.is_pending(rsp_status):
                    if match is not None:
                        outcome.matches += 1
                        on_match(match)
                    continue
                outcome.final_status = rsp_status
                if rsp_status != status.SUCCESS and rsp_status != status.CANCEL:
                    outcome.error = f"final status 0x{rsp_status:04X}"

        error = self._exchange(model.find_sop_class, exchange)
        if error is not None:
            outcome.error = error
        return outcome

    def _responses(
        self, assoc: Association, model: InformationModel, identifier: Dataset
    ) -> Iterator[tuple[int, Dataset | None]]:
        pause_reactor(assoc)
        for rsp, match in assoc.send_c_find(identifier, model.find_sop_class):
            if "Status" not in rsp:
                raise PeerError("association aborted or DIMSE response timed out")
            yield int(rsp.Status), match


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


class PeerMove(PeerCall):
    """A C-MOVE at one peer, with the router's own AE title as Move Destination."""

    def __init__(self, peer: PeerSettings, local_ae_title: str, max_pdu: int) -> None:
        super().__init__(peer, local_ae_title, max_pdu)
        self._cancel_target: tuple[Association, int, int] | None = None

    def run(
        self,
        model: InformationModel,
        identifier: Dataset,
        message_id: int,
        on_progress: Callable[[MoveProgress], None],
    ) -> MoveOutcome:
        outcome = MoveOutcome()

        def exchange(assoc: Association) -> None:
            self._watch_for_cancel(assoc, model, message_id)
            pause_reactor(assoc)
            responses = assoc.send_c_move(
                identifier, self._local_ae_title, model.move_sop_class, msg_id=message_id
            )
            for rsp, rsp_identifier in responses:
                self._handle_response(rsp, rsp_identifier, outcome, on_progress)

        outcome.error = self._exchange(model.move_sop_class, exchange)
        return outcome

    def _handle_response(
        self,
        rsp: Dataset,
        rsp_identifier: Dataset | None,
        outcome: MoveOutcome,
        on_progress: Callable[[MoveProgress], None],
    ) -> None:
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

    def _watch_for_cancel(self, assoc: Association, model: InformationModel, message_id: int) -> None:
        context_id = next(
            cx.context_id for cx in assoc.accepted_contexts
            if cx.abstract_syntax == model.move_sop_class
        )
        with self._lock:
            self._cancel_target = (assoc, message_id, int(context_id or 1))

    def cancel(self) -> None:
        """Send C-CANCEL for the running C-MOVE (PS3.7 9.3.4.3)."""
        with self._lock:
            target = self._cancel_target
        if target is None:
            return
        assoc, message_id, context_id = target
        if assoc.is_established:
            assoc.send_c_cancel(message_id, context_id)
