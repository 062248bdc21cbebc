"""One log event per accepted association, and one per rejected request."""

from __future__ import annotations

import time
from typing import Any

from pynetdicom import evt

from yicrouter.logs import get_logger
from yicrouter.scp.common import association_id

log = get_logger(__name__)


def _context(assoc: Any) -> dict[str, Any]:
    requestor = assoc.requestor
    return {
        "association_id": association_id(assoc),
        "calling_ae_title": str(requestor.ae_title).strip(),
        "called_ae_title": str(assoc.acceptor.ae_title).strip(),
        "remote_address": f"{requestor.address}:{requestor.port}",
    }


def _on_established(event: Any) -> None:
    event.assoc.router_established_at = time.monotonic()
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


def _on_rejected(event: Any) -> None:
    log.warning("association_rejected", **_context(event.assoc),
                reason="calling AE title is not a configured workstation or peer")


ASSOCIATION_HANDLERS = [
    (evt.EVT_ESTABLISHED, _on_established),
    (evt.EVT_RELEASED, _on_released),
    (evt.EVT_ABORTED, _on_aborted),
    (evt.EVT_CONN_CLOSE, _on_aborted),
    (evt.EVT_REJECTED, _on_rejected),
]
