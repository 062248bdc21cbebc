"""Query/Retrieve matching for the sample PACS.

This module implements the matching types of PS3.4 C.2.2.2 that a sample PACS
needs: single value, universal, wild card, range, list of UID and sequence
matching. It also checks the Query/Retrieve Level and the unique keys of a
baseline hierarchical query (PS3.4 C.4.1.2.1), groups instances into the
entities of a level, and builds the C-FIND response identifiers. It works on
header datasets only and never opens a file.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from copy import deepcopy
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from pydicom.dataelem import DataElement, empty_value_for_VR
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag, Tag

PATIENT: Final = "PATIENT"
STUDY: Final = "STUDY"
SERIES: Final = "SERIES"
IMAGE: Final = "IMAGE"

# The levels of the two information models, from the top down (PS3.4 C.6.1, C.6.2).
PATIENT_ROOT_LEVELS: Final = (PATIENT, STUDY, SERIES, IMAGE)
STUDY_ROOT_LEVELS: Final = (STUDY, SERIES, IMAGE)

UNIQUE_KEYS: Final = {
    PATIENT: "PatientID",
    STUDY: "StudyInstanceUID",
    SERIES: "SeriesInstanceUID",
    IMAGE: "SOPInstanceUID",
}

QUERY_RETRIEVE_LEVEL_TAG: Final = Tag("QueryRetrieveLevel")
SPECIFIC_CHARACTER_SET_TAG: Final = Tag("SpecificCharacterSet")

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
        "InstanceAvailability",
    }
)

# PS3.4 C.2.2.2.4: wild card matching applies to these VRs only.
WILDCARD_VRS: Final = frozenset({"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT"})
# PS3.4 C.2.2.2.5: range matching applies to these VRs only.
RANGE_VRS: Final = frozenset({"DA", "TM", "DT"})
# Text VRs whose leading spaces are significant (PS3.5 table 6.2-1).
TEXT_VRS: Final = frozenset({"LT", "ST", "UT"})


class IdentifierError(ValueError):
    """An Identifier that does not fit the information model or level.

    The SCP responds with 0xA900, Identifier Does Not Match SOP Class.
    """


@dataclass(frozen=True)
class IndexedInstance:
    """One stored SOP Instance: its file and its header, read without pixel data."""

    path: Path
    header: Dataset


def read_level(identifier: Dataset, levels: Sequence[str]) -> str:
    """Return the Query/Retrieve Level of `identifier`.

    Raises IdentifierError when the level is missing, empty or not a level of
    the information model whose levels are `levels`.
    """
    if QUERY_RETRIEVE_LEVEL_TAG not in identifier:
        raise IdentifierError("the Identifier has no Query/Retrieve Level (0008,0052)")
    values = element_values(identifier[QUERY_RETRIEVE_LEVEL_TAG])
    if len(values) != 1 or values[0] not in levels:
        raise IdentifierError(
            f"Query/Retrieve Level {'/'.join(values) or '(empty)'} is invalid for "
            f"this information model; expected one of {', '.join(levels)}"
        )
    return values[0]


def check_unique_keys(
    identifier: Dataset, level: str, levels: Sequence[str], *, retrieve: bool
) -> None:
    """Check the unique keys of a baseline hierarchical query or retrieval.

    Each level above `level` needs its unique key with a single value and no
    wild card (PS3.4 C.4.1.2.1 and C.4.2.2.1). A retrieval also needs the
    unique key of `level` itself, which may be a list of UIDs. Raises
    IdentifierError naming the key that breaks the rule.
    """
    position = levels.index(level)
    for upper_level in levels[:position]:
        keyword = UNIQUE_KEYS[upper_level]
        values = _identifier_values(identifier, keyword)
        if len(values) != 1 or _has_wildcard(values[0]):
            raise IdentifierError(
                f"{keyword} needs a single value without wild cards at "
                f"Query/Retrieve Level {level}; got {'/'.join(values) or '(empty)'}"
            )

    if retrieve:
        keyword = UNIQUE_KEYS[level]
        values = _identifier_values(identifier, keyword)
        if not values or any(_has_wildcard(value) for value in values):
            raise IdentifierError(
                f"a retrieval at Query/Retrieve Level {level} needs {keyword} "
                "with one or more values and no wild cards"
            )


def find_matches(
    instances: Iterable[IndexedInstance],
    identifier: Dataset,
    level: str,
    levels: Sequence[str],
    retrieve_ae_title: str,
) -> Iterator[Dataset]:
    """Yield one C-FIND response identifier for each entity at `level` that matches.

    An entity matches when at least one of its instances matches every key, so
    a key from a lower level selects the entities that contain such an
    instance. The response contains the requested keys, the unique key of the
    level, the Query/Retrieve Level and the entity's Specific Character Set.
    """
    for members in _group_entities(instances, level, levels).values():
        derived = derived_attributes(level, members)
        for instance in members:
            if dataset_matches(identifier, instance.header, derived):
                yield _build_response(identifier, level, instance, derived, retrieve_ae_title)
                break


def select_instances(
    instances: Iterable[IndexedInstance], identifier: Dataset, level: str, levels: Sequence[str]
) -> list[IndexedInstance]:
    """Return the instances that a C-MOVE or C-GET Identifier selects.

    Only the unique keys of `level` and the levels above it take part, as
    PS3.4 C.4.2.2.1 defines for a retrieval.
    """
    position = levels.index(level)
    keys = Dataset()
    for keyword in (UNIQUE_KEYS[upper_level] for upper_level in levels[: position + 1]):
        if keyword in identifier:
            keys[keyword] = identifier[keyword]
    return [instance for instance in instances if dataset_matches(keys, instance.header)]


def derived_attributes(level: str, members: Sequence[IndexedInstance]) -> Dataset:
    """Return the attributes that an SCP computes for one entity at `level`.

    These are the counts and lists of PS3.4 C.6.1.1 and C.6.2.1, for example
    ModalitiesInStudy and NumberOfStudyRelatedInstances.
    """
    derived = Dataset()
    studies = {str(member.header.get("StudyInstanceUID", "")) for member in members}
    series = {str(member.header.get("SeriesInstanceUID", "")) for member in members}
    if level == PATIENT:
        derived.NumberOfPatientRelatedStudies = len(studies)
        derived.NumberOfPatientRelatedSeries = len(series)
        derived.NumberOfPatientRelatedInstances = len(members)
    elif level == STUDY:
        modalities = {str(member.header.get("Modality", "")) for member in members}
        sop_classes = {str(member.header.get("SOPClassUID", "")) for member in members}
        derived.ModalitiesInStudy = sorted(modality for modality in modalities if modality)
        derived.SOPClassesInStudy = sorted(uid for uid in sop_classes if uid)
        derived.NumberOfStudyRelatedSeries = len(series)
        derived.NumberOfStudyRelatedInstances = len(members)
    elif level == SERIES:
        derived.NumberOfSeriesRelatedInstances = len(members)
    return derived


def dataset_matches(keys: Dataset, candidate: Dataset, derived: Dataset | None = None) -> bool:
    """Return True when `candidate` matches every matching key in `keys`.

    A key that `derived` contains is matched against the derived value instead
    of the candidate's own element.
    """
    for key in keys:
        if key.tag in (QUERY_RETRIEVE_LEVEL_TAG, SPECIFIC_CHARACTER_SET_TAG):
            continue
        if key.keyword in RETURN_ONLY_KEYWORDS:
            continue
        if derived is not None and key.tag in derived:
            stored: DataElement | None = derived[key.tag]
        else:
            stored = candidate[key.tag] if key.tag in candidate else None
        if not element_matches(key, stored):
            return False
    return True


def element_matches(key: DataElement, stored: DataElement | None) -> bool:
    """Match one key against one stored element (PS3.4 C.2.2.2).

    A key with several values matches when any of them matches. For UI this is
    list of UID matching, and other VRs follow the same rule. A stored element
    with several values matches when any of its values matches.
    """
    if key.VR == "SQ":
        return _sequence_matches(key, stored)

    key_values = [value for value in element_values(key) if value]
    if not key_values or (key_values == ["*"] and key.VR in WILDCARD_VRS):
        return True  # universal matching
    if stored is None:
        return False
    stored_values = element_values(stored)
    return any(
        _value_matches(key_value, stored_value, key.VR)
        for key_value in key_values
        for stored_value in stored_values
    )


def element_values(element: DataElement) -> list[str]:
    """Return the values of `element` as strings without their padding."""
    value = element.value
    if value is None or value == "" or value == b"":
        return []
    items = list(value) if isinstance(value, (MultiValue, list, tuple)) else [value]
    return [_strip_padding(str(item), element.VR) for item in items if item is not None]


def _is_universal(key: DataElement) -> bool:
    if key.VR == "SQ":
        return not key.value or all(_is_universal(item_key) for item_key in key.value[0])
    return not any(element_values(key))


def _identifier_values(identifier: Dataset, keyword: str) -> list[str]:
    if keyword not in identifier:
        return []
    return [value for value in element_values(identifier[keyword]) if value]


def _has_wildcard(value: str) -> bool:
    return "*" in value or "?" in value


def _strip_padding(value: str, vr: str) -> str:
    if vr in TEXT_VRS:
        return value.rstrip(" \x00")
    return value.strip(" \x00")


def _value_matches(key_value: str, stored_value: str, vr: str) -> bool:
    if vr in RANGE_VRS:
        return _date_time_matches(key_value, stored_value, vr)
    if vr in WILDCARD_VRS and _has_wildcard(key_value):
        pattern = _wildcard_pattern(key_value, ignore_case=vr == "PN")
        return pattern.fullmatch(stored_value) is not None
    if vr == "PN":
        # PS3.4 C.2.2.2.1 allows case-insensitive single value matching for PN only.
        return key_value.casefold() == stored_value.casefold()
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


def _sequence_matches(key: DataElement, stored: DataElement | None) -> bool:
    """Match a sequence key: an entity matches if any stored item matches (PS3.4 C.2.2.2.6)."""
    if not key.value:
        return True
    if _is_universal(key):
        return True
    key_item = key.value[0]
    if stored is None or stored.VR != "SQ" or not stored.value:
        return False
    return any(dataset_matches(key_item, item) for item in stored.value)


# Range matching (PS3.4 C.2.2.2.5). Each bound and each stored value is
# padded to a fixed-width string, so plain string comparison orders them.
# A lower bound is padded with the earliest value and an upper bound with the
# latest, so "-12" in TM includes 12:59:59.999999.

_DT_RANGE = re.compile(r"^([0-9.]*(?:[+-][0-9]{4})?)-([0-9.]*(?:[+-][0-9]{4})?)$")
_DT_OFFSET = re.compile(r"[+-][0-9]{4}$")


def _date_time_matches(key_value: str, stored_value: str, vr: str) -> bool:
    bounds = _split_range(key_value, vr)
    if bounds is None:
        return _normalize(key_value, vr, upper=False) == _normalize(stored_value, vr, upper=False)

    lower, upper = bounds
    stored = _normalize(stored_value, vr, upper=False)
    if lower and stored < _normalize(lower, vr, upper=False):
        return False
    if upper and stored > _normalize(upper, vr, upper=True):
        return False
    return True


def _split_range(key_value: str, vr: str) -> tuple[str, str] | None:
    if vr == "DT":
        # A DT value may carry a UTC offset such as -0500, so a plain split on
        # "-" would cut it in two.
        match = _DT_RANGE.match(key_value)
        return (match.group(1), match.group(2)) if match else None
    if "-" not in key_value:
        return None
    lower, _, upper = key_value.partition("-")
    return lower, upper


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


def _group_entities(
    instances: Iterable[IndexedInstance], level: str, levels: Sequence[str]
) -> dict[tuple[str, ...], list[IndexedInstance]]:
    """Group instances by the unique keys of `level` and the levels above it."""
    keywords = [UNIQUE_KEYS[upper_level] for upper_level in levels[: levels.index(level) + 1]]
    groups: dict[tuple[str, ...], list[IndexedInstance]] = {}
    for instance in instances:
        entity = tuple(str(instance.header.get(keyword, "")) for keyword in keywords)
        groups.setdefault(entity, []).append(instance)
    return groups


def _build_response(
    identifier: Dataset,
    level: str,
    instance: IndexedInstance,
    derived: Dataset,
    retrieve_ae_title: str,
) -> Dataset:
    header = instance.header
    response = Dataset()
    if "SpecificCharacterSet" in header:
        response.SpecificCharacterSet = deepcopy(header.SpecificCharacterSet)

    for key in identifier:
        if key.tag in (QUERY_RETRIEVE_LEVEL_TAG, SPECIFIC_CHARACTER_SET_TAG):
            continue
        if key.tag in derived:
            response.add(deepcopy(derived[key.tag]))
        elif key.keyword == "RetrieveAETitle":
            response.RetrieveAETitle = retrieve_ae_title
        elif key.keyword == "InstanceAvailability":
            response.InstanceAvailability = "ONLINE"
        else:
            response.add(_response_element(key, header))

    response.QueryRetrieveLevel = level
    unique_keyword = UNIQUE_KEYS[level]
    if unique_keyword not in response and unique_keyword in header:
        response.add(deepcopy(header[unique_keyword]))
    return response


def _response_element(key: DataElement, source: Dataset) -> DataElement:
    """Return the value of `key` from `source`, or an empty element when it has none.

    For a sequence key with an item, only the stored items that match it are
    returned, each reduced to the keys of the key item.
    """
    tag: BaseTag = key.tag
    if tag not in source:
        return DataElement(tag, key.VR, empty_value_for_VR(key.VR))

    stored = source[tag]
    if key.VR != "SQ" or stored.VR != "SQ" or not key.value:
        return deepcopy(stored)

    key_item = key.value[0]
    items = []
    for stored_item in stored.value:
        if dataset_matches(key_item, stored_item):
            item = Dataset()
            for item_key in key_item:
                item.add(_response_element(item_key, stored_item))
            items.append(item)
    return DataElement(tag, "SQ", items)
