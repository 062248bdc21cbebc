"""C-MOVE SCP: check the request, find the peer, relay, and respond.

The router owns the whole C-MOVE SCP exchange (see scp/association.py for
why), so this module builds and sends every C-MOVE response itself.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from io import BytesIO
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom.dimse_primitives import C_MOVE
from pynetdicom.dsutils import decode, encode
from pynetdicom.presentation import PresentationContext

from yicrouter import status
from yicrouter.config import PeerSettings, WorkstationSettings
from yicrouter.forwarder import Forwarder
from yicrouter.queue_book import QueueBook, release_rows
from yicrouter.logs import get_logger
from yicrouter.moves import MoveJob
from yicrouter.query import InvalidIdentifier, Query, model_for_sop_class, parse_retrieve
from yicrouter.relay import MoveCounts, MoveRelay, RelayResult
from yicrouter.scp.common import RouterServices, association_log_context
from yicrouter.scp.events import connection_closed
from yicrouter.scp.locate import Location, locate_peers

log = get_logger(__name__)


class MoveResponder:
    """Builds and sends the C-MOVE responses for one request."""

    def __init__(self, assoc: Any, request: C_MOVE, context: PresentationContext) -> None:
        self.assoc = assoc
        self.request = request
        self.context = context

    def decode_identifier(self) -> Dataset:
        syntax = self.context.transfer_syntax[0]
        encoded = self.request.Identifier
        if encoded is None:
            raise ValueError("the C-MOVE request has no identifier")
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
        rsp = C_MOVE()
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


def serve_move(assoc: Any, request: C_MOVE, context: PresentationContext, services: RouterServices) -> None:
    """Serve one C-MOVE request; every path ends with exactly one final response."""
    responder = MoveResponder(assoc, request, context)
    log_context = association_log_context(assoc)
    started = time.monotonic()
    try:
        _serve(responder, services, log_context, started)
    except Exception:  # the requester must always get a final response
        log.exception("move_failed_unexpectedly", **log_context)
        responder.send_failure(status.MOVE_UNABLE_TO_PROCESS, "internal error")


def _serve(responder: MoveResponder, services: RouterServices, log_context: dict[str, Any], started: float) -> None:
    checked = _check_request(responder, services, log_context)
    if checked is None:
        return
    destination, query = checked
    log_context.update(level=query.level, **_uid_context(query))

    peers = _locate(responder, query, services, log_context)
    if not peers:
        return

    job = MoveJob(
        requester_ae_title=log_context["calling_ae_title"],
        requester_message_id=int(responder.request.MessageID or 0),
        destination=destination,
        query=query,
        upstream_message_id=services.moves.allocate_message_id(),
    )
    log_context["move_id"] = job.id
    result = _relay(job, peers, responder, services, log_context)
    _finish(responder, result, services, log_context, started)


def _reject(responder: MoveResponder, log_context: dict[str, Any], code: int, reason: str, comment: str) -> None:
    log.warning("move_rejected", **log_context, reason=reason)
    responder.send_failure(code, comment)


def _check_request(
    responder: MoveResponder, services: RouterServices, log_context: dict[str, Any]
) -> tuple[WorkstationSettings, Query] | None:
    """Return the Move Destination and the checked query, or send the failure and return None."""
    if services.config.workstation_by_ae_title(log_context["calling_ae_title"]) is None:
        _reject(responder, log_context, status.REFUSED_NOT_AUTHORIZED,
                "calling AE title is not a configured workstation", "not a configured workstation")
        return None
    move_destination = str(responder.request.MoveDestination or "").strip()
    log_context["move_destination"] = move_destination
    destination = services.config.workstation_by_ae_title(move_destination)
    if destination is None:
        _reject(responder, log_context, status.MOVE_DESTINATION_UNKNOWN,
                "Move Destination is not a configured workstation", "unknown Move Destination")
        return None
    query = _parse(responder, log_context)
    return None if query is None else (destination, query)


def _locate(
    responder: MoveResponder, query: Query, services: RouterServices, log_context: dict[str, Any]
) -> list[PeerSettings]:
    """Return the peers to move from; when there are none, send the final response."""
    location = locate_peers(query, services, log_context)
    refusal = _refusal(query, location)
    if refusal is not None:
        _reject(responder, log_context, status.MOVE_UNABLE_TO_PROCESS, refusal, refusal)
        return []
    if not location.peers:
        log.info("move_completed", **log_context, status=f"0x{status.SUCCESS:04X}", instances=0,
                 reason="no peer holds the requested data")
        responder.send(status.SUCCESS, MoveCounts())
    return location.peers


def _refusal(query: Query, location: Location) -> str | None:
    """Return why a retrieve must not go ahead, or None."""
    if not location.peers and location.unsearched:
        return f"peers could not be searched: {', '.join(location.unsearched)}"
    if query.level == "PATIENT" and len(location.peers) > 1:
        # Patient IDs are unique only within one trust: moving by Patient ID
        # from several trusts could deliver another person's images.
        return "Patient ID is held at several trusts; retrieve at STUDY level"
    return None


def _parse(responder: MoveResponder, log_context: dict[str, Any]) -> Query | None:
    model = model_for_sop_class(str(responder.request.AffectedSOPClassUID))
    try:
        identifier = responder.decode_identifier()
    except Exception as exc:  # pydicom raises many types on malformed data
        _reject(responder, log_context, status.MOVE_UNABLE_TO_PROCESS,
                f"identifier could not be decoded: {exc}", "identifier could not be decoded")
        return None
    try:
        if model is None:
            raise InvalidIdentifier("the SOP Class is not a Q/R Move SOP Class")
        return parse_retrieve(model, identifier)
    except InvalidIdentifier as exc:
        _reject(responder, log_context, status.MOVE_IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS, str(exc), str(exc))
        return None


def _uid_context(query: Query) -> dict[str, Any]:
    context: dict[str, Any] = {}
    for keyword, name in (("StudyInstanceUID", "study_instance_uid"),
                          ("SeriesInstanceUID", "series_instance_uid")):
        values = query.key_values(keyword)
        if values:
            context[name] = values[0] if len(values) == 1 else values
    return context


def _relay(job: MoveJob, peers: list[PeerSettings], responder: MoveResponder, services: RouterServices,
           log_context: dict[str, Any]) -> RelayResult:
    router = services.config.router
    forwarder = Forwarder(job.destination, router.ae_title, router.max_pdu,
                          (job.requester_ae_title, job.requester_message_id), log_context)
    relay = MoveRelay(
        job, peers, forwarder, QueueBook(services.spool, services.retry_policy, log_context),
        router.ae_title, router.max_pdu,
        send_pending=responder.send_pending, is_cancelled=responder.is_cancelled,
        requester_alive=responder.requester_alive, router_stopping=services.stopping.is_set,
        log_context=log_context,
    )
    services.moves.add(job)
    try:
        return relay.run()
    finally:
        services.moves.remove(job)
        forwarder.close()
        release_rows(job.queue_owner, log_context)


def _finish(responder: MoveResponder, result: RelayResult, services: RouterServices,
            log_context: dict[str, Any], started: float) -> None:
    final = final_response(result)
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
        "move_completed", **log_context,
        peer=result.peer.name if result.peer else None,
        status=f"0x{final.status:04X}", instances=counts.completed + counts.warning,
        failed=counts.failed, warning=counts.warning, bytes=counts.bytes_forwarded,
        queued_for_retry=counts.queued_for_retry,
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
    """Return why the peer's C-MOVE did not complete, or None when it did."""
    outcome = result.outcome
    if result.router_stopping:
        return "the router is shutting down"
    if result.timed_out:
        return "peer missed its move deadline"
    if outcome is None:
        return "peer move did not finish"
    if outcome.error is not None:
        return f"peer {outcome.error}"
    if outcome.final_status is not None and status.is_failure(outcome.final_status):
        return f"peer ended the move with 0x{outcome.final_status:04X}"
    return None


