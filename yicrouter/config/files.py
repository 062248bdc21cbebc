"""Reading the config files: the drop-in folder listing, UTF-8 and TOML parsing."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any, Final

if sys.version_info >= (3, 11):
    import tomllib
else:
    # The ignore applies only where tomli is not installed, and mypy then types
    # tomllib as Any.
    import tomli as tomllib  # type: ignore[import-not-found]

# Name of the drop-in folder, which sits beside the main file whatever its name.
DROP_IN_FOLDER_NAME: Final = "yicrouter.d"

# tomllib (Python 3.11) ends its messages with "(at line L, column C)".
_TOML_POSITION = re.compile(
    r"^(?P<message>.*) \(at line (?P<line>\d+), column (?P<column>\d+)\)$"
)
_TOML_END = re.compile(r"^(?P<message>.*) \(at end of document\)$")


def _last_line(file: Path) -> str:
    """Return " (line N)" for the last line of `file`, or "" when it can't be read."""
    try:
        count = len(file.read_text(encoding="utf-8", errors="replace").splitlines())
    except OSError:
        return ""
    return f" (line {count})" if count else ""


def _describe_syntax_error(file: Path, error: Exception) -> str:
    text = str(error)
    position = _TOML_POSITION.match(text)
    if position is not None:
        where = f"line {position['line']}, column {position['column']}"
        return f"{file}: {where}: invalid TOML: {position['message']}. Correct the syntax there."

    end = _TOML_END.match(text)
    if end is not None:
        return (
            f"{file}: end of file{_last_line(file)}: invalid TOML: {end['message']}."
            " Correct the syntax near the end."
        )
    return f"{file}: invalid TOML: {text}. Correct the syntax."


def parse_file(file: Path, problems: list[str]) -> dict[str, Any] | None:
    """Read and parse one TOML file, or append a problem and return None."""
    text = _read_text(file, problems)
    if text is None:
        return None

    try:
        document: dict[str, Any] = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        problems.append(_describe_syntax_error(file, error))
        return None
    return document


def _read_text(file: Path, problems: list[str]) -> str | None:
    """Read one file as UTF-8, or append a problem and return None."""
    try:
        raw = file.read_bytes()
    except OSError as error:
        reason = error.strerror or str(error)
        problems.append(
            f"{file}: cannot read the file ({reason})."
            " Check that it exists and that the router's user may read it."
        )
        return None

    try:
        # utf-8-sig also accepts the byte order mark that some Windows editors write.
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        problems.append(
            f"{file}: line {line}: byte {error.start} is not valid UTF-8. Save the file as UTF-8."
        )
        return None


def list_drop_in_files(folder: Path, problems: list[str]) -> list[Path]:
    """Return the `*.toml` files of the drop-in folder in name order.

    Names are compared as Python strings, so "10-b.toml" comes before
    "9-a.toml". Names that start with "." are skipped, so editor lock files and
    hidden backups are never read. A missing folder means no drop-ins.
    """
    try:
        entries = list(folder.iterdir())
    except FileNotFoundError:
        return []
    except NotADirectoryError:
        problems.append(
            f"{folder}: not a folder. The drop-in path must be a folder of *.toml files,"
            " so rename or remove this file."
        )
        return []
    except OSError as error:
        reason = error.strerror or str(error)
        problems.append(
            f"{folder}: cannot list the drop-in folder ({reason})."
            " Make it readable by the router's user."
        )
        return []

    files = [p for p in entries if p.name.endswith(".toml") and not p.name.startswith(".")]
    return sorted(files, key=lambda p: p.name)
