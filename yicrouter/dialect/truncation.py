"""Requests split by StudyDate range when a peer with max_matches may have cut its reply short."""

from __future__ import annotations

import re
from copy import deepcopy
from dataclasses import replace
from datetime import date, timedelta
from typing import Final

from yicrouter.dialect.requests import PeerRequest

# Maximum number of times one request is halved by date range for a peer with
# max_matches, so one workstation C-FIND costs a peer at most 2**6 requests.
MAX_SPLIT_DEPTH: Final = 6

_CLOSED_DATE_RANGE: Final = re.compile(r"^(\d{8})-(\d{8})$")


def split_by_study_date(request: PeerRequest) -> list[PeerRequest]:
    """Halve the StudyDate range of a request that may have been truncated.

    Returns [] when the request can't be split: StudyDate is not a closed
    range of more than one day, or the request was already halved
    MAX_SPLIT_DEPTH times.
    """
    if request.split_depth >= MAX_SPLIT_DEPTH or "StudyDate" not in request.identifier:
        return []
    bounds = _closed_date_range(str(request.identifier.StudyDate or ""))
    if bounds is None:
        return []
    first, last = bounds
    if first >= last:
        return []
    middle = first + (last - first) // 2
    halves = []
    for low, high in ((first, middle), (middle + timedelta(days=1), last)):
        identifier = deepcopy(request.identifier)
        identifier.StudyDate = f"{low:%Y%m%d}-{high:%Y%m%d}"
        halves.append(replace(request, identifier=identifier, split_depth=request.split_depth + 1))
    return halves


def _closed_date_range(value: str) -> tuple[date, date] | None:
    # NOTE: an open range such as "20240101-" is not split, so a full
    # reply to it from a peer with max_matches ends in 0xA700.
    found = _CLOSED_DATE_RANGE.match(value.strip())
    if found is None:
        return None
    try:
        return (
            date(int(found[1][:4]), int(found[1][4:6]), int(found[1][6:])),
            date(int(found[2][:4]), int(found[2][4:6]), int(found[2][6:])),
        )
    except ValueError:
        return None