def final_response(result: RelayResult) -> FinalResponse:
    """Return the final C-MOVE response, following PS3.4 C.4.2.

    Sub-operations that the peer reports as failed count as failed, and so do
    those it announced but never sent when it ended the move early. When the
    peer broke off without saying how many sub-operations it had, the number
    missing is unknown, so the status is a failure, never Success.
    """
    counts = result.counts
    if result.cancelled:
        return FinalResponse(status.CANCEL, counts, remaining=result.unreceived() or 0)
    outcome = result.outcome
    if outcome is not None:
        counts.failed += outcome.progress.failed
        counts.failed_uids.extend(uid for uid in outcome.failed_uids if uid not in counts.failed_uids)
    broken = _peer_failure(result)
    if broken is not None:
        counts.failed += result.unreceived() or 0
        if counts.completed + counts.warning == 0 or counts.failed == 0:
            return FinalResponse(status.MOVE_UNABLE_TO_PROCESS, counts, error_comment=broken)
    if counts.failed == 0 and counts.warning == 0:
        return FinalResponse(status.SUCCESS, counts)
    if counts.completed + counts.warning == 0:
        return FinalResponse(status.MOVE_OUT_OF_RESOURCES_SUBOPERATIONS, counts)
    return FinalResponse(status.MOVE_SUBOPERATIONS_WARNING, counts, error_comment=broken)
