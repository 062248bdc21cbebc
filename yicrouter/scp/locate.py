"""Find the peers that hold the data that a retrieve requests.

For a STUDY, SERIES or IMAGE level retrieve the routing table is checked
first. On a miss, a targeted C-FIND at the retrieve's level, with only its
unique keys, goes to every peer, and the matches are recorded before the
table is asked again.

A PATIENT-level retrieve never trusts the table, because Patient IDs are
unique only within one trust and the table may not yet know that another
trust now stores a different person with the same Patient ID. Its targeted
C-FIND always goes to every peer, and only the peers that match now count.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydicom.dataset import Dataset

from yicrouter import charsets, dialect, routing
from yicrouter.config import PeerSettings
from yicrouter.fanout import Fanout
from yicrouter.logs import get_logger
from yicrouter.query import UNIQUE_KEYS, Query
from yicrouter.scp.common import RouterServices

log = get_logger(__name__)


@dataclass
class Location:
    """The peers that hold the data, most recently seen first, and those not searched."""

    peers: list[PeerSettings] = field(default_factory=list)
    unsearched: list[str] = field(default_factory=list)


@dataclass
class _Sweep:
    """The outcome of one targeted C-FIND to every peer."""

    # Peers with a match at the retrieve's level, by name.
    found_at: list[str]
    # Peers that failed, missed their deadline or could not be associated, by name.
    unsearched: list[str]


def locate_peers(query: Query, services: RouterServices, log_context: dict[str, Any]) -> Location:
    """Return where the data is, from the routing table or a targeted C-FIND."""
    if query.level == "PATIENT":
        return _locate_patient(query, services, log_context)
    values = query.key_values(query.unique_key)
    names = routing.peers_holding(query.level, values)
    unsearched: list[str] = []
    if not names:
        unsearched = _targeted_find(query, services, log_context).unsearched
        names = routing.peers_holding(query.level, values)
    return Location(_peer_settings(services, names), unsearched)


def _locate_patient(query: Query, services: RouterServices, log_context: dict[str, Any]) -> Location:
    """Return the peers that hold the Patient ID now, by a targeted C-FIND to every peer.

    A peer that could not be searched may hold another person with the same
    Patient ID, so any unsearched peer leaves the location without peers. The
    retrieve is then rejected, as it is when more than one peer stores the ID.
    """
    sweep = _targeted_find(query, services, log_context)
    if sweep.unsearched:
        return Location([], sweep.unsearched)
    return Location(_peer_settings(services, sweep.found_at), [])


def _peer_settings(services: RouterServices, names: list[str]) -> list[PeerSettings]:
    peers = [services.config.peer_by_name(name) for name in names]
    return [peer for peer in peers if peer is not None]


def _locator_identifier(query: Query) -> Dataset:
    identifier = Dataset()
    identifier.QueryRetrieveLevel = query.level
    for level in query.model.levels[: query.model.levels.index(query.level) + 1]:
        keyword = UNIQUE_KEYS[level]
        setattr(identifier, keyword, query.identifier.get(keyword, ""))
    if "PatientID" not in identifier:
        identifier.PatientID = ""
    return identifier


def _targeted_find(query: Query, services: RouterServices, log_context: dict[str, Any]) -> _Sweep:
    """Query every peer for the data, record the matches and return where they were found."""
    router = services.config.router
    identifier = _locator_identifier(query)
    plans = {peer.name: dialect.plan_find(peer, query, identifier) for peer in services.config.peers}
    fanout = Fanout(services.config.peers, router.ae_title, router.max_pdu, log_context)
    sightings = []
    for peer_name, raw in fanout.matches(plans):
        plan = plans[peer_name]
        match = charsets.decode_match(plan.peer, raw)
        if plan.collapse_to is not None:
            sightings.append(routing.Sighting.from_match(peer_name, "STUDY", match))
        match = dialect.collapse_match(plan, match)
        if dialect.repair_unique_keys(query, match):
            sightings.append(routing.Sighting.from_match(peer_name, query.level, match))
    routing.record(sightings)
    found_at = sorted({s.peer for s in sightings if s.level == query.level})
    failed = sorted(fanout.result.failed_peers)
    log.info(
        "move_located", **log_context, peers_asked=fanout.result.peers_asked,
        found_at=found_at, failed_peers=failed,
    )
    return _Sweep(found_at, failed)
