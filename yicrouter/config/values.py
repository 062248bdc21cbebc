"""Checks of single values, such as AE titles, ports, timeouts and PDU sizes.

Each check receives a value of the right TOML type and returns one message per
problem, each saying what is wrong and how to fix it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Final
from urllib.parse import SplitResult, urlsplit

# PS3.5 table 6.2-1, VR AE: at most 16 characters of printable ASCII, without
# backslash. Leading and trailing spaces are not significant.
AE_TITLE_MAX_LENGTH: Final = 16

# pynetdicom 3.0 treats a maximum PDU length of 0 as "no limit".
MAX_PDU_NO_LIMIT: Final = 0
# NOTE: these bounds are this project's sanity limits, not limits of the standard.
MAX_PDU_MIN: Final = 4096
MAX_PDU_MAX: Final = 1048576

LOG_LEVELS: Final = ("debug", "info", "warning", "error")
# Retrieve methods toward a peer: C-MOVE to the router as Move Destination,
# or C-GET back on the router's own association.
RETRIEVE_METHODS: Final = ("c-move", "c-get")
LOG_FORMATS: Final = ("console", "json")

# URL schemes of router.database. peewee's playhouse.db_url (peewee 4.5) maps
# "sqlite" to SqliteDatabase, and "postgresql" and "postgres" to PostgresqlDatabase.
DATABASE_URL_SCHEMES: Final = ("sqlite", "postgresql", "postgres")

# NOTE: this bound is this project's sanity limit for one association.
BATCH_SIZE_MAX: Final = 10000

_PORT_MIN: Final = 1
_PORT_MAX: Final = 65535


def check_ae_title(value: str) -> list[str]:
    title = value.strip(" ")
    if not title:
        return ["AE title is empty or only spaces. Set 1 to 16 characters."]

    messages = []
    if len(title) > AE_TITLE_MAX_LENGTH:
        messages.append(
            f"AE title is {len(title)} characters, but the maximum is"
            f" {AE_TITLE_MAX_LENGTH} (PS3.5 table 6.2-1). Shorten it."
        )
    if "\\" in title:
        messages.append(
            "AE title contains a backslash, which PS3.5 table 6.2-1 forbids. Remove it."
        )
    invalid = sorted({c for c in title if not " " <= c <= "~"})
    if invalid:
        listed = ", ".join(repr(c) for c in invalid)
        messages.append(
            f"AE title contains control or non-ASCII characters ({listed})."
            " Use printable ASCII only (PS3.5 table 6.2-1)."
        )
    return messages


def check_peer_name(value: str) -> list[str]:
    if not value.strip():
        return ['peer name is empty. Set a short unique name, e.g. name = "north".']
    return []


def check_host(value: str) -> list[str]:
    if not value.strip():
        return ["host is empty. Set a host name or IP address."]
    if any(c.isspace() for c in value):
        return ["host contains whitespace. Remove it."]
    return []


def check_bind(value: str) -> list[str]:
    if not value.strip():
        return [
            "bind address is empty."
            " Set an IP address, e.g. '0.0.0.0' to listen on every IPv4 interface."
        ]
    return []


def check_port(value: int) -> list[str]:
    if not _PORT_MIN <= value <= _PORT_MAX:
        return [
            f"port is outside {_PORT_MIN}..{_PORT_MAX}."
            " Set a TCP port in that range, e.g. 104 or 11112."
        ]
    return []


def check_seconds(value: float) -> list[str]:
    if not math.isfinite(value):
        return ["the number of seconds is not finite. Set a number greater than 0, e.g. 10."]
    if value <= 0:
        return ["the number of seconds must be greater than 0. Set a positive number, e.g. 10."]
    return []


def check_max_pdu(value: int) -> list[str]:
    if value == MAX_PDU_NO_LIMIT or MAX_PDU_MIN <= value <= MAX_PDU_MAX:
        return []
    return [
        f"max_pdu must be {MAX_PDU_NO_LIMIT} (no limit) or from {MAX_PDU_MIN}"
        f" to {MAX_PDU_MAX} bytes. Choose a value in that range, e.g. 262144."
    ]


def check_spool_min_free_mb(value: int) -> list[str]:
    if value >= 0:
        return []
    return ["spool_min_free_mb must be 0 or more MiB. Use 0 to accept instances until the disk is full."]


def check_state_dir(value: str) -> list[str]:
    if not value.strip():
        return ["state_dir is empty. Set a folder path, e.g. '/var/lib/yicrouter'."]
    if value.startswith("~"):
        return ["state_dir starts with '~', which is not expanded. Write the full path."]
    return []


def check_max_attempts(value: int) -> list[str]:
    if value >= 1:
        return []
    return ["max_attempts must be 1 or more. Set the number of delivery attempts, e.g. 20."]


def check_batch_size(value: int) -> list[str]:
    if 1 <= value <= BATCH_SIZE_MAX:
        return []
    return [
        f"batch_size is outside 1..{BATCH_SIZE_MAX}."
        " Set the number of instances per association, e.g. 100."
    ]


def check_database_url(value: str) -> list[str]:
    """Check a peewee database URL. The empty string selects the default SQLite file."""
    if value == "":
        return []
    if any(c.isspace() for c in value):
        return ["database URL contains whitespace. Remove it."]

    try:
        url = urlsplit(value)
        # Reading the port raises ValueError when it is not a number from 0 to 65535.
        port = url.port
    except ValueError as error:
        return [f"database URL is invalid: {error}. Correct the host and port."]

    if url.scheme not in DATABASE_URL_SCHEMES:
        return [_describe_database_scheme_problem(url.scheme)]
    if url.scheme == "sqlite":
        return _check_sqlite_url(url)
    return _check_postgresql_url(url, port)


def _describe_database_scheme_problem(scheme: str) -> str:
    accepted = ", ".join(f"{s}://" for s in DATABASE_URL_SCHEMES)
    if scheme:
        problem = f"database URL scheme '{scheme}://' is not supported."
    else:
        problem = "database is not a URL, because it has no scheme."
    return (
        f"{problem} The accepted schemes are {accepted}, e.g."
        " 'sqlite:////var/lib/yicrouter/yicrouter.sqlite3'"
        " or 'postgresql://yicrouter@db.example/yicrouter'."
    )


def _check_sqlite_url(url: SplitResult) -> list[str]:
    # peewee drops the first "/" of the URL path and opens the rest, so an
    # absolute file path follows three slashes: sqlite:////var/lib/x.sqlite3.
    path = url.path[1:]
    example = "e.g. 'sqlite:////var/lib/yicrouter/yicrouter.sqlite3'"
    if url.netloc:
        return [
            "a sqlite URL has no host, but this one has text between '//' and the"
            f" next '/'. Write sqlite:/// followed by the absolute file path, {example}."
        ]
    if not path.startswith("/"):
        return [
            "the SQLite file path is not absolute, so it would depend on the"
            f" working folder. Write sqlite:/// followed by the absolute file path, {example}."
        ]
    if path.endswith("/"):
        return [f"the SQLite path ends with '/', so it names a folder. Add a file name, {example}."]
    return []


def _check_postgresql_url(url: SplitResult, port: int | None) -> list[str]:
    messages = []
    if not url.path[1:]:
        messages.append(
            "the PostgreSQL URL has no database name. Add '/' and the name after"
            " the host, e.g. 'postgresql://yicrouter@db.example/yicrouter'."
        )
    if port == 0:
        messages.append(f"the PostgreSQL port is 0. Set a port from {_PORT_MIN} to {_PORT_MAX}, e.g. 5432.")
    return messages


def make_choice_check(choices: tuple[str, ...]) -> Callable[[str], list[str]]:
    def check(value: str) -> list[str]:
        if value in choices:
            return []
        listed = ", ".join(repr(c) for c in choices)
        return [f"value is not one of {listed}. Use one of these (lower case)."]

    return check


def no_check(value: object) -> list[str]:
    """Accept any value of the right TOML type."""
    return []


def check_charset(value: str) -> list[str]:
    """Check a Specific Character Set defined term (PS3.3 C.12.1.1.2); "" is the default repertoire."""
    if value == "":
        return []
    # Imported here so that loading the config does not pull in pydicom early.
    from pydicom.charset import python_encoding

    if value in python_encoding:
        return []
    examples = ", ".join(repr(term) for term in ("ISO_IR 100", "ISO_IR 192", "ISO 2022 IR 87"))
    return [
        "value is not a Specific Character Set defined term (PS3.3 C.12.1.1.2)."
        f" Use a term such as {examples}, or \"\" for the default repertoire (ASCII)."
    ]


def check_max_matches(value: int) -> list[str]:
    if value >= 0:
        return []
    return ["max_matches must be 0 (no limit) or more. Set the peer's match limit, e.g. 500."]
