"""Checking the keys of one table against its schema."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from yicrouter.config.problems import key_problem, value_problem
from yicrouter.config.schema import (
    NUMBER,
    KeySpec,
    describe_type_problem,
    has_kind,
    suggest_key,
)
from yicrouter.config.settings import QueueSettings


@dataclass
class CheckedTable:
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


def check_table(
    file: Path,
    label: str,
    table: dict[str, Any],
    specs: dict[str, KeySpec],
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
        elif _check_value(file, f"{label}.{key}", value, spec, problems):
            values[key] = _convert_value(key, value, spec)

    _check_required_keys(file, label, table, specs, problems)
    return values


def check_retry_delays(
    file: Path, table: dict[str, Any], values: dict[str, Any], problems: list[str]
) -> None:
    """Check that the `[queue]` table's retry_max is at least its retry_base.

    A key that the table leaves out counts with its default. A key that the
    table sets to an invalid value was reported already, so the check is skipped.
    """
    keys = ("retry_base", "retry_max")
    if any(key in table and key not in values for key in keys):
        return
    retry_base = values.get("retry_base", QueueSettings.retry_base)
    retry_max = values.get("retry_max", QueueSettings.retry_max)
    if retry_max >= retry_base:
        return

    # Report the key that the table sets, retry_max when it sets both.
    if "retry_max" in table:
        other = _describe_setting("retry_base", retry_base, table)
        message = (
            f"retry_max is less than {other}, but the delay between attempts grows"
            f" from retry_base up to retry_max. Set retry_max to {retry_base} or more,"
            " or lower retry_base."
        )
        problems.append(value_problem(file, "queue.retry_max", table["retry_max"], message))
    else:
        other = _describe_setting("retry_max", retry_max, table)
        message = (
            f"retry_base is greater than {other}, but the delay between attempts grows"
            f" from retry_base up to retry_max. Set retry_base to {retry_max} or less,"
            f" or set retry_max to {retry_base} or more."
        )
        problems.append(value_problem(file, "queue.retry_base", table["retry_base"], message))


def _describe_setting(key: str, value: float, table: dict[str, Any]) -> str:
    """Return e.g. "retry_max = 3600.0 (the default)" for a key that `table` leaves out."""
    if key in table:
        return f"{key} = {table[key]!r}"
    return f"{key} = {value!r} (the default)"


def _check_value(
    file: Path, qualified_key: str, value: Any, spec: KeySpec, problems: list[str]
) -> bool:
    """Check the TOML type and then the value, appending a line per problem.

    Returns whether the value passed both.
    """
    if not has_kind(value, spec.kind):
        message = describe_type_problem(value, spec.kind)
        problems.append(value_problem(file, qualified_key, value, message))
        return False

    messages = spec.check(value)
    for message in messages:
        problems.append(value_problem(file, qualified_key, value, message))
    return not messages


def _check_required_keys(
    file: Path,
    label: str,
    table: dict[str, Any],
    specs: dict[str, KeySpec],
    problems: list[str],
) -> None:
    for key, spec in specs.items():
        if spec.required_example and key not in table:
            problems.append(
                key_problem(
                    file,
                    f"{label}.{key}",
                    f"missing required key. Add it to this table, e.g. {spec.required_example}.",
                )
            )


def _convert_value(key: str, value: Any, spec: KeySpec) -> Any:
    if key == "ae_title":
        return value.strip(" ")
    if spec.kind == NUMBER:
        return float(value)
    return value


def _describe_unknown_key(
    file: Path, label: str, key: str, value: object, specs: dict[str, KeySpec]
) -> str:
    suggestion = suggest_key(key, specs)
    if suggestion is not None:
        message = f"unknown key. Rename it to '{suggestion}' if that was meant."
    else:
        message = f"unknown key. Remove it. The known keys are: {', '.join(specs)}."
    return value_problem(file, f"{label}.{key}", value, message)
