"""One log event per accepted association, and one per rejected request."""

from __future__ import annotations

import time
from typing import Any

from pynetdicom import evt

from yicrouter.logs import get_logger
from yicrouter.scp.common import association_id

log = get_logger(__name__)


def _called_ae_title(assoc: Any) -> str:
    """Return the Called AE Title of the request, which may differ from the router's."""
    request = assoc.requestor.primitive
    title = getattr(request, "called_ae_title", None) if request is not None else None
    return str(title if title is not None else assoc.acceptor.ae_title).strip()


def _context(assoc: Any) -> dict[str, Any]:
    requestor = assoc.requestor
    return {
        "association_id": association_id(assoc),
        "calling_ae_title": str(requestor.ae_title).strip(),
        "called_ae_title": _called_ae_title(assoc),
        "remote_address": f"{requestor.address}:{requestor.port}",
    }


def _on_established(event: Any) -> None:
    event.assoc.router_established_at = time.monotonic()
    event.assoc.router_was_established = True
    log.debug("association_established", **_context(event.assoc))


def _on_ended(event: Any, how: str) -> None:
    assoc = event.assoc
    started = getattr(assoc, "router_established_at", None)
    if started is None:
        return
    assoc.router_established_at = None
    log.info("association_closed", **_context(assoc), how=how,
             duration_ms=round((time.monotonic() - started) * 1000))


def _on_released(event: Any) -> None:
    _on_ended(event, "released")


def _on_aborted(event: Any) -> None:
    _on_ended(event, "aborted")


def _on_connection_closed(event: Any) -> None:
    assoc = event.assoc
    # Read by the C-FIND and C-MOVE handlers, which run in the association's
    # own thread and so can't rely on pynetdicom noticing the loss for them.
    assoc.router_connection_closed = True
    if getattr(assoc, "router_established_at", None) is not None:
        _on_ended(event, "aborted")
    elif not getattr(assoc, "router_was_established", False) and not getattr(assoc, "router_rejected", False):
        log.warning("connection_closed", association_id=association_id(assoc),
                    remote_address=f"{assoc.requestor.address}:{assoc.requestor.port}",
                    reason="closed before an association was established: invalid, incomplete "
                           "or no A-ASSOCIATE-RQ")


def _rejection_reason(assoc: Any) -> str:
    calling = str(assoc.requestor.ae_title).strip()
    allowed = [title.strip() for title in assoc.ae.require_calling_aet]
    if allowed and calling not in allowed:
        return "calling AE title is not a configured workstation or peer"
    if _called_ae_title(assoc) != str(assoc.acceptor.ae_title).strip():
        return "called AE title is not the router's AE title"
    return "too many associations at once"


def _on_rejected(event: Any) -> None:
    event.assoc.router_rejected = True
    log.warning("association_rejected", **_context(event.assoc), reason=_rejection_reason(event.assoc))


def connection_closed(assoc: Any) -> bool:
    """Return True once the TCP connection of an association has closed."""
    return bool(getattr(assoc, "router_connection_closed", False)) or not assoc.is_established


ASSOCIATION_HANDLERS = [
    (evt.EVT_ESTABLISHED, _on_established),
    (evt.EVT_RELEASED, _on_released),
    (evt.EVT_ABORTED, _on_aborted),
    (evt.EVT_CONN_CLOSE, _on_connection_closed),
    (evt.EVT_REJECTED, _on_rejected),
]
