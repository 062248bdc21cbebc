"""Find the peers that hold the data that a retrieve requests.

The routing table is checked first. On a miss, a targeted C-FIND at the
retrieve's level, with only its unique keys, goes to every peer, and the
matches are recorded before the table is asked again.
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


def locate_peers(query: Query, services: RouterServices, log_context: dict[str, Any]) -> Location:
    """Return where the data is, from the routing table or a targeted C-FIND."""
    values = query.key_values(query.unique_key)
    names = routing.peers_holding(query.level, values)
    unsearched: list[str] = []
    if not names:
        unsearched = _targeted_find(query, services, log_context)
        names = routing.peers_holding(query.level, values)
    peers = [services.config.peer_by_name(name) for name in names]
    return Location([peer for peer in peers if peer is not None], unsearched)


def _locator_identifier(query: Query) -> Dataset:
    identifier = Dataset()
    identifier.QueryRetrieveLevel = query.level
    for level in query.model.levels[: query.model.levels.index(query.level) + 1]:
        keyword = UNIQUE_KEYS[level]
        setattr(identifier, keyword, query.identifier.get(keyword, ""))
    if "PatientID" not in identifier:
        identifier.PatientID = ""
    return identifier


def _targeted_find(query: Query, services: RouterServices, log_context: dict[str, Any]) -> list[str]:
    """Query every peer for the data and record the matches.

    Returns the names of the peers that could not be searched.
    """
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
    log.info(
        "move_located", **log_context, peers_asked=fanout.result.peers_asked,
        found_at=sorted({s.peer for s in sightings}), failed_peers=sorted(fanout.result.failed_peers),
    )
    return sorted(fanout.result.failed_peers)
