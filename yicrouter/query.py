"""Query/Retrieve information models, levels and identifier checks.

Implements the parts of PS3.4 C.4 (Query/Retrieve Service Class) that the
router needs before it sends anything to a peer: which SOP Class belongs to
which information model, the unique key of each Query/Retrieve Level, and the
checks that turn a bad identifier into status 0xA900.
"""

from __future__ import annotations

import re
from datetime import date
from dataclasses import dataclass
from enum import Enum

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

LEVELS = ("PATIENT", "STUDY", "SERIES", "IMAGE")

# PS3.4 C.3: the unique key of each Query/Retrieve Level.
UNIQUE_KEYS = {
    "PATIENT": "PatientID",
    "STUDY": "StudyInstanceUID",
    "SERIES": "SeriesInstanceUID",
    "IMAGE": "SOPInstanceUID",
}

# PS3.5 9.1: a UID is digits and dots, at most 64 characters.
_DATE_PATTERN = re.compile(r"^[0-9]{8}$")
_UID_PATTERN = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")


class InformationModel(Enum):
    PATIENT_ROOT = "Patient Root"
    STUDY_ROOT = "Study Root"

    @property
    def levels(self) -> tuple[str, ...]:
        """Return the Query/Retrieve Levels that this model defines."""
        if self is InformationModel.STUDY_ROOT:
            return LEVELS[1:]
        return LEVELS

    @property
    def find_sop_class(self) -> str:
        return _SOP_CLASSES[self][0]

    @property
    def move_sop_class(self) -> str:
        return _SOP_CLASSES[self][1]

    @property
    def get_sop_class(self) -> str:
        return _SOP_CLASSES[self][2]


# PS3.4 table B.5-1: the FIND, MOVE and GET SOP Class UIDs of each model.
_SOP_CLASSES: dict[InformationModel, tuple[str, str, str]] = {
    InformationModel.PATIENT_ROOT: (
        "1.2.840.10008.5.1.4.1.2.1.1",
        "1.2.840.10008.5.1.4.1.2.1.2",
        "1.2.840.10008.5.1.4.1.2.1.3",
    ),
    InformationModel.STUDY_ROOT: (
        "1.2.840.10008.5.1.4.1.2.2.1",
        "1.2.840.10008.5.1.4.1.2.2.2",
        "1.2.840.10008.5.1.4.1.2.2.3",
    ),
}


def model_for_sop_class(uid: str) -> InformationModel | None:
    """Return the information model of a Q/R SOP Class UID, or None."""
    for model, uids in _SOP_CLASSES.items():
        if uid in uids:
            return model
    return None


class InvalidIdentifier(ValueError):
    """Raised when an identifier does not match its SOP Class (status 0xA900)."""


@dataclass(frozen=True)
class Query:
    """A checked C-FIND, C-MOVE or C-GET identifier."""

    model: InformationModel
    level: str
    identifier: Dataset
    # Whether the requester negotiated relational queries or relational
    # retrieval (PS3.4 C.4.1.2.2, C.4.2.2.2), so parent unique keys may be absent.
    relational: bool = False

    @property
    def unique_key(self) -> str:
        return UNIQUE_KEYS[self.level]

    def key_values(self, keyword: str) -> list[str]:
        """Return the values of a key, split on backslash; [] when universal."""
        return split_values(self.identifier.get(keyword, ""))


def split_values(value: object) -> list[str]:
    if value is None:
        return []
    if isinstance(value, (list, tuple, MultiValue)):
        return [str(v).strip() for v in value if str(v).strip()]
    text = str(value).strip()
    return [part.strip() for part in text.split("\\") if part.strip()] if text else []


def _parent_levels(model: InformationModel, level: str) -> list[str]:
    levels = model.levels
    return list(levels[: levels.index(level)])


def _check_uid_list(keyword: str, values: list[str]) -> None:
    for value in values:
        if len(value) > 64 or not _UID_PATTERN.match(value):
            raise InvalidIdentifier(f"{keyword} value {value!r} is not a valid UID")


