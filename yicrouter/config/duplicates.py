"""Checks across all files: unique peer names and unique AE titles."""

from __future__ import annotations

from pathlib import Path

from yicrouter.config.problems import value_problem
from yicrouter.config.tables import CheckedTable


def check_unique_peer_names(tables: list[CheckedTable], problems: list[str]) -> None:
    first_by_name: dict[str, CheckedTable] = {}
    for table in tables:
        name = table.values.get("name")
        if table.kind != "peer" or name is None:
            continue
        first = first_by_name.setdefault(name, table)
        if first is table:
            continue
        problems.append(
            value_problem(
                table.file,
                f"{table.position}.name",
                name,
                f"peer name is already used by {first.position} in {first.file}."
                " Give each peer a unique name.",
            )
        )


def check_unique_ae_titles(
    tables: list[CheckedTable],
    router_ae_title: str | None,
    router_ae_title_file: Path | None,
    problems: list[str],
) -> None:
    router_source = _describe_router_ae_title_source(router_ae_title_file)

    first_by_title: dict[str, CheckedTable] = {}
    for table in tables:
        title = table.values.get("ae_title")
        if title is None:
            continue
        key = f"{table.label}.ae_title"

        if title == router_ae_title:
            problems.append(
                value_problem(
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
                value_problem(
                    table.file,
                    key,
                    title,
                    f"AE title is already used by {first.label} in {first.file}."
                    " Give each peer and workstation its own AE title.",
                )
            )


def _describe_router_ae_title_source(router_ae_title_file: Path | None) -> str:
    if router_ae_title_file is None:
        return "the default, as no [router] table sets ae_title"
    return f"router.ae_title in {router_ae_title_file}"
