"""The steps that the C-MOVE and C-GET SCPs share: check, locate, relay, respond.

The router owns the whole C-MOVE and C-GET SCP exchange (see
scp/association.py for why), so this module builds and sends every response
itself. PS3.4 C.4.2 (C-MOVE) and C.4.3 (C-GET) define the same statuses and
counts, apart from Move Destination Unknown, which only C-MOVE has.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from io import BytesIO
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom.dimse_primitives import C_GET, C_MOVE
from pynetdicom.dsutils import decode, encode
from pynetdicom.presentation import PresentationContext

from yicrouter import status
from yicrouter.config import PeerSettings, WorkstationSettings
from yicrouter.logs import get_logger
from yicrouter.moves import CANCELLED, MoveJob
from yicrouter.peer_get import PeerGetOrMove
from yicrouter.peer_move import PeerMove
from yicrouter.query import InvalidIdentifier, Query, model_for_sop_class, parse_retrieve
from yicrouter.queue_book import QueueBook, release_rows
from yicrouter.relay import InstanceSender, MoveCounts, MoveRelay, RelayResult, RequesterHooks, RetrieveCall
from yicrouter.scp.common import RouterServices, association_log_context
from yicrouter.scp.events import connection_closed
from yicrouter.scp.extended_negotiation import negotiated_relational
from yicrouter.scp.locate import Location, locate_peers
from yicrouter.scp.store import handle_peer_get_store

log = get_logger(__name__)


@dataclass(frozen=True)
class RetrieveService:
    """The statuses and log event names that differ between the C-MOVE and the C-GET SCP."""

    # "move" or "get": the first word of every log event of the service.
    name: str
    unable_to_process: int
    identifier_does_not_match: int
    out_of_resources_suboperations: int
    suboperations_warning: int


# PS3.4 C.4.2.1.5, table C.4-2.
MOVE = RetrieveService(
    "move", status.MOVE_UNABLE_TO_PROCESS, status.MOVE_IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS,
    status.MOVE_OUT_OF_RESOURCES_SUBOPERATIONS, status.MOVE_SUBOPERATIONS_WARNING,
)
# PS3.4 C.4.3.1.4, table C.4-3.
GET = RetrieveService(
    "get", status.GET_UNABLE_TO_PROCESS, status.GET_IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS,
    status.GET_OUT_OF_RESOURCES_SUBOPERATIONS, status.GET_SUBOPERATIONS_WARNING,
)


class RetrieveResponder:
    """Builds and sends the C-MOVE or C-GET responses for one request."""

    def __init__(
        self, assoc: Any, request: C_MOVE | C_GET, context: PresentationContext, service: RetrieveService
    ) -> None:
        self.assoc = assoc
        self.request = request
        self.context = context
        self.service = service

    def decode_identifier(self) -> Dataset:
        syntax = self.context.transfer_syntax[0]
        encoded = self.request.Identifier
        if encoded is None:
            raise ValueError("the request has no identifier")
        identifier: Dataset = decode(
            encoded, syntax.is_implicit_VR, syntax.is_little_endian, syntax.is_deflated
        )
        return identifier

    def is_cancelled(self) -> bool:
        return self.request.MessageID in self.assoc.dimse.cancel_req

    def requester_alive(self) -> bool:
        return not connection_closed(self.assoc)

    def send(
        self,
        code: int,
        counts: MoveCounts | None = None,
        remaining: int | None = None,
        identifier: Dataset | None = None,
        error_comment: str | None = None,
    ) -> None:
        rsp = C_GET() if isinstance(self.request, C_GET) else C_MOVE()
        rsp.MessageIDBeingRespondedTo = self.request.MessageID
        rsp.AffectedSOPClassUID = self.request.AffectedSOPClassUID
        rsp.Status = code
        if counts is not None:
            rsp.NumberOfCompletedSuboperations = counts.completed
            rsp.NumberOfFailedSuboperations = counts.failed
            rsp.NumberOfWarningSuboperations = counts.warning
        if remaining is not None:
            rsp.NumberOfRemainingSuboperations = remaining
        if error_comment:
            rsp.ErrorComment = error_comment[:64]  # type: ignore[assignment]
        if identifier is not None:
            syntax = self.context.transfer_syntax[0]
            encoded = encode(identifier, syntax.is_implicit_VR, syntax.is_little_endian, syntax.is_deflated)
            rsp.Identifier = BytesIO(encoded or b"")
        if self.requester_alive():
            self.assoc.dimse.send_msg(rsp, self.context.context_id)

    def send_pending(self, counts: MoveCounts, remaining: int) -> None:
        self.send(status.PENDING, counts, remaining)

    def send_failure(self, code: int, comment: str) -> None:
        """Send a final failure with Error Comment (0000,0902), at most 64 characters."""
        self.send(code, error_comment=comment)


# The steps of one retrieve once its responder exists: they get the router's
# services, the log context and the time.monotonic() value at the start.
RetrieveSteps = Callable[[RetrieveResponder, RouterServices, dict[str, Any], float], None]


def serve(
    assoc: Any,
    request: C_MOVE | C_GET,
    context: PresentationContext,
    services: RouterServices,
    service: RetrieveService,
    steps: RetrieveSteps,
) -> None:
    """Run the steps of one C-MOVE or C-GET request, and send a failure if they raise."""
    responder = RetrieveResponder(assoc, request, context, service)
    log_context = association_log_context(assoc)
    started = time.monotonic()
    try:
        steps(responder, services, log_context, started)
    except Exception:  # the requester must always get a final response
        log.exception(f"{service.name}_failed_unexpectedly", **log_context)
        responder.send_failure(service.unable_to_process, "internal error")


def reject(responder: RetrieveResponder, log_context: dict[str, Any], code: int, reason: str, comment: str) -> None:
    log.warning(f"{responder.service.name}_rejected", **log_context, reason=reason)
    responder.send_failure(code, comment)


def check_requester(
    responder: RetrieveResponder, services: RouterServices, log_context: dict[str, Any]
) -> WorkstationSettings | None:
    """Return the requester's workstation settings, or send the failure and return None."""
    requester = services.config.workstation_by_ae_title(log_context["calling_ae_title"])
    if requester is None:
        reject(responder, log_context, status.REFUSED_NOT_AUTHORIZED,
               "calling AE title is not a configured workstation", "not a configured workstation")
    return requester


