"""Expected keys of each table, with their TOML types and value checks."""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final

from yicrouter.config.values import (
    LOG_FORMATS,
    LOG_LEVELS,
    check_ae_title,
    check_batch_size,
    check_bind,
    check_charset,
    check_max_matches,
    check_database_url,
    check_host,
    check_max_attempts,
    check_max_pdu,
    check_spool_min_free_mb,
    check_peer_name,
    check_port,
    check_seconds,
    check_state_dir,
    make_choice_check,
    no_check,
    RETRIEVE_METHODS,
)

STRING: Final = "string"
INTEGER: Final = "integer"
# A float field, which also accepts an integer.
NUMBER: Final = "number"
BOOLEAN: Final = "boolean"


@dataclass(frozen=True)
class KeySpec:
    """Expected TOML type, value check and requirement of one key in a table."""

    kind: str
    check: Callable[[Any], list[str]]
    # Example line for the message about a missing required key. An empty
    # string marks an optional key.
    required_example: str = ""


ROUTER_KEYS: Final = {
    "ae_title": KeySpec(STRING, check_ae_title),
    "bind": KeySpec(STRING, check_bind),
    "port": KeySpec(INTEGER, check_port),
    "state_dir": KeySpec(STRING, check_state_dir),
    "max_pdu": KeySpec(INTEGER, check_max_pdu),
    "spool_min_free_mb": KeySpec(INTEGER, check_spool_min_free_mb),
    "log_level": KeySpec(STRING, make_choice_check(LOG_LEVELS)),
    "log_format": KeySpec(STRING, make_choice_check(LOG_FORMATS)),
    "database": KeySpec(STRING, check_database_url),
    "patient_name_case_sensitive": KeySpec(BOOLEAN, no_check),
}

QUEUE_KEYS: Final = {
    "retry_base": KeySpec(NUMBER, check_seconds),
    "retry_max": KeySpec(NUMBER, check_seconds),
    "max_attempts": KeySpec(INTEGER, check_max_attempts),
    "max_age": KeySpec(NUMBER, check_seconds),
    "poll_interval": KeySpec(NUMBER, check_seconds),
    "batch_size": KeySpec(INTEGER, check_batch_size),
}

# Tables that at most one file may contain, each with its keys.
SINGLE_TABLE_KEYS: Final = {"router": ROUTER_KEYS, "queue": QUEUE_KEYS}

WORKSTATION_KEYS: Final = {
    "ae_title": KeySpec(STRING, check_ae_title, 'ae_title = "CTWS1"'),
    "host": KeySpec(STRING, check_host, 'host = "10.0.0.21"'),
    "port": KeySpec(INTEGER, check_port, "port = 104"),
    "connect_timeout": KeySpec(NUMBER, check_seconds),
    "acse_timeout": KeySpec(NUMBER, check_seconds),
    "dimse_timeout": KeySpec(NUMBER, check_seconds),
}

PEER_KEYS: Final = {
    "name": KeySpec(STRING, check_peer_name, 'name = "north"'),
    "ae_title": KeySpec(STRING, check_ae_title, 'ae_title = "NORTHPACS"'),
    "host": KeySpec(STRING, check_host, 'host = "pacs.north.example"'),
    "port": KeySpec(INTEGER, check_port, "port = 104"),
    "connect_timeout": KeySpec(NUMBER, check_seconds),
    "acse_timeout": KeySpec(NUMBER, check_seconds),
    "dimse_timeout": KeySpec(NUMBER, check_seconds),
    "find_deadline": KeySpec(NUMBER, check_seconds),
    "move_deadline": KeySpec(NUMBER, check_seconds),
    "retrieve": KeySpec(STRING, make_choice_check(RETRIEVE_METHODS)),
    "default_charset": KeySpec(STRING, check_charset),
    "query_charset": KeySpec(STRING, check_charset),
    "always_send_charset": KeySpec(BOOLEAN, no_check),
    "study_root_only": KeySpec(BOOLEAN, no_check),
    "universal_matching": KeySpec(BOOLEAN, no_check),
    "date_ranges": KeySpec(BOOLEAN, no_check),
    "max_matches": KeySpec(INTEGER, check_max_matches),
    "combined_datetime": KeySpec(BOOLEAN, no_check),
    "needs_parent_uids": KeySpec(BOOLEAN, no_check),
}

# Top-level tables and how each is written in TOML.
TABLE_HEADERS: Final = {
    "router": "[router]",
    "queue": "[queue]",
    "peer": "[[peer]]",
    "workstation": "[[workstation]]",
}


def describe_toml_type(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return "a date or time"


def has_kind(value: object, kind: str) -> bool:
    # bool is a subclass of int in Python, but true and false are not numbers in TOML.
    if isinstance(value, bool):
        return kind == BOOLEAN
    if kind == BOOLEAN:
        return False
    if kind == STRING:
        return isinstance(value, str)
    if kind == INTEGER:
        return isinstance(value, int)
    return isinstance(value, (int, float))


def describe_type_problem(value: object, kind: str) -> str:
    expected = {
        STRING: "a string",
        INTEGER: "an integer",
        NUMBER: "a number (integer or float)",
        BOOLEAN: "true or false",
    }[kind]
    message = f"expected {expected}, got {describe_toml_type(value)}."

    if kind == STRING:
        return message + " Put the value in double quotes."
    if kind == BOOLEAN:
        return message + " Write true or false, in lower case and without quotes."
    if isinstance(value, str) and re.fullmatch(r"\s*[-+]?[0-9_.]+\s*", value):
        return message + " Remove the quotes."
    if isinstance(value, float) and value.is_integer():
        return message + f" Write it as {int(value)}."
    if kind == INTEGER:
        return message + " Write a whole number without quotes."
    return message + " Write a number without quotes."


def suggest_key(key: str, known: Iterable[str]) -> str | None:
    matches = difflib.get_close_matches(key.lower(), list(known), n=1, cutoff=0.6)
    return matches[0] if matches else None
