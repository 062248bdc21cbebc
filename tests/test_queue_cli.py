"""`yicrouter queue`: list, show, retry, purge and stats against a real SQLite database.

Entries are made with the retry queue's own functions, as the router makes
them, and the command runs through `yicrouter.cli.main` in this process, and
once as a subprocess.
"""

from __future__ import annotations

import io
import random
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from yicrouter import retry_queue
from yicrouter.cli import main
from yicrouter.db import open_database
from yicrouter.retry_queue import DEAD, IN_FLIGHT, QUEUED, QueueEntry, RetryPolicy
from yicrouter.routing import Location

# A policy under which the first failure makes an entry dead.
DEAD_ON_FIRST_FAILURE = RetryPolicy(max_attempts=1)
RETRY_LATER = RetryPolicy(base=600.0)


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture
def config_path(tmp_path: Path, state_dir: Path) -> Iterator[Path]:
    path = tmp_path / "yicrouter.toml"
    path.write_text(f'[router]\nstate_dir = "{state_dir}"\n', encoding="utf-8")
    open_database(state_dir, [Location, QueueEntry])
    yield path


def _add(state_dir: Path, sop_uid: str, destination: str = "WS1", state: str = QUEUED,
         error: str = "association rejected") -> int:
    """Create an entry in `state` with a spool file, as the router would, and return its id."""
    path = state_dir / "spool" / "jobs" / f"move-{sop_uid}" / f"{sop_uid}.dcm"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"DICM")
    entry_id, _ = retry_queue.enqueue(
        sop_instance_uid=sop_uid, sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        transfer_syntax="1.2.840.10008.1.2.1", path=str(path), size=4, destination=destination,
        originator=(destination, 7), move_id=f"move-{sop_uid}", owner="move:1", lease_seconds=60.0,
    )
    if state == QUEUED:
        retry_queue.mark_failed(entry_id, error, RETRY_LATER, random.Random(1))
    elif state == DEAD:
        retry_queue.mark_failed(entry_id, error, DEAD_ON_FIRST_FAILURE, random.Random(1))
    return entry_id


def _entry(entry_id: int) -> QueueEntry | None:
    return retry_queue.get_entry(entry_id)


def _run(config_path: Path, *args: str) -> int:
    return main(["queue", *args, "--config", str(config_path)])


# --- list -----------------------------------------------------------------------------