def parse(responder: RetrieveResponder, log_context: dict[str, Any]) -> Query | None:
    """Return the checked identifier, or send the failure and return None."""
    service = responder.service
    model = model_for_sop_class(str(responder.request.AffectedSOPClassUID))
    try:
        identifier = responder.decode_identifier()
    except Exception as exc:  # pydicom raises many types on malformed data
        reject(responder, log_context, service.unable_to_process,
               f"identifier could not be decoded: {exc}", "identifier could not be decoded")
        return None
    try:
        if model is None:
            raise InvalidIdentifier("the SOP Class is not a Q/R retrieve SOP Class")
        sop_class_uid = str(responder.request.AffectedSOPClassUID)
        relational = negotiated_relational(responder.assoc, sop_class_uid)
        query = parse_retrieve(model, identifier, relational=relational)
    except InvalidIdentifier as exc:
        reject(responder, log_context, service.identifier_does_not_match, str(exc), str(exc))
        return None
    log_context.update(level=query.level, **_uid_context(query))
    return query


def locate(
    responder: RetrieveResponder, query: Query, services: RouterServices, log_context: dict[str, Any]
) -> list[PeerSettings]:
    """Return the peers to retrieve from; when there are none, send the final response."""
    location = locate_peers(query, services, log_context)
    refusal = _refusal(query, location)
    if refusal is not None:
        reject(responder, log_context, responder.service.unable_to_process, refusal, refusal)
        return []
    if responder.is_cancelled():
        log.info(f"{responder.service.name}_completed", **log_context, status=f"0x{status.CANCEL:04X}",
                 instances=0, cancelled=True, reason="cancelled before any peer was asked")
        responder.send(status.CANCEL, MoveCounts(), remaining=0)
        return []
    if not location.peers:
        log.info(f"{responder.service.name}_completed", **log_context, status=f"0x{status.SUCCESS:04X}",
                 instances=0, reason="no peer holds the requested data")
        responder.send(status.SUCCESS, MoveCounts())
    return location.peers


def _refusal(query: Query, location: Location) -> str | None:
    """Return why a retrieve must not go ahead, or None."""
    if not location.peers and location.unsearched:
        return f"peers could not be searched: {', '.join(location.unsearched)}"
    if query.level == "PATIENT" and len(location.peers) > 1:
        # Patient IDs are unique only within one trust: retrieving by Patient
        # ID from several trusts could deliver another person's images.
        return "Patient ID is held at several trusts; retrieve at STUDY level"
    return None


def _uid_context(query: Query) -> dict[str, Any]:
    context: dict[str, Any] = {}
    for keyword, name in (("StudyInstanceUID", "study_instance_uid"),
                          ("SeriesInstanceUID", "series_instance_uid")):
        values = query.key_values(keyword)
        if values:
            context[name] = values[0] if len(values) == 1 else values
    return context


def new_job(
    responder: RetrieveResponder,
    services: RouterServices,
    log_context: dict[str, Any],
    destination: WorkstationSettings,
    query: Query,
    durable: bool = True,
) -> MoveJob:
    """Return the job of a checked retrieve, and add its move_id to the log context."""
    job = MoveJob(
        requester_ae_title=log_context["calling_ae_title"],
        requester_message_id=int(responder.request.MessageID or 0),
        destination=destination,
        query=query,
        upstream_message_id=services.moves.allocate_message_id(),
        durable=durable,
    )
    log_context["move_id"] = job.id
    return job


@dataclass(frozen=True)
class PeerCallFactory:
    """Creates the C-MOVE or C-GET call to a peer, as the peer's `retrieve` setting selects."""

    job: MoveJob
    services: RouterServices

    def __call__(self, peer: PeerSettings) -> RetrieveCall:
        router = self.services.config.router
        if peer.retrieve == "c-get":
            return PeerGetOrMove(peer, router.ae_title, router.max_pdu, self._store, self.job.query)
        return PeerMove(peer, router.ae_title, router.max_pdu)

    def _store(self, event: Any) -> int:
        return handle_peer_get_store(event, self.job, self.services)