def _check_parent_keys(model: InformationModel, level: str, identifier: Dataset, relational: bool) -> None:
    """Check the unique keys above the level.

    Hierarchical search (PS3.4 C.4.1.2.1 and C.4.2.2.1) needs exactly one
    value in every unique key above the level. Relational search (C.4.1.2.2
    and C.4.2.2.2) lets them be absent, universal or lists, but a UID given
    must still be a valid UID without wild cards.
    """
    for parent in _parent_levels(model, level):
        keyword = UNIQUE_KEYS[parent]
        values = split_values(identifier.get(keyword, ""))
        if relational:
            if keyword != "PatientID":
                _check_uid_list(keyword, values)
            continue
        if len(values) != 1 or _has_wildcard(values[0]):
            raise InvalidIdentifier(
                f"{keyword} must hold exactly one value without wildcards at Query/Retrieve "
                f"Level {level} in the {model.value} model"
            )
        if keyword != "PatientID":
            _check_uid_list(keyword, values)


def _read_level(model: InformationModel, identifier: Dataset) -> str:
    if "QueryRetrieveLevel" not in identifier:
        raise InvalidIdentifier("Query/Retrieve Level (0008,0052) is missing")
    level = str(identifier.QueryRetrieveLevel or "").strip().upper()
    if level not in model.levels:
        raise InvalidIdentifier(
            f"Query/Retrieve Level {level!r} is not defined in the {model.value} model"
        )
    return level


def parse_find(model: InformationModel, identifier: Dataset, relational: bool = False) -> Query:
    """Check a C-FIND identifier; raise InvalidIdentifier on a bad one.

    `relational` is whether the requester negotiated relational queries for the SOP Class.
    """
    level = _read_level(model, identifier)
    _check_parent_keys(model, level, identifier, relational)
    unique_key = UNIQUE_KEYS[level]
    if unique_key != "PatientID":
        values = split_values(identifier.get(unique_key, ""))
        if any("*" in v or "?" in v for v in values):
            raise InvalidIdentifier(f"{unique_key} does not allow wildcard matching")
        _check_uid_list(unique_key, values)
    _check_dates(identifier)
    return Query(model, level, identifier, relational)


def parse_retrieve(model: InformationModel, identifier: Dataset, relational: bool = False) -> Query:
    """Check a C-MOVE or C-GET identifier (PS3.4 C.4.2.2.1, C.4.2.2.2).

    `relational` is whether the requester negotiated relational retrieval
    for the SOP Class. The unique key of the level is required either way.
    """
    level = _read_level(model, identifier)
    _check_parent_keys(model, level, identifier, relational)
    unique_key = UNIQUE_KEYS[level]
    values = split_values(identifier.get(unique_key, ""))
    if not values:
        raise InvalidIdentifier(f"{unique_key} is required for a retrieve at level {level}")
    if any(_has_wildcard(value) for value in values):
        raise InvalidIdentifier(f"{unique_key} must not contain wildcards in a retrieve")
    if unique_key != "PatientID":
        _check_uid_list(unique_key, values)
    return Query(model, level, identifier, relational)


def _has_wildcard(value: str) -> bool:
    return "*" in value or "?" in value


def _check_dates(identifier: Dataset) -> None:
    """Check that every DA matching key is a date or a date range (PS3.5 6.2, PS3.4 C.2.2.2.5).

    A lone "*" is let through as universal matching: it is not valid DICOM,
    but some viewers send it, and the local re-matching treats it so.
    """
    for element in identifier.iterall():
        if element.VR != "DA" or element.is_empty:
            continue
        for value in split_values(element.value):
            if value != "*" and not _is_date_or_range(value):
                raise InvalidIdentifier(
                    f"{element.keyword or element.tag} value {value!r} is not a date (YYYYMMDD) "
                    "or a date range such as 20240101-20240131, -20240131 or 20240101-"
                )


def _is_date_or_range(value: str) -> bool:
    parts = value.split("-")
    if len(parts) == 1:
        return _is_date(parts[0])
    if len(parts) != 2 or parts == ["", ""]:
        return False
    return all(part == "" or _is_date(part) for part in parts)


def _is_date(text: str) -> bool:
    if not _DATE_PATTERN.match(text):
        return False
    try:
        date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except ValueError:
        return False
    return True