def test_list_empty(config_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(config_path, "list") == 0
    assert capsys.readouterr().out == "No entries.\n"


def test_list_filters_by_state(config_path: Path, state_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _add(state_dir, "1.2.3.1", state=QUEUED)
    _add(state_dir, "1.2.3.2", state=DEAD)
    assert _run(config_path, "list", "--state", "dead") == 0
    out = capsys.readouterr().out
    assert "1.2.3.2" in out
    assert "1.2.3.1" not in out


def test_list_filters_by_destination(config_path: Path, state_dir: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    _add(state_dir, "1.2.3.1", destination="WS1")
    _add(state_dir, "1.2.3.2", destination="WS2")
    assert _run(config_path, "list", "--destination", "WS2") == 0
    out = capsys.readouterr().out
    assert "1.2.3.2" in out
    assert "1.2.3.1" not in out


def test_list_newest_first_and_limit(config_path: Path, state_dir: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    for number in range(1, 4):
        _add(state_dir, f"1.2.3.{number}")
    assert _run(config_path, "list", "--limit", "2") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["ID", "STATE", "DESTINATION"]
    assert "1.2.3.3" in lines[1]
    assert "1.2.3.2" in lines[2]
    assert lines[3] == "Showing the newest 2 of 3 entries. Raise --limit to see more."


def test_list_shortens_last_error(config_path: Path, state_dir: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    _add(state_dir, "1.2.3.1", error="x" * 200)
    assert _run(config_path, "list") == 0
    row = capsys.readouterr().out.splitlines()[1]
    assert row.endswith("x" * 37 + "...")


def test_list_subprocess(config_path: Path, state_dir: Path) -> None:
    _add(state_dir, "1.2.3.1", destination="WS1")
    result = subprocess.run(
        [sys.executable, "-m", "yicrouter", "queue", "list", "--config", str(config_path)],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30, check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "1.2.3.1" in result.stdout
    assert "WS1" in result.stdout


def test_config_before_subcommand(config_path: Path, state_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _add(state_dir, "1.2.3.9")
    exit_status = main(["queue", "--config", str(config_path), "list"])
    assert exit_status == 0
    assert "1.2.3.9" in capsys.readouterr().out


# --- config and database errors --------------------------------------------------------


def test_invalid_config_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[router]\nport = "eleven"\n', encoding="utf-8")
    assert main(["queue", "list", "--config", str(path)]) == 1
    assert "invalid configuration" in capsys.readouterr().err


def test_missing_database_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state_dir = tmp_path / "empty"
    path = tmp_path / "yicrouter.toml"
    path.write_text(f'[router]\nstate_dir = "{state_dir}"\n', encoding="utf-8")
    assert main(["queue", "list", "--config", str(path)]) == 1
    assert "no router database" in capsys.readouterr().err
    assert not state_dir.exists()


# --- show -----------------------------------------------------------------------------


def test_show_prints_fields(config_path: Path, state_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    entry_id = _add(state_dir, "1.2.3.1", state=DEAD, error="timed out")
    assert _run(config_path, "show", str(entry_id)) == 0
    fields = dict(line.split(maxsplit=1) for line in capsys.readouterr().out.splitlines())
    assert fields["id"] == str(entry_id)
    assert fields["state"] == "dead"
    assert fields["last_error"] == "timed out"
    assert fields["lease_expires_at"] == "-"
    assert fields["spool_file"] == "exists"


def test_show_unknown_id(config_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(config_path, "show", "999") == 1
    assert "queue entry 999 not found" in capsys.readouterr().err


# --- retry ----------------------------------------------------------------------------


def test_retry_dead_entries(config_path: Path, state_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dead_id = _add(state_dir, "1.2.3.1", state=DEAD)
    queued_id = _add(state_dir, "1.2.3.2", state=QUEUED)
    assert _run(config_path, "retry", "--dead") == 0
    assert "Scheduled 1 entry for delivery now." in capsys.readouterr().out
    retried = _entry(dead_id)
    assert retried is not None
    assert retried.state == QUEUED
    assert retried.live == 1
    assert retried.attempts == 0
    assert retried.owner == ""
    assert retried.next_attempt_at <= retry_queue.utc_now()
    untouched = _entry(queued_id)
    assert untouched is not None
    assert untouched.attempts == 1


def test_retry_dead_duplicate_deleted(config_path: Path, state_dir: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    dead_id = _add(state_dir, "1.2.3.1", state=DEAD)
    dead_path = Path(str(QueueEntry.get_by_id(dead_id).path))
    # A later move of the same instance to the same destination, still waiting.
    live_id, _ = retry_queue.enqueue(
        sop_instance_uid="1.2.3.1", sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        transfer_syntax="1.2.840.10008.1.2.1", path=str(state_dir / "later.dcm"), size=4,
        destination="WS1", originator=("WS1", 8), move_id="later", owner="move:2", lease_seconds=60.0,
    )
    assert _run(config_path, "retry", str(dead_id)) == 0
    out = capsys.readouterr().out
    assert f"Deleted dead entry {dead_id}" in out
    assert "Scheduled 0 entries for delivery now." in out
    assert _entry(dead_id) is None
    assert _entry(live_id) is not None
    assert not dead_path.exists()


def test_retry_leaves_in_flight(config_path: Path, state_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    entry_id = _add(state_dir, "1.2.3.1", state=IN_FLIGHT)
    assert _run(config_path, "retry", "--destination", "WS1") == 0
    assert f"Left 1 entry in flight alone: {entry_id}." in capsys.readouterr().out
    entry = _entry(entry_id)
    assert entry is not None
    assert entry.owner == "move:1"


def test_retry_unknown_id(config_path: Path, state_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    entry_id = _add(state_dir, "1.2.3.1", state=DEAD)
    assert _run(config_path, "retry", str(entry_id), "999") == 1
    assert "not found: 999" in capsys.readouterr().err
    entry = _entry(entry_id)
    assert entry is not None
    assert entry.state == DEAD


def test_retry_without_selection(config_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(config_path, "retry") == 2
    assert "select entries" in capsys.readouterr().err


# --- purge ----------------------------------------------------------------------------


def test_purge_yes_deletes_rows_and_files(config_path: Path, state_dir: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    dead_id = _add(state_dir, "1.2.3.1", state=DEAD)
    kept_id = _add(state_dir, "1.2.3.2", state=QUEUED)
    dead_path = Path(str(QueueEntry.get_by_id(dead_id).path))
    assert _run(config_path, "purge", "--dead", "--yes") == 0
    assert "Deleted 1 entry and its file." in capsys.readouterr().out
    assert _entry(dead_id) is None
    assert not dead_path.exists()
    assert not dead_path.parent.exists()
    assert _entry(kept_id) is not None


def test_purge_without_terminal_refuses(config_path: Path, state_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    entry_id = _add(state_dir, "1.2.3.1", state=DEAD)
    monkeypatch.setattr(sys, "stdin", io.StringIO("y\n"))
    assert _run(config_path, "purge", "--all") == 1
    assert "Add --yes" in capsys.readouterr().err
    assert _entry(entry_id) is not None


def test_purge_keeps_in_flight(config_path: Path, state_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    entry_id = _add(state_dir, "1.2.3.1", state=IN_FLIGHT)
    assert _run(config_path, "purge", "--all", "--yes") == 0
    assert "Add --force" in capsys.readouterr().out
    assert _entry(entry_id) is not None


def test_purge_force_deletes_in_flight(config_path: Path, state_dir: Path) -> None:
    entry_id = _add(state_dir, "1.2.3.1", state=IN_FLIGHT)
    assert _run(config_path, "purge", str(entry_id), "--yes", "--force") == 0
    assert _entry(entry_id) is None


# --- stats ----------------------------------------------------------------------------


def test_stats_counts(config_path: Path, state_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    oldest_id = _add(state_dir, "1.2.3.1", destination="WS1", state=QUEUED)
    _add(state_dir, "1.2.3.2", destination="WS1", state=DEAD)
    _add(state_dir, "1.2.3.3", destination="WS2", state=QUEUED)
    _add(state_dir, "1.2.3.4", destination="WS2", state=IN_FLIGHT)
    assert _run(config_path, "stats") == 0
    lines = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert ["in_flight", "1"] in lines
    assert ["queued", "2"] in lines
    assert ["dead", "1"] in lines
    assert ["WS1", "0", "1", "1", "2"] in lines
    assert ["WS2", "1", "1", "0", "2"] in lines
    assert any(line[:4] == ["Oldest", "queued", "entry:", f"{oldest_id},"] for line in lines)


def test_stats_empty(config_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(config_path, "stats") == 0
    assert "Oldest queued entry: none" in capsys.readouterr().out


# --- changes racing the router --------------------------------------------------------


def test_reschedule_skips_claimed_entry(config_path: Path, state_dir: Path) -> None:
    entry_id = _add(state_dir, "1.2.3.1", state=DEAD)
    retry_queue.reschedule(entry_id)
    claimed = retry_queue.claim("delivery", "WS1", limit=10, lease_seconds=60.0)
    assert [int(entry.id) for entry in claimed] == [entry_id]
    assert retry_queue.reschedule(entry_id) == IN_FLIGHT


def test_delete_skips_replaced_file(config_path: Path, state_dir: Path) -> None:
    entry_id = _add(state_dir, "1.2.3.1", state=QUEUED)
    assert not retry_queue.delete_entry(entry_id, str(state_dir / "older.dcm"))
    assert _entry(entry_id) is not None
