"""C-FIND SCP: check the identifier, fan it out, relay de-duplicated matches."""

from __future__ import annotations

import time
from collections.abc import Iterator
from copy import deepcopy
from typing import Any

from pydicom.dataset import Dataset

from yicrouter import routing, status
from yicrouter.fanout import Fanout
from yicrouter.logs import get_logger
from yicrouter.query import UNIQUE_KEYS, InvalidIdentifier, Query, model_for_sop_class, parse_find
from yicrouter.scp.common import RouterServices, association_log_context, status_with_comment
from yicrouter.scp.events import connection_closed

log = get_logger(__name__)

# Return keys added at PATIENT level, so that patients with the same ID at
# different trusts are listed apart; see duplicate_key().
_PATIENT_IDENTITY_KEYS = ("PatientName", "PatientBirthDate")

# Keys the router always returns, whether requested or not.
_ALWAYS_RETURNED = ("SpecificCharacterSet", "QueryRetrieveLevel", "RetrieveAETitle")


def upstream_identifier(query: Query) -> Dataset:
    """Return the identifier sent to peers: the request plus every unique key.

    The unique keys of the level and above are added as universal-match keys,
    so that each match can be de-duplicated and recorded in the routing table.
    """
    identifier = deepcopy(query.identifier)
    identifier.QueryRetrieveLevel = query.level
    for level in query.model.levels[: query.model.levels.index(query.level) + 1]:
        keyword = UNIQUE_KEYS[level]
        if keyword not in identifier:
            setattr(identifier, keyword, "")
    if query.level == "PATIENT":
        for keyword in _PATIENT_IDENTITY_KEYS:
            if keyword not in identifier:
                setattr(identifier, keyword, "")
    return identifier


def response_identifier(match: Dataset, query: Query, router_ae_title: str) -> Dataset:
    """Return `match` cut down to the requested keys, with the router as Retrieve AE."""
    response = Dataset()
    wanted = {element.keyword for element in query.identifier if element.keyword}
    wanted.add(query.unique_key)
    for element in match:
        if element.keyword in wanted or element.keyword in _ALWAYS_RETURNED:
            response.add(deepcopy(element))
    response.QueryRetrieveLevel = query.level
    response.RetrieveAETitle = router_ae_title
    return response


def duplicate_key(match: Dataset, query: Query) -> str:
    """Return the key that identifies a match across peers, or '' without a unique key.

    Patient IDs are unique only within one trust, so at PATIENT level two
    matches are the same patient only when ID, name and birth date all agree.
    """
    key = str(match.get(query.unique_key, "") or "").strip()
    if query.level != "PATIENT" or not key:
        return key
    name = str(match.get("PatientName", "") or "").strip().upper()
    birth_date = str(match.get("PatientBirthDate", "") or "").strip()
    return "\\".join((key, name, birth_date))


def handle_find(event: Any, services: RouterServices) -> Iterator[tuple[Any, Dataset | None]]:
    """Handle EVT_C_FIND; pynetdicom sends each yielded (status, identifier)."""
    context = association_log_context(event.assoc)
    if services.config.workstation_by_ae_title(context["calling_ae_title"]) is None:
        log.warning("find_rejected", **context, reason="calling AE title is not a configured workstation")
        yield status_with_comment(status.REFUSED_NOT_AUTHORIZED, "not a configured workstation"), None
        return
    model = model_for_sop_class(str(event.request.AffectedSOPClassUID))
    try:
        identifier = event.identifier
    except Exception as exc:  # pydicom raises many types on malformed data
        log.warning("find_rejected", **context, reason=f"identifier could not be decoded: {exc}")
        yield status_with_comment(status.FIND_UNABLE_TO_PROCESS, "identifier could not be decoded"), None
        return
    try:
        if model is None:
            raise InvalidIdentifier("the SOP Class is not a Q/R Find SOP Class")
        query = parse_find(model, identifier)
    except InvalidIdentifier as exc:
        log.warning("find_rejected", **context, reason=str(exc))
        yield status_with_comment(status.FIND_IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS, str(exc)), None
        return
    yield from _relay_matches(event, services, query, context)


def _relay_matches(
    event: Any, services: RouterServices, query: Query, context: dict[str, Any]
) -> Iterator[tuple[Any, Dataset | None]]:
    started = time.monotonic()
    fanout = Fanout(services.config.peers, services.ae_title, services.config.router.max_pdu, context)
    seen: set[str] = set()
    sightings: list[routing.Sighting] = []
    dropped = 0
    identifier = upstream_identifier(query)
    def stop_requested() -> bool:
        return bool(event.is_cancelled) or connection_closed(event.assoc)

    for peer, match in fanout.matches(query.model, identifier, stop_requested):
        key = duplicate_key(match, query)
        if not key:
            dropped += 1
            continue
        sightings.append(routing.Sighting.from_match(peer, query.level, match))
        if key in seen:
            continue
        seen.add(key)
        yield status.PENDING, response_identifier(match, query, services.ae_title)

    _record_sightings(sightings, context)
    result = fanout.result
    log.info(
        "find_completed", **context, level=query.level, model=query.model.value,
        peers_asked=result.peers_asked, failed_peers=sorted(result.failed_peers),
        matches=len(seen), matches_by_peer=result.matches_by_peer,
        dropped_without_unique_key=dropped, cancelled=result.cancelled,
        duration_ms=round((time.monotonic() - started) * 1000),
    )
    yield (status.CANCEL if result.cancelled else status.SUCCESS), None


def _record_sightings(sightings: list[routing.Sighting], context: dict[str, Any]) -> None:
    try:
        routing.record(sightings)
    except Exception:  # a database fault must not cost the workstation its final response
        log.exception("routing_record_failed", **context, sightings=len(sightings))
