"""C-MOVE SCP: check the request and the Move Destination, find the peer, relay, and respond.

The steps shared with the C-GET SCP are in scp/retrieve.py.
"""

from __future__ import annotations

from typing import Any

from pynetdicom.dimse_primitives import C_MOVE
from pynetdicom.presentation import PresentationContext

from yicrouter import status
from yicrouter.config import WorkstationSettings
from yicrouter.forwarder import Forwarder
from yicrouter.moves import MoveJob
from yicrouter.query import Query
from yicrouter.relay import RelayResult
from yicrouter.scp.common import RouterServices
from yicrouter.scp.retrieve import (
    MOVE,
    FinalResponse,
    RetrieveResponder,
    check_requester,
    final_response,
    finish,
    locate,
    new_job,
    parse,
    reject,
    run_relay,
    serve,
)

__all__ = ["FinalResponse", "final_response", "serve_move"]


def serve_move(assoc: Any, request: C_MOVE, context: PresentationContext, services: RouterServices) -> None:
    """Serve one C-MOVE request; every path ends with exactly one final response."""
    serve(assoc, request, context, services, MOVE, _serve)


def _serve(responder: RetrieveResponder, services: RouterServices, log_context: dict[str, Any],
           started: float) -> None:
    checked = _check_request(responder, services, log_context)
    if checked is None:
        return
    destination, query = checked
    peers = locate(responder, query, services, log_context)
    if not peers:
        return

    job = new_job(responder, services, log_context, destination, query)
    result = _relay(job, peers, responder, services, log_context)
    finish(responder, result, log_context, started)


def _check_request(
    responder: RetrieveResponder, services: RouterServices, log_context: dict[str, Any]
) -> tuple[WorkstationSettings, Query] | None:
    """Return the Move Destination and the checked query, or send the failure and return None."""
    if check_requester(responder, services, log_context) is None:
        return None
    assert isinstance(responder.request, C_MOVE)
    move_destination = str(responder.request.MoveDestination or "").strip()
    log_context["move_destination"] = move_destination
    destination = services.config.workstation_by_ae_title(move_destination)
    if destination is None:
        reject(responder, log_context, status.MOVE_DESTINATION_UNKNOWN,
               "Move Destination is not a configured workstation", "unknown Move Destination")
        return None
    query = parse(responder, log_context)
    return None if query is None else (destination, query)


def _relay(job: MoveJob, peers: list[Any], responder: RetrieveResponder, services: RouterServices,
           log_context: dict[str, Any]) -> RelayResult:
    router = services.config.router
    forwarder = Forwarder(job.destination, router.ae_title, router.max_pdu,
                          (job.requester_ae_title, job.requester_message_id), log_context)
    try:
        return run_relay(job, peers, responder, forwarder, services, log_context)
    finally:
        forwarder.close()
