"""Query/Retrieve matching for the sample PACS.

The matching types of PS3.4 C.2.2.2 (single value, universal, wild card,
range, list of UID and sequence matching) come from yicrouter.matching, which
the router's own re-matching of peer matches shares. This module checks the
Query/Retrieve Level and the unique keys of a baseline hierarchical query
(PS3.4 C.4.1.2.1), groups instances into the entities of a level, and builds the C-FIND response identifiers. It works on
header datasets only and never opens a file.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from copy import deepcopy
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from pydicom.dataelem import DataElement, empty_value_for_VR
from pydicom.dataset import Dataset
from pydicom.tag import BaseTag

from yicrouter.matching import (
    QUERY_RETRIEVE_LEVEL_TAG,
    RANGE_VRS,
    RETURN_ONLY_KEYWORDS,
    SPECIFIC_CHARACTER_SET_TAG,
    TEXT_VRS,
    WILDCARD_VRS,
    dataset_matches,
    element_matches,
    element_values,
)
from yicrouter.matching import has_wildcard as _has_wildcard

# Names that callers of this module import from it.
__all__ = [
    "IMAGE",
    "PATIENT",
    "PATIENT_ROOT_LEVELS",
    "QUERY_RETRIEVE_LEVEL_TAG",
    "RANGE_VRS",
    "RETURN_ONLY_KEYWORDS",
    "SERIES",
    "SPECIFIC_CHARACTER_SET_TAG",
    "STUDY",
    "STUDY_ROOT_LEVELS",
    "TEXT_VRS",
    "UNIQUE_KEYS",
    "WILDCARD_VRS",
    "IdentifierError",
    "IndexedInstance",
    "check_unique_keys",
    "dataset_matches",
    "derived_attributes",
    "element_matches",
    "element_values",
    "find_matches",
    "read_level",
    "select_instances",
]

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
            if dataset_matches(identifier, instance.header, derived=derived):
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


def _identifier_values(identifier: Dataset, keyword: str) -> list[str]:
    if keyword not in identifier:
        return []
    return [value for value in element_values(identifier[keyword]) if value]


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
