"""`yicrouter queue`: list, show, retry, purge and count the entries of the retry queue.

The command opens the router's database directly and is safe to run while the
router runs. It does not take the state_dir lock, and every change is one
UPDATE or DELETE per entry whose WHERE clause repeats its condition. So an
entry that the router claims in the meantime is left alone.
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime, timedelta
from pathlib import Path

import peewee

from yicrouter import retry_queue
from yicrouter.config import Config, ConfigError, load_config
from yicrouter.db import SchemaTooNew, open_database
from yicrouter.retry_queue import DEAD, IN_FLIGHT, QUEUED, STATES, QueueEntry
from yicrouter.routing import Location
from yicrouter.spool import Spool

DEFAULT_LIST_LIMIT = 50
# Characters of last_error that `queue list` shows.
ERROR_COLUMN_WIDTH = 40
# Entry ids that one message lists before it ends with "...".
MAX_IDS_IN_MESSAGE = 20
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"


# --- arguments ----------------------------------------------------------------------


def add_queue_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser],
                     default_config: Path) -> None:
    """Add the `queue` command and its subcommands to the `yicrouter` parser."""
    queue = commands.add_parser("queue", help="inspect and manage the retry queue of outgoing instances")
    config_help = f"main config file (default: {default_config})"
    # --config may come before or after the subcommand; the subcommand's copy
    # sets nothing unless given, so it never hides the first one.
    queue.add_argument("--config", type=Path, default=default_config, help=config_help)
    queue_commands = queue.add_subparsers(dest="queue_command", required=True)
    config_parent = argparse.ArgumentParser(add_help=False)
    config_parent.add_argument("--config", type=Path, default=argparse.SUPPRESS, help=config_help)

    listing = queue_commands.add_parser("list", parents=[config_parent], help="list entries, newest first")
    listing.add_argument("--state", choices=STATES, help="only entries in this state")
    listing.add_argument("--destination", metavar="AE", help="only entries for this Move Destination AE title")
    listing.add_argument("--limit", type=_positive_int, default=DEFAULT_LIST_LIMIT,
                         help=f"maximum number of entries to print (default: {DEFAULT_LIST_LIMIT})")

    show = queue_commands.add_parser("show", parents=[config_parent], help="print every field of one entry")
    show.add_argument("id", type=int, help="entry id, as `queue list` prints it")

    retry = queue_commands.add_parser(
        "retry", parents=[config_parent],
        help="make entries due now with their attempts reset, leaving entries in flight alone",
    )
    _add_selection(retry)

    purge = queue_commands.add_parser("purge", parents=[config_parent],
                                      help="delete entries and their spool files")
    _add_selection(purge)
    purge.add_argument("--all", action="store_true", help="select every entry")
    purge.add_argument("--yes", action="store_true", help="delete without asking for confirmation")
    purge.add_argument("--force", action="store_true",
                       help="also delete entries in flight. The router may still send them, "
                            "or fail to find their files.")

    queue_commands.add_parser("stats", parents=[config_parent],
                              help="count entries by state and destination, and print the oldest queued entry's age")


def _add_selection(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("ids", type=int, nargs="*", metavar="ID", help="entry ids")
    parser.add_argument("--destination", metavar="AE", help="select the entries for this Move Destination AE title")
    parser.add_argument("--dead", action="store_true",
                        help="select dead entries (with --destination, only that destination's)")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"invalid value {text}: expected a whole number of 1 or more")
    return value


def _selection_error(args: argparse.Namespace) -> str | None:
    """Return why the entry selection of `retry` or `purge` is invalid, or None."""
    has_all_option = hasattr(args, "all")
    every = has_all_option and args.all
    filters = args.destination is not None or args.dead
    filter_names = "--destination, --dead or --all" if has_all_option else "--destination or --dead"
    if args.ids and (filters or every):
        return f"give entry ids or {filter_names}, not both"
    if every and filters:
        return "--all selects every entry, so it takes no --destination or --dead"
    if not (args.ids or filters or every):
        return f"select entries: give entry ids, {filter_names}"
    return None


# --- running ------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    """Run one `queue` subcommand and return the exit status."""
    if args.queue_command in ("retry", "purge"):
        problem = _selection_error(args)
        if problem is not None:
            print(f"yicrouter queue {args.queue_command}: {problem}", file=sys.stderr)
            return 2
    config = _open(args.config)
    if config is None:
        return 1
    if args.queue_command == "list":
        return _list(args.state, args.destination, args.limit)
    if args.queue_command == "show":
        return _show(args.id)
    if args.queue_command == "retry":
        return _retry(config, args)
    if args.queue_command == "purge":
        return _purge(config, args)
    if args.queue_command == "stats":
        return _stats()
    return 2


def _open(config_path: Path) -> Config | None:
    """Load the configuration and open the router's database, or print why that failed and return None."""
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        print("yicrouter: invalid configuration:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return None
    router = config.router
    # open_database() would create an empty database, and state_dir too, so a
    # wrong state_dir would show an empty queue instead of an error.
    if not router.database:
        database_file = Path(router.database_url.removeprefix("sqlite:///"))
        if not database_file.exists():
            print(f"yicrouter: no router database at {database_file}. Check router.state_dir in "
                  f"{config_path}, or start the router once to create the database.", file=sys.stderr)
            return None
    try:
        open_database(router.state_dir, [Location, QueueEntry], router.database_url)
    except SchemaTooNew as exc:
        print(f"yicrouter: {exc}", file=sys.stderr)
        return None
    except (peewee.DatabaseError, OSError) as exc:
        print(f"yicrouter: failed to open the router database in {router.state_dir}: {exc}. "
              "Run the command as a user that may read and write that folder.", file=sys.stderr)
        return None
    return config


# --- list, show, stats --------------------------------------------------------------


def _list(state: str | None, destination: str | None, limit: int) -> int:
    entries = retry_queue.select_entries(state=state, destination=destination, limit=limit)
    if not entries:
        print("No entries.")
        return 0
    headers = ["ID", "STATE", "DESTINATION", "ATTEMPTS", "NEXT ATTEMPT (UTC)", "SOP INSTANCE UID", "LAST ERROR"]
    rows = [
        [
            str(entry.id), str(entry.state), str(entry.destination), str(entry.attempts),
            # Only a queued entry waits for next_attempt_at, so the other states show "-".
            _format_time(entry.next_attempt_at) if entry.state == QUEUED else "-",
            str(entry.sop_instance_uid), _shorten(str(entry.last_error), ERROR_COLUMN_WIDTH),
        ]
        for entry in entries
    ]
    print(_table(headers, rows))
    total = retry_queue.count_entries(state=state, destination=destination)
    if total > len(entries):
        print(f"Showing the newest {len(entries)} of {total} entries. Raise --limit to see more.")
    return 0


def _show(entry_id: int) -> int:
    entry = retry_queue.get_entry(entry_id)
    if entry is None:
        print(f"yicrouter: queue entry {entry_id} not found. `yicrouter queue list` prints the ids.",
              file=sys.stderr)
        return 1
    names = [field.name for field in QueueEntry._meta.sorted_fields]
    width = max(len(name) for name in [*names, "spool_file"])
    for name in names:
        print(f"{name:<{width}}  {_format_value(getattr(entry, name))}")
    file_state = "exists" if Path(str(entry.path)).exists() else "missing"
    print(f"{'spool_file':<{width}}  {file_state}")
    return 0


def _stats() -> int:
    by_state = retry_queue.depth()
    print(_table(["STATE", "ENTRIES"], [[state, str(by_state[state])] for state in STATES]))
    print()
    by_destination = retry_queue.depth_by_destination()
    if by_destination:
        rows = [
            [destination, *(str(counts[state]) for state in STATES), str(sum(counts.values()))]
            for destination, counts in sorted(by_destination.items())
        ]
        print(_table(["DESTINATION", *(state.upper() for state in STATES), "TOTAL"], rows))
    else:
        print("No entries.")
    print()
    oldest = retry_queue.oldest_queued()
    if oldest is None:
        print("Oldest queued entry: none")
    else:
        age = retry_queue.utc_now() - oldest.created_at
        print(f"Oldest queued entry: {oldest.id}, received {_format_age(age)} ago "
              f"({_format_time(oldest.created_at)} UTC)")
    return 0


# --- retry, purge -------------------------------------------------------------------


def _select(args: argparse.Namespace) -> list[QueueEntry] | None:
    """Return the entries that `retry` or `purge` selected, or None when an id is not found."""
    if args.ids:
        entries = retry_queue.select_entries(ids=args.ids)
        missing = sorted(set(args.ids) - {int(entry.id) for entry in entries})
        if missing:
            print(f"yicrouter: queue entries not found: {_format_ids(missing)}. Nothing was changed.",
                  file=sys.stderr)
            return None
        return entries
    state = DEAD if args.dead else None
    return retry_queue.select_entries(state=state, destination=args.destination)


def _retry(config: Config, args: argparse.Namespace) -> int:
    entries = _select(args)
    if entries is None:
        return 1
    spool = Spool(config.router.state_dir)
    scheduled = 0
    in_flight: list[int] = []
    removed_meanwhile: list[int] = []
    exit_status = 0
    for entry in entries:
        outcome = retry_queue.reschedule(int(entry.id))
        if outcome == retry_queue.SCHEDULED:
            scheduled += 1
        elif outcome == IN_FLIGHT:
            in_flight.append(int(entry.id))
        elif outcome == retry_queue.NOT_FOUND:
            removed_meanwhile.append(int(entry.id))
        elif outcome == retry_queue.DUPLICATE_DELETED:
            print(f"Deleted dead entry {entry.id}, because instance {entry.sop_instance_uid} "
                  f"already has a live entry for {entry.destination}.")
            if not _discard_file(spool, str(entry.path)):
                exit_status = 1
    if in_flight:
        print(f"Left {_entries(len(in_flight))} in flight alone: {_format_ids(in_flight)}.")
    if removed_meanwhile:
        print(f"Skipped {_entries(len(removed_meanwhile))} that the router delivered or deleted meanwhile: "
              f"{_format_ids(removed_meanwhile)}.")
    print(f"Scheduled {_entries(scheduled)} for delivery now.")
    return exit_status


def _purge(config: Config, args: argparse.Namespace) -> int:
    entries = _select(args)
    if entries is None:
        return 1
    in_flight = [int(entry.id) for entry in entries if entry.state == IN_FLIGHT]
    if not args.force:
        entries = [entry for entry in entries if entry.state != IN_FLIGHT]
        if in_flight:
            print(f"Left {_entries(len(in_flight))} in flight alone: {_format_ids(in_flight)}. "
                  "Add --force to purge them too.")
    if not entries:
        print("No entries to purge.")
        return 0
    if not args.yes and not _confirm(f"Delete {_entries_and_files(len(entries))}? [y/N] "):
        return 1

    spool = Spool(config.router.state_dir)
    deleted = 0
    skipped: list[int] = []
    exit_status = 0
    for entry in entries:
        path = str(entry.path)
        if not retry_queue.delete_entry(int(entry.id), path, include_in_flight=args.force):
            skipped.append(int(entry.id))
            continue
        deleted += 1
        if not _discard_file(spool, path):
            exit_status = 1
    if skipped:
        print(f"Left {_entries(len(skipped))} alone that the router claimed, delivered or changed "
              f"meanwhile: {_format_ids(skipped)}.")
    print(f"Deleted {_entries_and_files(deleted)}.")
    return exit_status


def _confirm(prompt: str) -> bool:
    """Ask for confirmation on the terminal. Without a terminal, print how to confirm and return False."""
    if not sys.stdin.isatty():
        print("yicrouter: not purging, because there is no terminal to confirm on. "
              "Add --yes to purge without confirmation.", file=sys.stderr)
        return False
    print(prompt, end="", file=sys.stderr, flush=True)
    answer = sys.stdin.readline().strip().lower()
    if answer in ("y", "yes"):
        return True
    print("Nothing was deleted.", file=sys.stderr)
    return False


def _discard_file(spool: Spool, path: str) -> bool:
    """Delete a spool file unless an entry still refers to it. Return False when deletion failed."""
    if retry_queue.path_in_use(path):
        return True
    try:
        spool.discard(Path(path))
    except OSError as exc:
        print(f"yicrouter: failed to delete spool file {path}: {exc}. Delete it by hand.", file=sys.stderr)
        return False
    return True


# --- formatting ---------------------------------------------------------------------


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(row[column]) for row in [headers, *rows]) for column in range(len(headers))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in [headers, *rows]]
    return "\n".join(lines)


