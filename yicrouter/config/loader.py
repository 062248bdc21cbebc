"""`load_config` and `check_config`: read every file, check it and build `Config`."""

from __future__ import annotations

from pathlib import Path

from yicrouter.config.documents import Collected, collect_document
from yicrouter.config.duplicates import check_unique_ae_titles, check_unique_peer_names
from yicrouter.config.files import DROP_IN_FOLDER_NAME, list_drop_in_files, parse_file
from yicrouter.config.problems import ConfigError
from yicrouter.config.settings import (
    Config,
    PeerSettings,
    QueueSettings,
    RouterSettings,
    WorkstationSettings,
)


def load_config(path: Path) -> Config:
    """Read, check and return the configuration of the main file at `path`.

    The main file is read first, then each `*.toml` file of the `yicrouter.d/`
    folder beside it in name order. Any file may contain `[[peer]]` and
    `[[workstation]]` tables, but only one file may contain `[router]`, and
    only one `[queue]`. Raises ConfigError with every problem found in all files.
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
    drop_in_files = list_drop_in_files(main_file.parent / DROP_IN_FOLDER_NAME, problems)
    files = [main_file, *drop_in_files]

    collected = _collect_files(files, main_file.parent, problems)
    check_unique_peer_names(collected.tables, problems)
    check_unique_ae_titles(
        collected.tables, collected.router_ae_title, collected.router_ae_title_file, problems
    )

    if problems:
        raise ConfigError(problems)
    return _build_config(collected, files)


def _collect_files(files: list[Path], main_dir: Path, problems: list[str]) -> Collected:
    collected = Collected()
    for file in files:
        document = parse_file(file, problems)
        if document is not None:
            collect_document(file, document, main_dir, collected, problems)
    return collected


def _build_config(collected: Collected, files: list[Path]) -> Config:
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
        queue=QueueSettings(**collected.queue),
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
