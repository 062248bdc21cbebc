"""The key-level quirk options of a peer, applied to a request that is otherwise ready to send."""

from __future__ import annotations

from copy import deepcopy
from typing import Final

from pydicom.dataset import Dataset

from yicrouter import charsets
from yicrouter.config import PeerSettings
from yicrouter.dialect.keys import CONTROL_KEYWORDS
from yicrouter.dialect.requests import Draft, PeerRequest
from yicrouter.matching import RANGE_VRS, WILDCARD_VRS
from yicrouter.query import split_values

# Date and time keys matched together under combined date-time matching (PS3.4 C.2.2.2.5).
_DATE_TIME_PAIRS: Final = (
    ("StudyDate", "StudyTime"),
    ("SeriesDate", "SeriesTime"),
    ("PerformedProcedureStepStartDate", "PerformedProcedureStepStartTime"),
    ("ContentDate", "ContentTime"),
    ("AcquisitionDate", "AcquisitionTime"),
)


def finish_requests(peer: PeerSettings, draft: Draft, combined_datetime: bool) -> list[PeerRequest]:
    """Apply the key-level options to a draft and split it into one request per modality."""
    identifier = draft.identifier
    peer_combines = combined_datetime and peer.combined_datetime
    if combined_datetime and not peer.combined_datetime:
        _drop_times_beside_date_ranges(identifier)
    if not peer.date_ranges:
        _empty_range_keys(identifier)
    if not peer.universal_matching:
        fill_universal_keys(identifier)
    identifier.QueryRetrieveLevel = draft.level
    requests = []
    for variant in _modality_variants(identifier):
        variant = charsets.encode_request(peer, variant)
        requests.append(PeerRequest(draft.model, draft.level, variant, combined_datetime=peer_combines))
    return requests


def _drop_times_beside_date_ranges(identifier: Dataset) -> None:
    """Empty each time key whose date key is a range, for a peer that can't combine them.

    Under combined date-time matching the date and time ranges form one
    range (PS3.4 C.2.2.2.5). For StudyDate 20240101-20240102 with StudyTime
    080000-120000, a peer that matches them independently misses a study at
    15:00 on 20240101. So the peer gets the date range alone, and the router
    applies the combined rule to the matches.
    """
    for date_keyword, time_keyword in _DATE_TIME_PAIRS:
        if date_keyword not in identifier or time_keyword not in identifier:
            continue
        date_value = str(identifier[date_keyword].value or "")
        if "-" in date_value and split_values(identifier[time_keyword].value):
            identifier[time_keyword].value = ""


def _empty_range_keys(identifier: Dataset) -> None:
    """Empty DA, TM and DT keys that hold a range or a wild card; they stay return keys."""
    for element in identifier:
        if element.VR not in RANGE_VRS:
            continue
        value = str(element.value or "")
        if any(mark in value for mark in ("-", "*", "?")):
            element.value = ""


def fill_universal_keys(identifier: Dataset) -> None:
    """Send "*" for each universal key whose VR allows wild card matching (PS3.4 C.2.2.2.4)."""
    for element in identifier:
        if element.keyword in CONTROL_KEYWORDS or element.VR not in WILDCARD_VRS:
            continue
        if not split_values(element.value):
            element.value = "*"


def _modality_variants(identifier: Dataset) -> list[Dataset]:
    """Return one identifier per ModalitiesInStudy value.

    Peers treat a multi-valued ModalitiesInStudy key differently (as "any
    of", as "all of", or as one literal value), so each peer gets one query
    per value and the matches are de-duplicated by the caller.
    """
    if "ModalitiesInStudy" not in identifier:
        return [identifier]
    values = split_values(identifier.ModalitiesInStudy)
    if len(values) < 2:
        return [identifier]
    variants = []
    for value in dict.fromkeys(values):
        variant = deepcopy(identifier)
        variant.ModalitiesInStudy = value
        variants.append(variant)
    return variants