def _shorten(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


def _format_time(value: datetime | None) -> str:
    return "-" if value is None else value.strftime(TIME_FORMAT)


def _format_value(value: object) -> str:
    """Format one field for `queue show`, with "-" for an unset value. Stored times are naive UTC."""
    if value is None or value == "":
        return "-"
    if isinstance(value, datetime):
        return f"{_format_time(value)} UTC"
    return str(value)


def _format_age(age: timedelta) -> str:
    seconds = max(int(age.total_seconds()), 0)
    days, seconds = divmod(seconds, 86400)
    hours, seconds = divmod(seconds, 3600)
    minutes, seconds = divmod(seconds, 60)
    parts = [f"{days}d"] if days else []
    if days or hours:
        parts.append(f"{hours}h")
    if days or hours or minutes:
        parts.append(f"{minutes}m")
    parts.append(f"{seconds}s")
    return " ".join(parts)


def _entries(count: int) -> str:
    return f"{count} entry" if count == 1 else f"{count} entries"


def _entries_and_files(count: int) -> str:
    return "1 entry and its file" if count == 1 else f"{count} entries and their files"


def _format_ids(ids: list[int]) -> str:
    listed = ", ".join(str(entry_id) for entry_id in ids[:MAX_IDS_IN_MESSAGE])
    return listed + (", ..." if len(ids) > MAX_IDS_IN_MESSAGE else "")
