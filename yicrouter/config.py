"""Router configuration: the TOML main file plus its `yicrouter.d/` drop-ins.

`load_config` reads the main file, then each `*.toml` file in the `yicrouter.d/`
folder beside it. It checks every file before it raises, so one `ConfigError`
lists all problems, one line each, with the file, key, value and fix.
"""

from __future__ import annotations

import difflib
import math
import re
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

if sys.version_info >= (3, 11):
    import tomllib
else:
    # The ignore applies only where tomli is not installed, and mypy then types
    # tomllib as Any.
    import tomli as tomllib  # type: ignore[import-not-found]


@dataclass(frozen=True)
class RouterSettings:
    """The `[router]` table."""

    # The router's own AE title, which peers and workstations call.
    ae_title: str = "YICROUTER"
    # IP address that the router's SCP listens on.
    bind: str = "0.0.0.0"
    # TCP port that the router's SCP listens on.
    port: int = 11112
    # Folder for the queue and database. A relative path in the file is
    # stored joined to the main config file's folder.
    state_dir: Path = Path("/var/lib/yicrouter")
    # Maximum PDU length that the router advertises, in bytes.
    max_pdu: int = 262144
    # One of LOG_LEVELS.
    log_level: str = "info"
    # One of LOG_FORMATS.
    log_format: str = "console"


@dataclass(frozen=True)
class PeerSettings:
    """One `[[peer]]` table: a partner trust's PACS that the router queries."""

    # Unique short name of the peer, used in logs and commands.
    name: str
    # The peer's AE title, stored without leading and trailing spaces.
    ae_title: str
    host: str
    port: int
    # Seconds to wait for the TCP connection.
    connect_timeout: float = 5.0
    # Seconds to wait for the A-ASSOCIATE-AC or A-RELEASE-RP.
    acse_timeout: float = 10.0
    # Seconds to wait for each DIMSE response (each Pending counts).
    dimse_timeout: float = 30.0
    # Seconds that one C-FIND to this peer may take in total.
    find_deadline: float = 10.0
    # Seconds that one C-MOVE from this peer may take in total.
    move_deadline: float = 3600.0
    # Config file that contains this table.
    source_file: Path = field(default=Path("<defaults>"), compare=False)


@dataclass(frozen=True)
class WorkstationSettings:
    """One `[[workstation]]` table: an allowed caller and Move Destination."""

    # The workstation's AE title, stored without leading and trailing spaces.
    ae_title: str
    # Host and port of the workstation's Storage SCP, where C-MOVE sends images.
    host: str
    port: int
    # Seconds, with the same meaning as in PeerSettings.
    connect_timeout: float = 5.0
    acse_timeout: float = 10.0
    dimse_timeout: float = 30.0
    # Config file that contains this table.
    source_file: Path = field(default=Path("<defaults>"), compare=False)


@dataclass(frozen=True)
class Config:
    router: RouterSettings
    peers: tuple[PeerSettings, ...] = ()
    workstations: tuple[WorkstationSettings, ...] = ()
    files: tuple[Path, ...] = ()

    def peer_by_name(self, name: str) -> PeerSettings | None:
        return next((p for p in self.peers if p.name == name), None)

    def peer_by_ae_title(self, ae_title: str) -> PeerSettings | None:
        wanted = ae_title.strip()
        return next((p for p in self.peers if p.ae_title == wanted), None)

    def workstation_by_ae_title(self, ae_title: str) -> WorkstationSettings | None:
        wanted = ae_title.strip()
        return next((w for w in self.workstations if w.ae_title == wanted), None)


