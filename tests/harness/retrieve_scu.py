"""pynetdicom requesters for C-GET and C-MOVE tests that DCMTK's tools can't drive.

getscu always proposes the SCP role for all of its 120 storage SOP Classes
and can't send C-CANCEL, so tests that need a requester without the SCP role
for one SOP Class, or one that cancels, use GetRequester and MoveRequester.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from pydicom.dataset import Dataset
from pynetdicom import AE, build_role, evt
from pynetdicom.association import Association
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelGet  # type: ignore[attr-defined]
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelMove  # type: ignore[attr-defined]

from harness.ports import DicomNode

# Explicit and Implicit VR Little Endian.
UNCOMPRESSED = ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"]


@dataclass
class Response:
    """One C-GET or C-MOVE response and the time it arrived (time.monotonic())."""

    at: float
    status: Dataset
    identifier: Dataset | None

    @property
    def code(self) -> int:
        return int(self.status.Status)

    def count(self, kind: str) -> int:
        """Return Number of `kind` Sub-operations, for example kind="Completed"; -1 when absent."""
        value = self.status.get(f"NumberOf{kind}Suboperations")
        return -1 if value is None else int(value)


@dataclass
class RetrieveRun:
    responses: list[Response] = field(default_factory=list)
    # SOP Instance UIDs that arrived by C-STORE on the requester's association, with times.
    stored: list[tuple[float, str]] = field(default_factory=list)
    cancel_sent_at: float | None = None

    @property
    def final(self) -> Response:
        return self.responses[-1]

    def stored_after_cancel(self) -> list[str]:
        assert self.cancel_sent_at is not None
        return [uid for at, uid in self.stored if at > self.cancel_sent_at]


def study_identifier(study_uid: str) -> Dataset:
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.StudyInstanceUID = study_uid
    return identifier


# Called with the run so far after each response; returns True to send C-CANCEL now.
CancelRule = Callable[[RetrieveRun], bool]


def _cancel_after_responses(run: RetrieveRun, rule: CancelRule | None, assoc: Association,
                            message_id: int) -> None:
    if rule is not None and run.cancel_sent_at is None and rule(run):
        run.cancel_sent_at = time.monotonic()
        assoc.send_c_cancel(message_id, assoc.accepted_contexts[0].context_id)


def run_get(
    router: DicomNode,
    calling_ae: str,
    identifier: Dataset,
    *,
    scp_role_for: Sequence[str],
    without_role: Sequence[str] = (),
    cancel_immediately: bool = False,
    cancel_when: CancelRule | None = None,
    message_id: int = 7,
) -> RetrieveRun:
    """Send one Study Root C-GET and collect the responses and the instances received.

    Storage SOP Classes in `scp_role_for` are proposed with the SCP role for
    this requester; those in `without_role` are proposed without role selection.
    """
    run = RetrieveRun()
    lock = threading.Lock()

    def on_store(event: evt.Event) -> int:
        with lock:
            run.stored.append((time.monotonic(), str(event.request.AffectedSOPInstanceUID)))
        return 0x0000

    ae = AE(ae_title=calling_ae)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    for sop_class in [*scp_role_for, *without_role]:
        ae.add_requested_context(sop_class, UNCOMPRESSED)
    roles = [build_role(sop_class, scp_role=True) for sop_class in scp_role_for]
    assoc = ae.associate(router.host, router.port, ae_title=router.ae_title, ext_neg=roles,
                         evt_handlers=[(evt.EVT_C_STORE, on_store)])
    assert assoc.is_established, "the router did not accept the C-GET association"
    try:
        responses = assoc.send_c_get(identifier, StudyRootQueryRetrieveInformationModelGet, msg_id=message_id)
        if cancel_immediately:
            run.cancel_sent_at = time.monotonic()
            assoc.send_c_cancel(message_id, assoc.accepted_contexts[0].context_id)
        for status, response_identifier in responses:
            run.responses.append(Response(time.monotonic(), status, response_identifier))
            _cancel_after_responses(run, cancel_when, assoc, message_id)
    finally:
        if assoc.is_established:
            assoc.release()
    return run


def run_move(
    router: DicomNode,
    calling_ae: str,
    destination: str,
    identifier: Dataset,
    *,
    cancel_immediately: bool = False,
    cancel_when: CancelRule | None = None,
    message_id: int = 7,
) -> RetrieveRun:
    """Send one Study Root C-MOVE and collect the responses."""
    run = RetrieveRun()
    ae = AE(ae_title=calling_ae)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
    assoc = ae.associate(router.host, router.port, ae_title=router.ae_title)
    assert assoc.is_established, "the router did not accept the C-MOVE association"
    try:
        responses = assoc.send_c_move(identifier, destination, StudyRootQueryRetrieveInformationModelMove,
                                      msg_id=message_id)
        if cancel_immediately:
            run.cancel_sent_at = time.monotonic()
            assoc.send_c_cancel(message_id, assoc.accepted_contexts[0].context_id)
        for status, response_identifier in responses:
            run.responses.append(Response(time.monotonic(), status, response_identifier))
            _cancel_after_responses(run, cancel_when, assoc, message_id)
    finally:
        if assoc.is_established:
            assoc.release()
    return run


@dataclass
class RecordingStoreSCP:
    """A pynetdicom Storage SCP that records the time and SOP Instance UID of each C-STORE."""

    ae_title: str
    port: int
    stored: list[tuple[float, str]] = field(default_factory=list)

    def start(self) -> "RecordingStoreSCP":
        from pynetdicom import AllStoragePresentationContexts

        ae = AE(ae_title=self.ae_title)
        for context in AllStoragePresentationContexts:
            ae.add_supported_context(context.abstract_syntax)
        self._server = ae.start_server(("127.0.0.1", self.port), block=False,
                                       evt_handlers=[(evt.EVT_C_STORE, self._store)])
        return self

    def _store(self, event: evt.Event) -> int:
        self.stored.append((time.monotonic(), str(event.request.AffectedSOPInstanceUID)))
        return 0x0000

    def stored_after(self, moment: float) -> list[str]:
        return [uid for at, uid in self.stored if at > moment]

    def stop(self) -> None:
        self._server.shutdown()
