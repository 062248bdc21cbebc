"""A peer's C-FIND matches, repaired and collapsed to the workstation's Query/Retrieve Level."""

from __future__ import annotations

from copy import deepcopy

from pydicom.dataset import Dataset

from yicrouter.dialect.keys import CONTROL_KEYWORDS, PATIENT_KEYS
from yicrouter.dialect.requests import PeerPlan
from yicrouter.query import UNIQUE_KEYS, Query, split_values


def inherit_upper_keys(plan: PeerPlan, match: Dataset, upper_matches: list[Dataset]) -> None:
    """Copy the keys of the levels above, as the preconditions returned them, into `match`."""
    for keyword in plan.inherited_keys:
        if keyword in match:
            continue
        for upper in upper_matches:
            if keyword in upper:
                match[keyword] = deepcopy(upper[keyword])
                break


def collapse_match(plan: PeerPlan, match: Dataset) -> Dataset:
    """Return a peer's match at the workstation's Query/Retrieve Level.

    Only a STUDY match for a PATIENT query is collapsed: it keeps the
    patient keys and loses the study keys.
    """
    if plan.collapse_to != "PATIENT":
        return match
    patient = Dataset()
    for element in match:
        if element.keyword in CONTROL_KEYWORDS or element.keyword in PATIENT_KEYS:
            patient.add(deepcopy(element))
    patient.QueryRetrieveLevel = "PATIENT"
    return patient


def repair_unique_keys(query: Query, match: Dataset) -> bool:
    """Fill in the unique keys that `match` lacks from the query; return False if one is still missing.

    A unique key of a level above the Query/Retrieve Level has one value in
    a hierarchical query, so every match has that value. The unique key of
    the level itself is copied only when the query gives exactly one value.
    In a relational query, a parent unique key that the query does not give
    one value for may stay missing: the match is still identified by the
    unique key of its level.
    """
    levels = query.model.levels
    for level in levels[: levels.index(query.level) + 1]:
        keyword = UNIQUE_KEYS[level]
        if split_values(match.get(keyword, "")):
            continue
        values = query.key_values(keyword)
        if len(values) != 1 or any(mark in values[0] for mark in ("*", "?")):
            if query.relational and level != query.level:
                continue
            return False
        setattr(match, keyword, values[0])
    return True