class ConfigError(Exception):
    """Raised when configuration files are invalid; `problems` lists each one."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


# Name of the drop-in folder, which sits beside the main file whatever its name.
DROP_IN_FOLDER_NAME: Final = "yicrouter.d"

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
# Maximum length of a value's repr in a problem line. Longer ones are cut.
_MAX_SHOWN_VALUE_LENGTH: Final = 80


# --- Problem lines -----------------------------------------------------------


def _show_value(value: object) -> str:
    text = repr(value)
    if len(text) > _MAX_SHOWN_VALUE_LENGTH:
        text = text[: _MAX_SHOWN_VALUE_LENGTH - 3] + "..."
    return text


def _value_problem(file: Path, key: str, value: object, message: str) -> str:
    return f"{file}: {key} = {_show_value(value)}: {message}"


def _key_problem(file: Path, key: str, message: str) -> str:
    return f"{file}: {key}: {message}"


# --- Value checks --------------------------------------------------------------
# Each check receives a value of the right TOML type and returns one message per
# problem, each saying what is wrong and how to fix it.


def _check_ae_title(value: str) -> list[str]:
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


def _check_peer_name(value: str) -> list[str]:
    if not value.strip():
        return ['peer name is empty. Set a short unique name, e.g. name = "north".']
    return []


def _check_host(value: str) -> list[str]:
    if not value.strip():
        return ["host is empty. Set a host name or IP address."]
    if any(c.isspace() for c in value):
        return ["host contains whitespace. Remove it."]
    return []


def _check_bind(value: str) -> list[str]:
    if not value.strip():
        return [
            "bind address is empty."
            " Set an IP address, e.g. '0.0.0.0' to listen on every IPv4 interface."
        ]
    return []


def _check_port(value: int) -> list[str]:
    if not _PORT_MIN <= value <= _PORT_MAX:
        return [
            f"port is outside {_PORT_MIN}..{_PORT_MAX}."
            " Set a TCP port in that range, e.g. 104 or 11112."
        ]
    return []


def _check_seconds(value: float) -> list[str]:
    if not math.isfinite(value):
        return ["the number of seconds is not finite. Set a number greater than 0, e.g. 10."]
    if value <= 0:
        return ["the number of seconds must be greater than 0. Set a positive number, e.g. 10."]
    return []


def _check_max_pdu(value: int) -> list[str]:
    if value == MAX_PDU_NO_LIMIT or MAX_PDU_MIN <= value <= MAX_PDU_MAX:
        return []
    return [
        f"max_pdu must be {MAX_PDU_NO_LIMIT} (no limit) or from {MAX_PDU_MIN}"
        f" to {MAX_PDU_MAX} bytes. Choose a value in that range, e.g. 262144."
    ]


def _check_state_dir(value: str) -> list[str]:
    if not value.strip():
        return ["state_dir is empty. Set a folder path, e.g. '/var/lib/yicrouter'."]
    if value.startswith("~"):
        return ["state_dir starts with '~', which is not expanded. Write the full path."]
    return []


def _make_choice_check(choices: tuple[str, ...]) -> Callable[[str], list[str]]:
    def check(value: str) -> list[str]:
        if value in choices:
            return []
        listed = ", ".join(repr(c) for c in choices)
        return [f"value is not one of {listed}. Use one of these (lower case)."]

    return check


# --- Table schemas -------------------------------------------------------------

_STRING: Final = "string"
_INTEGER: Final = "integer"
# A float field, which also accepts an integer.
_NUMBER: Final = "number"


@dataclass(frozen=True)
class _KeySpec:
    """Expected TOML type, value check and requirement of one key in a table."""

    kind: str
    check: Callable[[Any], list[str]]
    # Example line for the message about a missing required key. An empty
    # string marks an optional key.
    required_example: str = ""


_ROUTER_KEYS: Final = {
    "ae_title": _KeySpec(_STRING, _check_ae_title),
    "bind": _KeySpec(_STRING, _check_bind),
    "port": _KeySpec(_INTEGER, _check_port),
    "state_dir": _KeySpec(_STRING, _check_state_dir),
    "max_pdu": _KeySpec(_INTEGER, _check_max_pdu),
    "log_level": _KeySpec(_STRING, _make_choice_check(LOG_LEVELS)),
    "log_format": _KeySpec(_STRING, _make_choice_check(LOG_FORMATS)),
}

_WORKSTATION_KEYS: Final = {
    "ae_title": _KeySpec(_STRING, _check_ae_title, 'ae_title = "CTWS1"'),
    "host": _KeySpec(_STRING, _check_host, 'host = "10.0.0.21"'),
    "port": _KeySpec(_INTEGER, _check_port, "port = 104"),
    "connect_timeout": _KeySpec(_NUMBER, _check_seconds),
    "acse_timeout": _KeySpec(_NUMBER, _check_seconds),
    "dimse_timeout": _KeySpec(_NUMBER, _check_seconds),
}

_PEER_KEYS: Final = {
    "name": _KeySpec(_STRING, _check_peer_name, 'name = "north"'),
    "ae_title": _KeySpec(_STRING, _check_ae_title, 'ae_title = "NORTHPACS"'),
    "host": _KeySpec(_STRING, _check_host, 'host = "pacs.north.example"'),
    "port": _KeySpec(_INTEGER, _check_port, "port = 104"),
    "connect_timeout": _KeySpec(_NUMBER, _check_seconds),
    "acse_timeout": _KeySpec(_NUMBER, _check_seconds),
    "dimse_timeout": _KeySpec(_NUMBER, _check_seconds),
    "find_deadline": _KeySpec(_NUMBER, _check_seconds),
    "move_deadline": _KeySpec(_NUMBER, _check_seconds),
}

# Top-level tables and how each is written in TOML.
_TABLE_HEADERS: Final = {
    "router": "[router]",
    "peer": "[[peer]]",
    "workstation": "[[workstation]]",
}


def _describe_toml_type(value: object) -> str:
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


def _has_kind(value: object, kind: str) -> bool:
    # bool is a subclass of int in Python, but true and false are not numbers in TOML.
    if isinstance(value, bool):
        return False
    if kind == _STRING:
        return isinstance(value, str)
    if kind == _INTEGER:
        return isinstance(value, int)
    return isinstance(value, (int, float))


def _describe_type_problem(value: object, kind: str) -> str:
    expected = {
        _STRING: "a string",
        _INTEGER: "an integer",
        _NUMBER: "a number (integer or float)",
    }[kind]
    message = f"expected {expected}, got {_describe_toml_type(value)}."

    if kind == _STRING:
        return message + " Put the value in double quotes."
    if isinstance(value, str) and re.fullmatch(r"\s*[-+]?[0-9_.]+\s*", value):
        return message + " Remove the quotes."
    if isinstance(value, float) and value.is_integer():
        return message + f" Write it as {int(value)}."
    if kind == _INTEGER:
        return message + " Write a whole number without quotes."
    return message + " Write a number without quotes."


def _suggest_key(key: str, known: Iterable[str]) -> str | None:
    matches = difflib.get_close_matches(key.lower(), list(known), n=1, cutoff=0.6)
    return matches[0] if matches else None


# --- Checking one table --------------------------------------------------------


@dataclass
class _CheckedTable:
    """One table after its own keys were checked, before the checks across tables."""

    # "peer" or "workstation".
    kind: str
    file: Path
    # Table name and position for problem lines, e.g. "peer['north']" or "workstation[2]".
    label: str
    # Table name and its position in its file, counting from 1, e.g. "peer[2]".
    position: str
    # The keys whose values passed, converted to the dataclass field types.
    values: dict[str, Any]


def _check_table(
    file: Path,
    label: str,
    table: dict[str, Any],
    specs: dict[str, _KeySpec],
    problems: list[str],
) -> dict[str, Any]:
    """Check each key of `table` against `specs`, appending a line per problem.

    Returns the values that passed, converted to field types: AE titles without
    leading and trailing spaces, and numbers as float.
    """
    values: dict[str, Any] = {}

    for key, value in table.items():
        spec = specs.get(key)
        if spec is None:
            problems.append(_describe_unknown_key(file, label, key, value, specs))
            continue
        if not _has_kind(value, spec.kind):
            message = _describe_type_problem(value, spec.kind)
            problems.append(_value_problem(file, f"{label}.{key}", value, message))
            continue
        messages = spec.check(value)
        for message in messages:
            problems.append(_value_problem(file, f"{label}.{key}", value, message))
        if not messages:
            values[key] = _convert_value(key, value, spec)

    for key, spec in specs.items():
        if spec.required_example and key not in table:
            problems.append(
                _key_problem(
                    file,
                    f"{label}.{key}",
                    f"missing required key. Add it to this table, e.g. {spec.required_example}.",
                )
            )

    return values


def _convert_value(key: str, value: Any, spec: _KeySpec) -> Any:
    if key == "ae_title":
        return value.strip(" ")
    if spec.kind == _NUMBER:
        return float(value)
    return value


def _describe_unknown_key(
    file: Path, label: str, key: str, value: object, specs: dict[str, _KeySpec]
) -> str:
    suggestion = _suggest_key(key, specs)
    if suggestion is not None:
        message = f"unknown key. Rename it to '{suggestion}' if that was meant."
    else:
        message = f"unknown key. Remove it. The known keys are: {', '.join(specs)}."
    return _value_problem(file, f"{label}.{key}", value, message)


# --- Reading files -------------------------------------------------------------

# tomllib (Python 3.11) ends its messages with "(at line L, column C)".
_TOML_POSITION = re.compile(
    r"^(?P<message>.*) \(at line (?P<line>\d+), column (?P<column>\d+)\)$"
)
_TOML_END = re.compile(r"^(?P<message>.*) \(at end of document\)$")


def _describe_syntax_error(file: Path, error: Exception) -> str:
    text = str(error)
    position = _TOML_POSITION.match(text)
    if position is not None:
        where = f"line {position['line']}, column {position['column']}"
        return f"{file}: {where}: invalid TOML: {position['message']}. Correct the syntax there."

    end = _TOML_END.match(text)
    if end is not None:
        return f"{file}: end of file: invalid TOML: {end['message']}. Correct the syntax near the end."
    return f"{file}: invalid TOML: {text}. Correct the syntax."


def _parse_file(file: Path, problems: list[str]) -> dict[str, Any] | None:
    """Read and parse one TOML file, or append a problem and return None."""
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
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        problems.append(
            f"{file}: line {line}: byte {error.start} is not valid UTF-8. Save the file as UTF-8."
        )
        return None

    try:
        document: dict[str, Any] = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        problems.append(_describe_syntax_error(file, error))
        return None
    return document


def _list_drop_in_files(folder: Path, problems: list[str]) -> list[Path]:
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


# --- Splitting a document into tables -----------------------------------------


@dataclass
class _Collected:
    """Tables gathered from all files, in the order that they were read."""

    # Values of the [router] table that passed their checks.
    router: dict[str, Any] = field(default_factory=dict)
    router_file: Path | None = None
    # AE title that peers and workstations must not use. None when [router]
    # sets an invalid AE title, which is reported already.
    router_ae_title: str | None = RouterSettings.ae_title
    # File whose [router] table sets ae_title, or None for the default.
    router_ae_title_file: Path | None = None
    tables: list[_CheckedTable] = field(default_factory=list)


def _collect_document(
    file: Path,
    document: dict[str, Any],
    main_dir: Path,
    collected: _Collected,
    problems: list[str],
) -> None:
    for key, value in document.items():
        if key == "router":
            _collect_router(file, value, main_dir, collected, problems)
        elif key in ("peer", "workstation"):
            _collect_array(file, key, value, collected, problems)
        else:
            problems.append(_describe_unknown_top_level(file, key, value))


def _describe_unknown_top_level(file: Path, key: str, value: object) -> str:
    headers = ", ".join(_TABLE_HEADERS.values())

    if not isinstance(value, (dict, list)):
        router_key = _suggest_key(key, _ROUTER_KEYS)
        if router_key is not None:
            message = (
                f"unknown top-level key. If router.{router_key} was meant,"
                f" write {router_key} = ... below a [router] line."
            )
        else:
            message = f"unknown top-level key. Write keys below one of these tables: {headers}."
        return _value_problem(file, key, value, message)

    suggestion = _suggest_key(key, _TABLE_HEADERS)
    if suggestion is not None:
        message = f"unknown table. Rename it to {_TABLE_HEADERS[suggestion]} if that was meant."
    else:
        message = f"unknown table. Remove it. The known tables are: {headers}."
    return _value_problem(file, key, value, message)


def _collect_router(
    file: Path, value: object, main_dir: Path, collected: _Collected, problems: list[str]
) -> None:
    if not isinstance(value, dict):
        problems.append(
            _value_problem(
                file,
                "router",
                value,
                f"expected a table, got {_describe_toml_type(value)}."
                " Write a [router] line followed by key = value lines.",
            )
        )
        return
    if collected.router_file is not None:
        problems.append(
            _key_problem(
                file,
                "router",
                f"a second [router] table, but the first is in {collected.router_file}."
                " Keep one [router] table and move its keys there.",
            )
        )
        return

    collected.router_file = file
    values = _check_table(file, "router", value, _ROUTER_KEYS, problems)
    if "state_dir" in values:
        values["state_dir"] = _resolve_state_dir(values["state_dir"], main_dir)
    if "ae_title" in value:
        collected.router_ae_title = values.get("ae_title")
        collected.router_ae_title_file = file
    collected.router = values


def _resolve_state_dir(value: str, main_dir: Path) -> Path:
    state_dir = Path(value)
    if state_dir.is_absolute():
        return state_dir
    return main_dir / state_dir


def _collect_array(
    file: Path, name: str, value: object, collected: _Collected, problems: list[str]
) -> None:
    header = _TABLE_HEADERS[name]
    if isinstance(value, dict):
        problems.append(
            _key_problem(
                file,
                name,
                f"[{name}] is a single table, but each {name} needs its own {header} table."
                f" Write {header} with double brackets.",
            )
        )
        # Still check its keys, so that their problems are reported in this run too.
        value = [value]
    if not isinstance(value, list):
        problems.append(
            _value_problem(
                file,
                name,
                value,
                f"expected an array of tables, got {_describe_toml_type(value)}."
                f" Write each {name} as a {header} table.",
            )
        )
        return

    for index, table in enumerate(value, start=1):
        position = f"{name}[{index}]"
        if not isinstance(table, dict):
            problems.append(
                _value_problem(
                    file,
                    position,
                    table,
                    f"expected a table, got {_describe_toml_type(table)}."
                    f" Write each {name} as a {header} table.",
                )
            )
            continue
        label = _label_table(name, position, table)
        specs = _PEER_KEYS if name == "peer" else _WORKSTATION_KEYS
        values = _check_table(file, label, table, specs, problems)
        collected.tables.append(_CheckedTable(name, file, label, position, values))


def _label_table(name: str, position: str, table: dict[str, Any]) -> str:
    """Return "peer['north']" for a peer with a usable name, else the position."""
    peer_name = table.get("name")
    if name == "peer" and isinstance(peer_name, str) and peer_name.strip():
        return f"peer[{peer_name!r}]"
    return position


# --- Checks across files -------------------------------------------------------


def _check_unique_peer_names(tables: list[_CheckedTable], problems: list[str]) -> None:
    first_by_name: dict[str, _CheckedTable] = {}
    for table in tables:
        name = table.values.get("name")
        if table.kind != "peer" or name is None:
            continue
        first = first_by_name.setdefault(name, table)
        if first is table:
            continue
        problems.append(
            _value_problem(
                table.file,
                f"{table.position}.name",
                name,
                f"peer name is already used by {first.position} in {first.file}."
                " Give each peer a unique name.",
            )
        )


def _check_unique_ae_titles(
    tables: list[_CheckedTable],
    router_ae_title: str | None,
    router_ae_title_file: Path | None,
    problems: list[str],
) -> None:
    if router_ae_title_file is None:
        router_source = "the default, as no [router] table sets ae_title"
    else:
        router_source = f"router.ae_title in {router_ae_title_file}"

    first_by_title: dict[str, _CheckedTable] = {}
    for table in tables:
        title = table.values.get("ae_title")
        if title is None:
            continue
        key = f"{table.label}.ae_title"

        if title == router_ae_title:
            problems.append(
                _value_problem(
                    table.file,
                    key,
                    title,
                    f"AE title is the router's own AE title ({router_source})."
                    f" Give the {table.kind} another AE title.",
                )
            )

        first = first_by_title.setdefault(title, table)
        if first is not table:
            problems.append(
                _value_problem(
                    table.file,
                    key,
                    title,
                    f"AE title is already used by {first.label} in {first.file}."
                    " Give each peer and workstation its own AE title.",
                )
            )


# --- Public interface ----------------------------------------------------------


def load_config(path: Path) -> Config:
    """Read, check and return the configuration of the main file at `path`.

    The main file is read first, then each `*.toml` file of the `yicrouter.d/`
    folder beside it in name order. Any file may contain `[[peer]]` and
    `[[workstation]]` tables, but only one file may contain `[router]`. Raises
    ConfigError with every problem found in all files.
    """
    main_file = Path(path).absolute()
    if not main_file.exists():
        raise ConfigError(
            [
                f"{main_file}: configuration file not found."
                " Create it or pass the path of the main file."
            ]
        )

    problems: list[str] = []
    drop_in_files = _list_drop_in_files(main_file.parent / DROP_IN_FOLDER_NAME, problems)
    files = [main_file, *drop_in_files]

    collected = _Collected()
    for file in files:
        document = _parse_file(file, problems)
        if document is not None:
            _collect_document(file, document, main_file.parent, collected, problems)

    _check_unique_peer_names(collected.tables, problems)
    _check_unique_ae_titles(
        collected.tables, collected.router_ae_title, collected.router_ae_title_file, problems
    )

    if problems:
        raise ConfigError(problems)

    return Config(
        router=RouterSettings(**collected.router),
        peers=tuple(
            PeerSettings(source_file=table.file, **table.values)
            for table in collected.tables
            if table.kind == "peer"
        ),
        workstations=tuple(
            WorkstationSettings(source_file=table.file, **table.values)
            for table in collected.tables
            if table.kind == "workstation"
        ),
        files=tuple(files),
    )


def check_config(path: Path) -> tuple[bool, list[str]]:
    """Load the configuration and return whether it is valid and the lines to print.

    The lines are one OK summary, or one line per problem.
    """
    try:
        config = load_config(path)
    except ConfigError as error:
        return False, list(error.problems)

    summary = (
        f"OK: {len(config.files)} files, {len(config.peers)} peers,"
        f" {len(config.workstations)} workstations"
    )
    return True, [summary]