def run_relay(
    job: MoveJob,
    peers: list[PeerSettings],
    responder: RetrieveResponder,
    sender: InstanceSender,
    services: RouterServices,
    log_context: dict[str, Any],
) -> RelayResult:
    """Run the relay for `job`, with the job registered for incoming C-STOREs meanwhile."""
    hooks = RequesterHooks(
        send_pending=responder.send_pending, is_cancelled=responder.is_cancelled,
        requester_alive=responder.requester_alive,
        stops_without_requester=responder.service is GET, service_name=responder.service.name,
    )
    relay = MoveRelay(
        job, peers, sender, QueueBook(services.spool, services.retry_policy, log_context),
        PeerCallFactory(job, services), hooks, services.stopping.is_set, log_context,
    )
    services.moves.add(job)
    try:
        return relay.run()
    finally:
        services.moves.remove(job)
        # The relay deleted a cancelled move's rows. Releasing one that a
        # late C-STORE is about to delete would let the delivery job send it.
        if job.durable and job.state != CANCELLED:
            release_rows(job.queue_owner, log_context)


def finish(responder: RetrieveResponder, result: RelayResult, log_context: dict[str, Any], started: float) -> None:
    """Send the final response and log the retrieve's outcome once."""
    final = final_response(result, responder.service)
    counts = final.counts
    identifier = None
    if final.status != status.SUCCESS:
        # The Failed SOP Instance UID List goes with every other status. It is
        # empty when the peer did not report which instances it failed to send.
        identifier = Dataset()
        identifier.FailedSOPInstanceUIDList = counts.failed_uids
    responder.send(final.status, counts, final.remaining, identifier, final.error_comment)
    outcome = result.outcome
    level = "info" if final.status == status.SUCCESS else "warning"
    getattr(log, level)(
        f"{responder.service.name}_completed", **log_context,
        peer=result.peer.name if result.peer else None,
        status=f"0x{final.status:04X}", instances=counts.completed + counts.warning,
        failed=counts.failed, warning=counts.warning, bytes=counts.bytes_forwarded,
        queued_for_retry=counts.queued_for_retry, dropped=counts.dropped,
        cancelled=result.cancelled, requester_lost=result.requester_lost, timed_out=result.timed_out,
        router_stopping=result.router_stopping,
        peer_error=outcome.error if outcome else None,
        peer_status=f"0x{outcome.final_status:04X}" if outcome and outcome.final_status is not None else None,
        reason=final.error_comment,
        duration_ms=round((time.monotonic() - started) * 1000),
    )


@dataclass
class FinalResponse:
    status: int
    counts: MoveCounts
    remaining: int | None = None
    error_comment: str | None = None


def _peer_failure(result: RelayResult) -> str | None:
    """Return why the peer's retrieve did not complete, or None when it did."""
    outcome = result.outcome
    if result.router_stopping:
        return "the router is shutting down"
    if result.timed_out:
        return "peer missed its move deadline"
    if result.requester_lost and outcome is None:
        return "the requester's association closed"
    if outcome is None:
        return "peer move did not finish"
    if outcome.error is not None:
        return f"peer {outcome.error}"
    if outcome.final_status is not None and status.is_failure(outcome.final_status):
        return f"peer ended the move with 0x{outcome.final_status:04X}"
    return None


def final_response(result: RelayResult, service: RetrieveService = MOVE) -> FinalResponse:
    """Return the final C-MOVE or C-GET response, following PS3.4 C.4.2 and C.4.3.

    Sub-operations that the peer reports as failed count as failed, and so do
    those it announced but never sent when it ended the move early. After a
    C-CANCEL those not sent count as remaining, including instances that the
    router received but dropped. When the
    peer broke off without saying how many sub-operations it had, the number
    missing is unknown, so the status is a failure, never Success.
    """
    counts = result.counts
    if result.cancelled:
        # The peer may still be reporting progress, so one snapshot serves both counts.
        progress = result.job.peer_progress
        counts.failed += progress.failed
        return FinalResponse(status.CANCEL, counts, remaining=(result.unreceived(progress) or 0) + counts.dropped)
    outcome = result.outcome
    if outcome is not None:
        counts.failed += outcome.progress.failed
        counts.failed_uids.extend(uid for uid in outcome.failed_uids if uid not in counts.failed_uids)
    broken = _peer_failure(result)
    if broken is not None:
        counts.failed += result.unreceived() or 0
        if counts.completed + counts.warning == 0 or counts.failed == 0:
            return FinalResponse(service.unable_to_process, counts, error_comment=broken)
    if counts.failed == 0 and counts.warning == 0:
        return FinalResponse(status.SUCCESS, counts)
    if counts.completed + counts.warning == 0:
        return FinalResponse(service.out_of_resources_suboperations, counts)
    return FinalResponse(service.suboperations_warning, counts, error_comment=broken)
