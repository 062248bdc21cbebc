"""Splitting each parsed file into its tables.

At most one file may contain each single table, `[router]` and `[queue]`. The
`[[peer]]` and `[[workstation]]` arrays of tables may be in any file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from yicrouter.config.problems import key_problem, value_problem
from yicrouter.config.schema import (
    PEER_KEYS,
    QUEUE_KEYS,
    ROUTER_KEYS,
    SINGLE_TABLE_KEYS,
    TABLE_HEADERS,
    WORKSTATION_KEYS,
    describe_toml_type,
    suggest_key,
)
from yicrouter.config.settings import RouterSettings
from yicrouter.config.tables import CheckedTable, check_retry_delays, check_table


@dataclass
class Collected:
    """Tables gathered from all files, in the order that they were read."""

    # Values of the [router] table that passed their checks.
    router: dict[str, Any] = field(default_factory=dict)
    router_file: Path | None = None
    # AE title that peers and workstations must not use. None when [router]
    # sets an invalid AE title, which is reported already.
    router_ae_title: str | None = RouterSettings.ae_title
    # File whose [router] table sets ae_title, or None for the default.
    router_ae_title_file: Path | None = None
    # Values of the [queue] table that passed their checks.
    queue: dict[str, Any] = field(default_factory=dict)
    queue_file: Path | None = None
    tables: list[CheckedTable] = field(default_factory=list)


def collect_document(
    file: Path,
    document: dict[str, Any],
    main_dir: Path,
    collected: Collected,
    problems: list[str],
) -> None:
    for key, value in document.items():
        if key == "router":
            _collect_router(file, value, main_dir, collected, problems)
        elif key == "queue":
            _collect_queue(file, value, collected, problems)
        elif key in ("peer", "workstation"):
            _collect_array(file, key, value, collected, problems)
        else:
            problems.append(_describe_unknown_top_level(file, key, value))


def _describe_unknown_top_level(file: Path, key: str, value: object) -> str:
    headers = ", ".join(TABLE_HEADERS.values())

    if not isinstance(value, (dict, list)):
        # Maps each key of a single table to that table's name.
        single_table_keys = {k: name for name, specs in SINGLE_TABLE_KEYS.items() for k in specs}
        table_key = suggest_key(key, single_table_keys)
        if table_key is not None:
            table = single_table_keys[table_key]
            message = (
                f"unknown top-level key. If {table}.{table_key} was meant,"
                f" write {table_key} = ... below a {TABLE_HEADERS[table]} line."
            )
        else:
            message = f"unknown top-level key. Write keys below one of these tables: {headers}."
        return value_problem(file, key, value, message)

    suggestion = suggest_key(key, TABLE_HEADERS)
    if suggestion is not None:
        message = f"unknown table. Rename it to {TABLE_HEADERS[suggestion]} if that was meant."
    else:
        message = f"unknown table. Remove it. The known tables are: {headers}."
    return value_problem(file, key, value, message)


def _as_single_table(
    file: Path, name: str, value: object, first_file: Path | None, problems: list[str]
) -> dict[str, Any] | None:
    """Return the `[router]` or `[queue]` table, or append a problem and return None.

    Returns None when `value` is not a table, or when `first_file` already
    contains this table.
    """
    header = TABLE_HEADERS[name]
    if not isinstance(value, dict):
        problems.append(
            value_problem(
                file,
                name,
                value,
                f"expected a table, got {describe_toml_type(value)}."
                f" Write a {header} line followed by key = value lines.",
            )
        )
        return None
    if first_file is not None:
        problems.append(
            key_problem(
                file,
                name,
                f"a second {header} table, but the first is in {first_file}."
                f" Keep one {header} table and move its keys there.",
            )
        )
        return None
    return value


def _collect_router(
    file: Path, value: object, main_dir: Path, collected: Collected, problems: list[str]
) -> None:
    table = _as_single_table(file, "router", value, collected.router_file, problems)
    if table is None:
        return

    collected.router_file = file
    values = check_table(file, "router", table, ROUTER_KEYS, problems)
    if "state_dir" in values:
        values["state_dir"] = _resolve_state_dir(values["state_dir"], main_dir)
    if "ae_title" in table:
        collected.router_ae_title = values.get("ae_title")
        collected.router_ae_title_file = file
    collected.router = values


def _collect_queue(file: Path, value: object, collected: Collected, problems: list[str]) -> None:
    table = _as_single_table(file, "queue", value, collected.queue_file, problems)
    if table is None:
        return

    collected.queue_file = file
    values = check_table(file, "queue", table, QUEUE_KEYS, problems)
    check_retry_delays(file, table, values, problems)
    collected.queue = values


def _resolve_state_dir(value: str, main_dir: Path) -> Path:
    state_dir = Path(value)
    if state_dir.is_absolute():
        return state_dir
    return main_dir / state_dir


def _collect_array(
    file: Path, name: str, value: object, collected: Collected, problems: list[str]
) -> None:
    tables = _as_array_of_tables(file, name, value, problems)
    if tables is None:
        return

    for index, table in enumerate(tables, start=1):
        _collect_array_table(file, name, f"{name}[{index}]", table, collected, problems)


def _as_array_of_tables(
    file: Path, name: str, value: object, problems: list[str]
) -> list[Any] | None:
    """Return the `[[name]]` array, or append a problem and return None.

    A single `[name]` table is reported, then returned as an array of one table.
    """
    header = TABLE_HEADERS[name]
    if isinstance(value, dict):
        problems.append(
            key_problem(
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
            value_problem(
                file,
                name,
                value,
                f"expected an array of tables, got {describe_toml_type(value)}."
                f" Write each {name} as a {header} table.",
            )
        )
        return None
    return value


def _collect_array_table(
    file: Path,
    name: str,
    position: str,
    table: object,
    collected: Collected,
    problems: list[str],
) -> None:
    if not isinstance(table, dict):
        problems.append(
            value_problem(
                file,
                position,
                table,
                f"expected a table, got {describe_toml_type(table)}."
                f" Write each {name} as a {TABLE_HEADERS[name]} table.",
            )
        )
        return

    label = _label_table(name, position, table)
    specs = PEER_KEYS if name == "peer" else WORKSTATION_KEYS
    values = check_table(file, label, table, specs, problems)
    collected.tables.append(CheckedTable(name, file, label, position, values))


def _label_table(name: str, position: str, table: dict[str, Any]) -> str:
    """Return "peer['north']" for a peer with a usable name, else the position."""
    peer_name = table.get("name")
    if name == "peer" and isinstance(peer_name, str) and peer_name.strip():
        return f"peer[{peer_name!r}]"
    return position
