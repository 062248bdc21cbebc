"""C-FIND SCP: check the identifier, fan it out, relay de-duplicated matches."""

from __future__ import annotations

import time
from collections.abc import Iterator
from copy import deepcopy
from dataclasses import dataclass, field
from typing import Any

from pydicom.dataset import Dataset

from yicrouter import charsets, dialect, matching, routing, status
from yicrouter.fanout import Fanout, FanoutResult
from yicrouter.logs import get_logger
from yicrouter.matching import MatchRules
from yicrouter.query import (
    UNIQUE_KEYS,
    InvalidIdentifier,
    Query,
    model_for_sop_class,
    parse_find,
    split_values,
)
from yicrouter.scp.common import cancelled_before_served, RouterServices, association_log_context, status_with_comment
from yicrouter.scp.events import connection_closed
from yicrouter.scp.extended_negotiation import negotiated_combined_datetime, negotiated_relational

# The daemon registers the EVT_SOP_EXTENDED handler from this module.
from yicrouter.scp.extended_negotiation import handle_sop_extended as handle_sop_extended

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
        relational = negotiated_relational(event.assoc, str(event.request.AffectedSOPClassUID))
        query = parse_find(model, identifier, relational)
    except InvalidIdentifier as exc:
        log.warning("find_rejected", **context, reason=str(exc))
        yield status_with_comment(status.FIND_IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS, str(exc)), None
        return
    yield from _relay_matches(event, services, query, context)


@dataclass
class _FindTally:
    """Counts for the find_completed event."""

    matches: int = 0
    # Matches that lacked a unique key that could not be repaired, by peer.
    without_unique_key: dict[str, int] = field(default_factory=dict)
    # Matches that failed the workstation's keys in the router's re-matching.
    not_matching: int = 0


def _match_rules(event: Any, services: RouterServices) -> MatchRules:
    combined = negotiated_combined_datetime(event.assoc, str(event.request.AffectedSOPClassUID))
    return MatchRules(
        patient_name_case_sensitive=services.config.router.patient_name_case_sensitive,
        combined_datetime=combined,
    )


def _relay_matches(
    event: Any, services: RouterServices, query: Query, context: dict[str, Any]
) -> Iterator[tuple[Any, Dataset | None]]:
    started = time.monotonic()
    rules = _match_rules(event, services)
    identifier = upstream_identifier(query)
    plans = {
        peer.name: dialect.plan_find(peer, query, identifier, rules.combined_datetime)
        for peer in services.config.peers
    }
    request_charset = query.key_values("SpecificCharacterSet")
    fanout = Fanout(services.config.peers, services.ae_title, services.config.router.max_pdu, context)
    seen: set[str] = set()
    sightings: list[routing.Sighting] = []
    tally = _FindTally()

    message_id = int(event.request.MessageID or 0)

    def stop_requested() -> bool:
        if event.is_cancelled or cancelled_before_served(event.assoc, message_id):
            return True
        return connection_closed(event.assoc)

    for peer_name, raw in fanout.matches(plans, stop_requested):
        plan = plans[peer_name]
        match = _checked_match(plan, query, raw, rules, sightings, tally)
        if match is None:
            continue
        key = duplicate_key(match, query)
        if key in seen:
            continue
        seen.add(key)
        response = response_identifier(match, query, services.ae_title)
        yield status.PENDING, charsets.encode_response(response, request_charset)

    tally.matches = len(seen)
    _record_sightings(sightings, context)
    _log_dropped(tally, plans, context)
    _log_completed(query, fanout, tally, context, started)
    yield _final_status(fanout), None


def _checked_match(
    plan: dialect.PeerPlan,
    query: Query,
    raw: Dataset,
    rules: MatchRules,
    sightings: list[routing.Sighting],
    tally: _FindTally,
) -> Dataset | None:
    """Decode, record, collapse, repair and re-match one peer match; None when it is dropped."""
    peer = plan.peer
    match = charsets.decode_match(peer, raw)
    if plan.collapse_to is not None and split_values(match.get("StudyInstanceUID", "")):
        sightings.append(routing.Sighting.from_match(peer.name, "STUDY", match))
    match = dialect.collapse_match(plan, match)
    if not dialect.repair_unique_keys(query, match):
        tally.without_unique_key[peer.name] = tally.without_unique_key.get(peer.name, 0) + 1
        return None
    sightings.append(routing.Sighting.from_match(peer.name, query.level, match))
    if not matching.is_true_match(query.identifier, match, rules):
        tally.not_matching += 1
        return None
    return match


# Error Comment (0000,0902) of a C-FIND that reached no peer.
NO_PEER_SEARCHED_COMMENT = "no peer could be searched"


def _no_peer_searched(result: FanoutResult) -> bool:
    """Return True when every peer of an uncancelled fan-out failed, so no peer was searched."""
    return not result.cancelled and len(result.failed_peers) == len(result.peers_asked)


def _final_status(fanout: Fanout) -> Dataset | int:
    result = fanout.result
    if result.cancelled:
        return status.CANCEL
    if _no_peer_searched(result):
        # Success with no matches would read as "no priors", so a search that
        # reached no peer is a failure. A search that reached some peers ends
        # in Success, because C-FIND has no partial status.
        return status_with_comment(status.FIND_UNABLE_TO_PROCESS, NO_PEER_SEARCHED_COMMENT)
    if result.truncated_peers:
        # C-FIND has no partial status, so a list that may be incomplete ends in a failure.
        return status_with_comment(
            status.FIND_OUT_OF_RESOURCES, f"peer reply may be truncated: {', '.join(result.truncated_peers)}"
        )
    return status.SUCCESS


def _log_dropped(tally: _FindTally, plans: dict[str, dialect.PeerPlan], context: dict[str, Any]) -> None:
    for peer_name, dropped in sorted(tally.without_unique_key.items()):
        peer = plans[peer_name].peer
        log.warning(
            "find_matches_dropped", **context, peer=peer_name, peer_ae_title=peer.ae_title,
            dropped=dropped, reason="match lacks a unique key that the query can't supply",
        )


def _log_completed(
    query: Query, fanout: Fanout, tally: _FindTally, context: dict[str, Any], started: float
) -> None:
    result = fanout.result
    no_peer_searched = _no_peer_searched(result)
    emit = log.warning if no_peer_searched else log.info
    emit(
        "find_completed", **context, level=query.level, model=query.model.value,
        peers_asked=result.peers_asked, failed_peers=sorted(result.failed_peers),
        truncated_peers=sorted(result.truncated_peers), matches=tally.matches,
        matches_by_peer=dict(sorted(result.matches_by_peer.items())),
        requests_by_peer=dict(sorted(result.requests_by_peer.items())),
        unfinished_peers=result.unfinished_peers,
        relational=query.relational, derived_by_peer=result.derived_by_peer,
        derive_failed_by_peer=result.derive_failed_by_peer,
        dropped_without_unique_key=sum(tally.without_unique_key.values()),
        dropped_not_matching=tally.not_matching, cancelled=result.cancelled,
        reason=NO_PEER_SEARCHED_COMMENT if no_peer_searched else None,
        duration_ms=round((time.monotonic() - started) * 1000),
    )


def _record_sightings(sightings: list[routing.Sighting], context: dict[str, Any]) -> None:
    try:
        routing.record(sightings)
    except Exception:  # a database fault must not cost the workstation its final response
        log.exception("routing_record_failed", **context, sightings=len(sightings))
