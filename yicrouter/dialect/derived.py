"""STUDY keys that the router derives from the study's series and instances at the same peer."""

from __future__ import annotations

from copy import deepcopy
from typing import Final

from pydicom.dataset import Dataset

from yicrouter import charsets
from yicrouter.dialect.keys import single_value
from yicrouter.dialect.options import fill_universal_keys
from yicrouter.dialect.requests import PeerPlan, PeerRequest
from yicrouter.matching import is_universal
from yicrouter.query import UNIQUE_KEYS, Query, split_values

# STUDY keys that the router can derive from the study's series and
# instances at the same peer, and the SERIES or IMAGE key that each comes from.
DERIVABLE_STUDY_KEYS: Final = {"ModalitiesInStudy": "Modality", "SOPClassesInStudy": "SOPClassUID"}


def derived_keys_for(query: Query) -> tuple[str, ...]:
    """Return the derivable keys of a STUDY query that constrains at least one of them.

    Every derivable key that the query requests is returned, as a matching
    or as a return key, since one SERIES query serves them all. A query
    that requests them only as return keys gets none derived.
    """
    if query.level != "STUDY":
        return ()
    requested = [keyword for keyword in DERIVABLE_STUDY_KEYS if keyword in query.identifier]
    if not any(not is_universal(query.identifier[keyword]) for keyword in requested):
        return ()
    return tuple(requested)


def needs_derivation(plan: PeerPlan, match: Dataset) -> bool:
    """Return True when a STUDY match lacks a key of plan.derive_keys or has it empty.

    An empty value is derived as well: PS3.4 makes it an unknown value,
    which fails every non-universal key, but a peer that does not compute
    the key returns it so.
    """
    return any(not split_values(match.get(keyword, "")) for keyword in plan.derive_keys)


def derivation_request(plan: PeerPlan, study_match: Dataset, level: str, series_uid: str = "") -> PeerRequest | None:
    """Return the SERIES query of a study's series, or the IMAGE query of one series.

    The request uses the model of the plan's first request, with the parent
    UIDs from `study_match`. Returns None when the match lacks one of them.
    """
    model = plan.requests[0].model
    identifier = Dataset()
    identifier.QueryRetrieveLevel = level
    for parent in model.levels[: model.levels.index("STUDY") + 1]:
        keyword = UNIQUE_KEYS[parent]
        value = single_value(study_match, keyword)
        if not value:
            return None
        setattr(identifier, keyword, value)
    identifier.SeriesInstanceUID = series_uid
    if level == "SERIES":
        identifier.Modality = ""
    if "SOPClassesInStudy" in plan.derive_keys:
        identifier.SOPClassUID = ""
    if level == "IMAGE":
        identifier.SOPInstanceUID = ""
    if not plan.peer.universal_matching:
        fill_universal_keys(identifier)
    identifier = charsets.encode_request(plan.peer, identifier)
    return PeerRequest(model, level, identifier)


def derive_study_keys(plan: PeerPlan, lower_matches: list[Dataset]) -> Dataset:
    """Return each key of plan.derive_keys that the series or instance matches give values for.

    A key whose source the peer returned for no series or instance is left
    out, so the match keeps it absent: dcmqrscp 3.6.7, for one, returns
    SOPClassUID at no level, so SOPClassesInStudy can't be derived there.
    """
    derived = Dataset()
    for keyword in plan.derive_keys:
        source = DERIVABLE_STUDY_KEYS[keyword]
        values = sorted({value for match in lower_matches for value in split_values(match.get(source, ""))})
        if values:
            setattr(derived, keyword, values[0] if len(values) == 1 else values)
    return derived


def fill_derived(study_match: Dataset, derived: Dataset) -> None:
    """Copy each derived key into `study_match` unless the peer returned a value for it."""
    for element in derived:
        if not split_values(study_match.get(element.keyword, "")):
            study_match[element.tag] = deepcopy(element)


def series_lacking_sop_class(plan: PeerPlan, series_matches: list[Dataset]) -> list[str]:
    """Return the UIDs of the series whose match lacks SOPClassUID, when SOPClassesInStudy is derived.

    Many PACS return SOPClassUID at IMAGE level only, so those series
    need an IMAGE-level query each.
    """
    if "SOPClassesInStudy" not in plan.derive_keys:
        return []
    return [
        single_value(match, "SeriesInstanceUID")
        for match in series_matches
        if not split_values(match.get("SOPClassUID", "")) and single_value(match, "SeriesInstanceUID")
    ]
