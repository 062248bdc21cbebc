"""`ConfigError` and the problem lines that it carries, one per problem."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Final

# Maximum length of a value's repr in a problem line. Longer ones are cut.
_MAX_SHOWN_VALUE_LENGTH: Final = 80

# The password of a URL such as "postgresql://user:password@host/db". It is
# matched up to the last "@" before a space, so a password containing "@" is
# hidden in full.
_URL_PASSWORD: Final = re.compile(r"(://[^:/@\s]*:)\S*@")
# A password given as a query parameter, as in "...?password=secret".
_QUERY_PASSWORD: Final = re.compile(r"([?&]password=)[^&\s'\"]*")


class ConfigError(Exception):
    """Raised when configuration files are invalid; `problems` lists each one."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def _show_value(value: object) -> str:
    """Return the repr of `value` for a problem line, with passwords replaced by ***."""
    text = repr(value)
    text = _URL_PASSWORD.sub(r"\1***@", text)
    text = _QUERY_PASSWORD.sub(r"\1***", text)
    if len(text) > _MAX_SHOWN_VALUE_LENGTH:
        text = text[: _MAX_SHOWN_VALUE_LENGTH - 3] + "..."
    return text


def value_problem(file: Path, key: str, value: object, message: str) -> str:
    return f"{file}: {key} = {_show_value(value)}: {message}"


def key_problem(file: Path, key: str, message: str) -> str:
    return f"{file}: {key}: {message}"
