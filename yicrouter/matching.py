"""Attribute matching of PS3.4 C.2.2.2, for the router and for the sample PACS.

The router re-applies a workstation's matching keys to every match that a
peer returns (`is_true_match`), because many PACS ignore keys they do not
support and return entities that do not match. The sample PACS applies the
same rules to its own instances (`dataset_matches`).

Matching types: single value, universal, wild card (`*` and `?`, only for the
VRs of C.2.2.2.4), range for DA, TM and DT including open ranges, list of UID,
and sequence (an entity matches when any item matches, C.2.2.2.6). A key or a
stored attribute with several values matches when any pair of values matches.

Choices that PS3.4 leaves to the SCP, and how this module makes them:

- Person Name matching is case-insensitive unless
  `MatchRules.patient_name_case_sensitive` is set. It applies to every PN key.
- A PN key with one component group is matched against the whole value and
  against the alphabetic group alone. A key with several groups matches when
  every non-empty group of the key matches the same group of the value, so
  `=王*` selects on the ideographic group only. Trailing empty components
  (`DOE^JOHN^^^`) and groups (`DOE^JOHN==`) are insignificant.
- A single DA, TM or DT value matches every stored value within its
  precision, so `1015` matches `101530`.
- IS and DS values are compared as numbers (PS3.4 leaves this to the SCP).

When the peer leaves an attribute out of its match entirely, `is_true_match`
keeps the match. PS3.4 lets an SCP treat an Optional Key that it does not
support for matching as a return key, and leave out of its responses one that
it does not support for existence, so the absence says nothing about the
entity. A peer that leaves out a Required or Unique Key breaks PS3.4 C.2.2.1,
and the router cannot disprove that match either. An attribute that the peer
returns with zero length is an unknown value, and an unknown value fails every
key other than a universal one (PS3.4 states this for Required Keys, for
example in K.2.2.1.1.1 for worklists).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Final

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag, Tag


@dataclass(frozen=True)
class MatchRules:
    """Network-wide matching choices that PS3.4 C.2.2.2 leaves to the SCP."""

    # Whether Person Name (PN) matching distinguishes upper and lower case.
    patient_name_case_sensitive: bool = False
    # Whether the requester negotiated combined date and time range matching.
    combined_datetime: bool = False


QUERY_RETRIEVE_LEVEL_TAG: Final = Tag("QueryRetrieveLevel")
SPECIFIC_CHARACTER_SET_TAG: Final = Tag("SpecificCharacterSet")
# Timezone Offset From UTC states the time zone of a request's DA, TM and DT
# keys, and is not matched itself.
TIMEZONE_OFFSET_TAG: Final = Tag("TimezoneOffsetFromUTC")

# Keys that are filled in for the response but never used for matching.
RETURN_ONLY_KEYWORDS: Final = frozenset(
    {
        "NumberOfPatientRelatedStudies",
        "NumberOfPatientRelatedSeries",
        "NumberOfPatientRelatedInstances",
        "NumberOfStudyRelatedSeries",
        "NumberOfStudyRelatedInstances",
        "NumberOfSeriesRelatedInstances",
        "RetrieveAETitle",
        "RetrieveURL",
        "RetrieveLocationUID",
        "InstanceAvailability",
        "StorageMediaFileSetID",
        "StorageMediaFileSetUID",
        "QueryRetrieveView",
    }
)

# PS3.4 C.2.2.2.4: wild card matching applies to these VRs only.
WILDCARD_VRS: Final = frozenset({"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT"})
# PS3.4 C.2.2.2.5: range matching applies to these VRs only.
RANGE_VRS: Final = frozenset({"DA", "TM", "DT"})
# Text VRs whose leading spaces are significant (PS3.5 table 6.2-1).
TEXT_VRS: Final = frozenset({"LT", "ST", "UT"})
NUMBER_STRING_VRS: Final = frozenset({"IS", "DS"})
# VRs whose values are compared as strings; binary and unknown VRs are never matched.
STRING_VRS: Final = WILDCARD_VRS | RANGE_VRS | NUMBER_STRING_VRS | {"UI"}
NUMERIC_VRS: Final = frozenset({"US", "SS", "UL", "SL", "UV", "SV", "FL", "FD", "AT"})

# Person Name: at most 3 component groups of at most 5 components (PS3.5 6.2.1).
_PN_GROUPS: Final = 3
_PN_COMPONENTS: Final = 5

# With combined date and time range matching (PS3.4 C.2.2.2.5), these date
# and time keys are matched as one DT range.
DATE_TIME_PAIRS: Final = (
    (Tag("StudyDate"), Tag("StudyTime")),
    (Tag("SeriesDate"), Tag("SeriesTime")),
    (Tag("AcquisitionDate"), Tag("AcquisitionTime")),
    (Tag("ContentDate"), Tag("ContentTime")),
    (Tag("PatientBirthDate"), Tag("PatientBirthTime")),
    (Tag("PerformedProcedureStepStartDate"), Tag("PerformedProcedureStepStartTime")),
    (Tag("ScheduledProcedureStepStartDate"), Tag("ScheduledProcedureStepStartTime")),
)


def is_true_match(keys: Dataset, match: Dataset, rules: MatchRules) -> bool:
    """Return True when `match` satisfies every matching key in `keys` (PS3.4 C.2.2.2).

    `keys` is the workstation's request identifier and `match` one peer
    match, both with decoded text values. Attributes that `match` leaves out
    are not held against it (see the module notes).

    A peer that ignores a key and also leaves it out of its matches, as
    dcmqrscp 3.6.7 does with ModalitiesInStudy, would let non-matching
    entities through. So the C-FIND SCP derives such study keys from the
    peer's series before it calls this function.
    """
    return _keys_match(keys, match, rules, absent_matches=True, derived=None)


def dataset_matches(
    keys: Dataset,
    candidate: Dataset,
    rules: MatchRules = MatchRules(),
    derived: Dataset | None = None,
) -> bool:
    """Return True when the stored `candidate` matches every matching key in `keys`.

    This is the matching of an SCP that stores the data itself, so a key
    that `candidate` has no element for matches only when it is universal. A key
    that `derived` contains is matched against the derived value instead.
    """
    return _keys_match(keys, candidate, rules, absent_matches=False, derived=derived)


def is_matching_key(key: DataElement) -> bool:
    """Return True when `key` takes part in matching rather than only asking for a value."""
    tag: BaseTag = key.tag
    if tag in (QUERY_RETRIEVE_LEVEL_TAG, SPECIFIC_CHARACTER_SET_TAG, TIMEZONE_OFFSET_TAG):
        return False
    if tag.group < 0x0008 or tag.is_private:
        return False
    if key.keyword in RETURN_ONLY_KEYWORDS:
        return False
    return key.VR == "SQ" or key.VR in STRING_VRS or key.VR in NUMERIC_VRS


def is_universal(key: DataElement) -> bool:
    """Return True when `key` matches every entity (PS3.4 C.2.2.2.3).

    A zero-length key is universal, and so is `*` in a VR that allows wild
    cards. A sequence key is universal when it has no item or when every key
    of its item is.
    """
    if key.VR == "SQ":
        items = key.value or []
        return not items or all(is_universal(item_key) for item_key in items[0])
    values = [value for value in element_values(key) if value]
    return not values or (key.VR in WILDCARD_VRS and all(value == "*" for value in values))


def element_matches(
    key: DataElement, stored: DataElement | None, rules: MatchRules = MatchRules()
) -> bool:
    """Match one key against one stored element; None or zero length match only universal keys.

    A key with several values matches when any of them matches. For UI this
    is list of UID matching. A stored element with several values matches
    when any of its values matches.
    """
    if is_universal(key):
        return True
    if stored is None:
        return False
    if key.VR == "SQ":
        return _sequence_matches(key, stored, rules, absent_matches=False)
    return _values_match(key, stored, rules)


def element_values(element: DataElement) -> list[str]:
    """Return the values of `element` as strings without their padding."""
    value = element.value
    if value is None or value == "" or value == b"":
        return []
    items = list(value) if isinstance(value, (MultiValue, list, tuple)) else [value]
    return [_strip_padding(str(item), element.VR) for item in items if item is not None]


def has_wildcard(value: str) -> bool:
    return "*" in value or "?" in value


def _keys_match(
    keys: Dataset,
    candidate: Dataset,
    rules: MatchRules,
    *,
    absent_matches: bool,
    derived: Dataset | None,
) -> bool:
    combined = _combined_pairs(keys, rules)
    for key_tag in keys.keys():
        key = keys[key_tag]
        if not is_matching_key(key) or key.tag in combined:
            continue
        stored = _stored_element(key.tag, candidate, derived)
        if stored is None and absent_matches:
            continue
        if not _element_matches(key, stored, rules, absent_matches):
            return False
    for date_tag, time_tag in _pairs_of(combined):
        if not _combined_matches(keys, candidate, date_tag, time_tag, rules, absent_matches):
            return False
    return True


def _stored_element(tag: BaseTag, candidate: Dataset, derived: Dataset | None) -> DataElement | None:
    if derived is not None and tag in derived:
        return derived[tag]
    return candidate[tag] if tag in candidate else None


def _element_matches(
    key: DataElement, stored: DataElement | None, rules: MatchRules, absent_matches: bool
) -> bool:
    if is_universal(key):
        return True
    if stored is None:
        return absent_matches
    if key.VR == "SQ":
        return _sequence_matches(key, stored, rules, absent_matches)
    return _values_match(key, stored, rules)


def _values_match(key: DataElement, stored: DataElement, rules: MatchRules) -> bool:
    key_values = [value for value in element_values(key) if value]
    stored_values = [value for value in element_values(stored) if value]
    return any(
        _value_matches(key_value, stored_value, key.VR, rules)
        for key_value in key_values
        for stored_value in stored_values
    )


def _strip_padding(value: str, vr: str) -> str:
    if vr in TEXT_VRS:
        return value.rstrip(" \x00")
    return value.strip(" \x00")


def _value_matches(key_value: str, stored_value: str, vr: str, rules: MatchRules) -> bool:
    if vr in RANGE_VRS:
        return _date_time_matches(key_value, stored_value, vr)
    if vr == "PN":
        return _person_name_matches(key_value, stored_value, rules)
    if vr in WILDCARD_VRS and has_wildcard(key_value):
        return _wildcard_pattern(key_value, ignore_case=False).fullmatch(stored_value) is not None
    if vr in NUMBER_STRING_VRS:
        return _numbers_equal(key_value, stored_value)
    return key_value == stored_value


def _numbers_equal(key_value: str, stored_value: str) -> bool:
    try:
        return Decimal(key_value) == Decimal(stored_value)
    except InvalidOperation:
        return key_value == stored_value


def _wildcard_pattern(key_value: str, *, ignore_case: bool) -> re.Pattern[str]:
    """Translate `*` (any run of characters) and `?` (one character) into a regex."""
    parts = []
    for character in key_value:
        if character == "*":
            parts.append(".*")
        elif character == "?":
            parts.append(".")
        else:
            parts.append(re.escape(character))
    flags = re.DOTALL | (re.IGNORECASE if ignore_case else 0)
    return re.compile("".join(parts), flags)


# --- Person Name ----------------------------------------------------------------


def _person_name_matches(key_value: str, stored_value: str, rules: MatchRules) -> bool:
    ignore_case = not rules.patient_name_case_sensitive
    key_groups = key_value.split("=")
    stored_groups = _pn_groups(stored_value)
    if len(key_groups) == 1:
        candidates = {stored_value, "=".join(stored_groups).rstrip("="), stored_groups[0]}
        return any(
            _pn_group_matches(key_value, candidate, ignore_case) for candidate in candidates
        )
    for index, key_group in enumerate(key_groups[:_PN_GROUPS]):
        if not key_group.strip() or key_group.strip() == "*":
            continue
        if not _pn_group_matches(key_group, stored_groups[index], ignore_case):
            return False
    return True


def _pn_groups(value: str) -> list[str]:
    """Split a PN value into 3 component groups, each without trailing empty components."""
    groups = [_trim_components(group) for group in value.split("=")[:_PN_GROUPS]]
    return groups + [""] * (_PN_GROUPS - len(groups))


def _trim_components(group: str) -> str:
    return "^".join(component.strip() for component in group.split("^")).rstrip("^")


def _pn_group_matches(key_group: str, stored_group: str, ignore_case: bool) -> bool:
    """Match one key component group against one stored group.

    A wild card key is also tried against the stored group padded to five
    components, so `DOE^*` matches a peer's `DOE` as well as `DOE^JOHN`.
    """
    key_group = key_group.strip()
    trimmed = _trim_components(stored_group)
    if has_wildcard(key_group):
        pattern = _wildcard_pattern(key_group, ignore_case=ignore_case)
        padded = "^".join((trimmed.split("^") + [""] * _PN_COMPONENTS)[:_PN_COMPONENTS])
        return any(pattern.fullmatch(form) for form in (stored_group.strip(), trimmed, padded))
    wanted = _trim_components(key_group)
    if ignore_case:
        return wanted.casefold() == trimmed.casefold()
    return wanted == trimmed


# --- Sequence matching ----------------------------------------------------------


def _sequence_matches(
    key: DataElement, stored: DataElement, rules: MatchRules, absent_matches: bool
) -> bool:
    """Match a sequence key: an entity matches if any stored item matches (PS3.4 C.2.2.2.6)."""
    if stored.VR != "SQ" or not stored.value:
        return False
    key_item = key.value[0]
    return any(
        _keys_match(key_item, item, rules, absent_matches=absent_matches, derived=None)
        for item in stored.value
    )


# --- Range matching (PS3.4 C.2.2.2.5) ---------------------------------------------
# Each bound and each stored value is padded to a fixed-width string, so plain
# string comparison orders them. A lower bound is padded with the earliest
# value and an upper bound with the latest, so "-12" in TM includes
# 12:59:59.999999, and a single value covers every value within its precision.

_DT_RANGE: Final = re.compile(r"^([0-9.]*(?:[+-][0-9]{4})?)-([0-9.]*(?:[+-][0-9]{4})?)$")
_DT_OFFSET: Final = re.compile(r"[+-][0-9]{4}$")


def _date_time_matches(key_value: str, stored_value: str, vr: str) -> bool:
    lower, upper = _bounds(key_value, vr)
    stored = _normalize(stored_value, vr, upper=False)
    if lower and stored < _normalize(lower, vr, upper=False):
        return False
    if upper and stored > _normalize(upper, vr, upper=True):
        return False
    return True


def _bounds(key_value: str, vr: str) -> tuple[str, str]:
    """Return the (lower, upper) bounds of a key; "" is an open end."""
    split = _split_range(key_value, vr)
    return split if split is not None else (key_value, key_value)


def _split_range(key_value: str, vr: str) -> tuple[str, str] | None:
    if vr == "DT":
        # A DT value may carry a UTC offset such as -0500, so a plain split on
        # "-" would cut it in two.
        match = _DT_RANGE.match(key_value)
        return (match.group(1), match.group(2)) if match else None
    if "-" not in key_value:
        return None
    lower, _, upper = key_value.partition("-")
    return lower.strip(), upper.strip()


# (width, earliest, latest) for each component, from the left.
_DATE_PARTS: Final = ((4, "0000", "9999"), (2, "01", "12"), (2, "01", "31"))
_TIME_PARTS: Final = ((2, "00", "23"), (2, "00", "59"), (2, "00", "59"))


def _normalize(value: str, vr: str, *, upper: bool) -> str:
    """Pad a DA, TM or DT value to full precision with the earliest or latest value.

    NOTE: the UTC offset of a DT value is dropped, so values with different
    offsets are compared as if they were in the same time zone.
    """
    if vr == "DA":
        return _pad_digits(value.replace(".", ""), _DATE_PARTS, upper)
    if vr == "TM":
        whole, _, fraction = value.replace(":", "").partition(".")
        return _pad_digits(whole, _TIME_PARTS, upper) + "." + _pad_fraction(fraction, upper)
    whole, _, fraction = _DT_OFFSET.sub("", value).partition(".")
    padded = _pad_digits(whole, _DATE_PARTS + _TIME_PARTS, upper)
    return padded + "." + _pad_fraction(fraction, upper)


def _pad_digits(digits: str, parts: tuple[tuple[int, str, str], ...], upper: bool) -> str:
    result = []
    position = 0
    for width, earliest, latest in parts:
        part = digits[position : position + width]
        if len(part) < width:
            part = latest if upper else earliest
        result.append(part)
        position += width
    return "".join(result)


def _pad_fraction(fraction: str, upper: bool) -> str:
    return fraction[:6].ljust(6, "9" if upper else "0")


# --- Combined date and time range matching (PS3.4 C.2.2.2.5) ----------------------


def _combined_pairs(keys: Dataset, rules: MatchRules) -> set[BaseTag]:
    """Return the date and time tags of `keys` that are matched as one DT range.

    A pair qualifies when the requester negotiated combined matching, both
    keys hold one non-universal value and at least one of them is a range.
    """
    if not rules.combined_datetime:
        return set()
    tags: set[BaseTag] = set()
    for date_tag, time_tag in DATE_TIME_PAIRS:
        if date_tag not in keys or time_tag not in keys:
            continue
        date_values = element_values(keys[date_tag])
        time_values = element_values(keys[time_tag])
        if len(date_values) != 1 or len(time_values) != 1 or not date_values[0] or not time_values[0]:
            continue
        if "-" in date_values[0] or "-" in time_values[0]:
            tags.update((date_tag, time_tag))
    return tags


def _pairs_of(tags: set[BaseTag]) -> Iterator[tuple[BaseTag, BaseTag]]:
    for date_tag, time_tag in DATE_TIME_PAIRS:
        if date_tag in tags:
            yield date_tag, time_tag


def _combined_matches(
    keys: Dataset,
    candidate: Dataset,
    date_tag: BaseTag,
    time_tag: BaseTag,
    rules: MatchRules,
    absent_matches: bool,
) -> bool:
    """Match a date key and a time key as one range of date-times.

    `20240105-20240107` with `1000-1800` selects 2024-01-05 10:00 up to
    2024-01-07 18:00. When the match lacks the date or the time, the two keys
    fall back to independent matching.
    """
    date_key, time_key = keys[date_tag], keys[time_tag]
    stored_date = candidate[date_tag] if date_tag in candidate else None
    stored_time = candidate[time_tag] if time_tag in candidate else None
    if stored_date is None or stored_time is None:
        return all(
            (stored is None and absent_matches) or _element_matches(key, stored, rules, absent_matches)
            for key, stored in ((date_key, stored_date), (time_key, stored_time))
        )
    dates = [value for value in element_values(stored_date) if value]
    times = [value for value in element_values(stored_time) if value]
    if not dates or not times:
        return False
    date_lower, date_upper = _bounds(element_values(date_key)[0], "DA")
    time_lower, time_upper = _bounds(element_values(time_key)[0], "TM")
    lower = _combined_bound(date_lower, time_lower, upper=False)
    upper = _combined_bound(date_upper, time_upper, upper=True)
    stored = _normalize(dates[0], "DA", upper=False) + _normalize(times[0], "TM", upper=False)
    return (not lower or stored >= lower) and (not upper or stored <= upper)


def _combined_bound(date: str, time: str, *, upper: bool) -> str:
    if not date:
        return ""
    return _normalize(date, "DA", upper=upper) + _normalize(time, "TM", upper=upper)
