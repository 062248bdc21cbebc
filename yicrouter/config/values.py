"""Checks of single values, such as AE titles, ports, timeouts and PDU sizes.

Each check receives a value of the right TOML type and returns one message per
problem, each saying what is wrong and how to fix it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Final

# PS3.5 table 6.2-1, VR AE: at most 16 characters of printable ASCII, without
# backslash. Leading and trailing spaces are not significant.
AE_TITLE_MAX_LENGTH: Final = 16

# pynetdicom 3.0 treats a maximum PDU length of 0 as "no limit".
MAX_PDU_NO_LIMIT: Final = 0
# NOTE: these bounds are this project's sanity limits, not limits of the standard.
MAX_PDU_MIN: Final = 4096
MAX_PDU_MAX: Final = 1048576

LOG_LEVELS: Final = ("debug", "info", "warning", "error")
LOG_FORMATS: Final = ("console", "json")

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


def make_choice_check(choices: tuple[str, ...]) -> Callable[[str], list[str]]:
    def check(value: str) -> list[str]:
        if value in choices:
            return []
        listed = ", ".join(repr(c) for c in choices)
        return [f"value is not one of {listed}. Use one of these (lower case)."]

    return check
