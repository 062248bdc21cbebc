"""Splitting each parsed file into `[router]`, `[[peer]]` and `[[workstation]]` tables."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from yicrouter.config.problems import key_problem, value_problem
from yicrouter.config.schema import (
    PEER_KEYS,
    ROUTER_KEYS,
    TABLE_HEADERS,
    WORKSTATION_KEYS,
    describe_toml_type,
    suggest_key,
)
from yicrouter.config.settings import RouterSettings
from yicrouter.config.tables import CheckedTable, check_table


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
        elif key in ("peer", "workstation"):
            _collect_array(file, key, value, collected, problems)
        else:
            problems.append(_describe_unknown_top_level(file, key, value))


def _describe_unknown_top_level(file: Path, key: str, value: object) -> str:
    headers = ", ".join(TABLE_HEADERS.values())

    if not isinstance(value, (dict, list)):
        router_key = suggest_key(key, ROUTER_KEYS)
        if router_key is not None:
            message = (
                f"unknown top-level key. If router.{router_key} was meant,"
                f" write {router_key} = ... below a [router] line."
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


def _collect_router(
    file: Path, value: object, main_dir: Path, collected: Collected, problems: list[str]
) -> None:
    if not isinstance(value, dict):
        problems.append(
            value_problem(
                file,
                "router",
                value,
                f"expected a table, got {describe_toml_type(value)}."
                " Write a [router] line followed by key = value lines.",
            )
        )
        return
    if collected.router_file is not None:
        problems.append(
            key_problem(
                file,
                "router",
                f"a second [router] table, but the first is in {collected.router_file}."
                " Keep one [router] table and move its keys there.",
            )
        )
        return

    collected.router_file = file
    values = check_table(file, "router", value, ROUTER_KEYS, problems)
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
