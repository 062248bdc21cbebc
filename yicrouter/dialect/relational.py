"""Relational queries and the parent UIDs that a peer may need for them.

A relational query (PS3.4 C.4.1.2.2) from a workstation that negotiated it
goes to a peer as is, unless the peer has needs_parent_uids or a key of a
level above takes part in matching. Then a query one level up runs first,
and the request is sent once per parent match with its parent UIDs.
"""

from __future__ import annotations

from copy import deepcopy
from dataclasses import replace

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset

from yicrouter import routing
from yicrouter.config import PeerSettings
from yicrouter.dialect.keys import (
    CONTROL_KEYWORDS,
    parent_unique_keywords,
    single_value,
    split_off_upper_keys,
    unique_keys_identifier,
)
from yicrouter.dialect.options import finish_requests
from yicrouter.dialect.requests import Draft, PeerRequest
from yicrouter.matching import is_matching_key, is_universal
from yicrouter.query import LEVELS, UNIQUE_KEYS, InformationModel, split_values


def lacks_parent_uid(draft: Draft) -> bool:
    """Return True when a unique key above the draft's level lacks exactly one value (a relational query)."""
    return any(
        len(split_values(draft.identifier.get(keyword, ""))) != 1
        for keyword in parent_unique_keywords(draft.model, draft.level)
    )


def translate_relational_to_study_root(draft: Draft) -> None:
    """Move a Patient Root draft without one PatientID to the Study Root model.

    The routing table records no PatientID to fill in, and a hierarchical
    Patient Root query of every patient first would cost one more level of
    queries. In the Study Root model PatientID is a STUDY key, so it is
    matched at that level and returned from there.
    """
    if draft.model is InformationModel.PATIENT_ROOT and draft.level != "PATIENT":
        if len(split_values(draft.identifier.get("PatientID", ""))) != 1:
            draft.model = InformationModel.STUDY_ROOT


def relational_requests(peer: PeerSettings, draft: Draft, combined_datetime: bool) -> list[PeerRequest]:
    """Build the requests for a draft whose parent unique keys are absent, universal or lists.

    A peer without needs_parent_uids gets the request at its own level when
    no key of a level above takes part in matching. Otherwise the query one
    level up runs first, with those keys, and the request is sent once for
    each of its matches with that match's UIDs. Each match then gets the
    parent match's keys, so the router can re-match them against the
    workstation's keys.
    """
    if peer.needs_parent_uids:
        fill_from_routing_table(peer, draft.identifier, uid_parent_levels(draft.level))
    upper = split_off_upper_keys(draft)
    missing = peer.needs_parent_uids and lacks_parent_uid(draft)
    constrained = any(is_matching_key(element) and not is_universal(element) for element in upper.values())
    if not missing and not constrained:
        return finish_requests(peer, draft, combined_datetime)
    parent_draft = _parent_draft(draft, upper)
    inherit_keys = tuple(dict.fromkeys([
        *(keyword for keyword in upper if keyword not in CONTROL_KEYWORDS),
        *parent_unique_keywords(draft.model, draft.level),
    ]))
    parent = _single_parent_request(peer, parent_draft, combined_datetime)
    return [
        replace(request, parents_from=parent, inherit_keys=inherit_keys)
        for request in finish_requests(peer, draft, combined_datetime)
    ]


def uid_parent_levels(level: str) -> list[str]:
    return [parent for parent in ("STUDY", "SERIES") if LEVELS.index(parent) < LEVELS.index(level)]


def _parent_draft(draft: Draft, upper: dict[str, DataElement]) -> Draft:
    """Build the query one level above `draft`, with the parent unique keys and the upper keys."""
    levels = draft.model.levels
    level = levels[levels.index(draft.level) - 1]
    identifier = unique_keys_identifier(draft.model, level, draft.identifier)
    for keyword, element in upper.items():
        if keyword not in CONTROL_KEYWORDS:
            identifier[keyword] = deepcopy(element)
    if len(split_values(identifier.get("ModalitiesInStudy", ""))) > 1:
        # A parent query is one request, so a list of modalities can't be
        # split per value as for a STUDY query. It becomes a return key, and
        # the router matches the value that the children inherit.
        identifier.ModalitiesInStudy = ""
    return Draft(draft.model, level, identifier)


def _single_parent_request(peer: PeerSettings, draft: Draft, combined_datetime: bool) -> PeerRequest:
    requests = relational_requests(peer, draft, combined_datetime)
    assert len(requests) == 1, "a parent draft has at most one ModalitiesInStudy value"
    return requests[0]


def fill_from_routing_table(peer: PeerSettings, identifier: Dataset, parents: list[str]) -> None:
    """Fill each parent UID that lacks exactly one value from the routing table's record of this peer."""
    known = routing.parent_uids(
        peer.name,
        series_uid=single_value(identifier, "SeriesInstanceUID"),
        sop_instance_uid=single_value(identifier, "SOPInstanceUID"),
    )
    for level in parents:
        keyword = UNIQUE_KEYS[level]
        value = known.get(keyword, "")
        if value and len(split_values(identifier.get(keyword, ""))) != 1:
            setattr(identifier, keyword, value)


def with_parent_uids(request: PeerRequest, parent_match: Dataset) -> PeerRequest | None:
    """Return `request` for one match of its parents_from query.

    The request gets the match's parent UIDs where it lacks exactly one
    value, and the match's inherit_keys as `inherited`. Returns None when
    the match lacks a UID, since the request can't be sent then.
    """
    identifier = deepcopy(request.identifier)
    for keyword in parent_unique_keywords(request.model, request.level):
        if len(split_values(identifier.get(keyword, ""))) == 1:
            continue
        value = single_value(parent_match, keyword)
        if not value:
            return None
        setattr(identifier, keyword, value)
    inherited = Dataset()
    for keyword in request.inherit_keys:
        if keyword in parent_match:
            inherited[keyword] = deepcopy(parent_match[keyword])
    return replace(request, identifier=identifier, parents_from=None, inherited=inherited)


def apply_inherited(request: PeerRequest, match: Dataset) -> Dataset:
    """Copy the parent entity's keys that `match` lacks into it, and return it."""
    if request.inherited is None:
        return match
    for element in request.inherited:
        if element.tag not in match:
            match.add(deepcopy(element))
    return match


def parent_identity(request: PeerRequest, match: Dataset) -> tuple[str, ...]:
    """Return the UIDs that identify a match of a parent query, for de-duplication."""
    levels = request.model.levels
    return tuple(
        str(match.get(UNIQUE_KEYS[level], "") or "").strip()
        for level in levels[: levels.index(request.level) + 1]
    )
