"""Tests for the configuration loader: the main file, drop-ins and every rejection."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest

from yicrouter.config import (
    Config,
    ConfigError,
    PeerSettings,
    QueueSettings,
    RouterSettings,
    WorkstationSettings,
    check_config,
    load_config,
)

REPO_ETC = Path(__file__).resolve().parents[1] / "etc"

PEER = {"name": "north", "ae_title": "NORTHPACS", "host": "pacs.north.example", "port": 104}
WORKSTATION = {"ae_title": "CTWS1", "host": "10.0.0.21", "port": 104}

PEER_TIME_KEYS = [
    "connect_timeout",
    "acse_timeout",
    "dimse_timeout",
    "find_deadline",
    "move_deadline",
]
WORKSTATION_TIME_KEYS = ["connect_timeout", "acse_timeout", "dimse_timeout"]


# --- Helpers -----------------------------------------------------------------


def toml_value(value: object) -> str:
    """Render a Python value as a TOML value."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if isinstance(value, (int, float)):
        return repr(value)
    # A JSON string with \uXXXX escapes is also a valid TOML basic string.
    return json.dumps(value, ensure_ascii=True)


def render_table(header: str, values: dict[str, object]) -> str:
    lines = [header]
    lines += [f"{key} = {toml_value(value)}" for key, value in values.items()]
    return "\n".join(lines) + "\n\n"


def peer(**changes: object) -> str:
    return render_table("[[peer]]", {**PEER, **changes})


def workstation(**changes: object) -> str:
    return render_table("[[workstation]]", {**WORKSTATION, **changes})


def router(**values: object) -> str:
    return render_table("[router]", values)


def queue(**values: object) -> str:
    return render_table("[queue]", values)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def main_path(tmp_path: Path) -> Path:
    return tmp_path / "yicrouter.toml"


def drop_in_path(tmp_path: Path, name: str) -> Path:
    return tmp_path / "yicrouter.d" / name


def load_problems(main_file: Path) -> list[str]:
    with pytest.raises(ConfigError) as error:
        load_config(main_file)
    return error.value.problems


def find_problem(problems: list[str], file: Path, key: str) -> str:
    """Return the one problem line about `key` in `file`."""
    prefix = f"{file}: {key}"
    matches = [p for p in problems if p.startswith(prefix + " = ") or p.startswith(prefix + ": ")]
    assert len(matches) == 1, f"expected one problem for {prefix}, got: {problems}"
    return matches[0]


def assert_one_problem(main_file: Path, file: Path, key: str, value: object) -> str:
    """Load, expect exactly one problem about `key` in `file`, and return its line."""
    problems = load_problems(main_file)
    line = find_problem(problems, file, key)
    assert repr(value) in line
    assert len(problems) == 1, problems
    return line


# --- Shipped examples ----------------------------------------------------------


def test_shipped_example_loads() -> None:
    config = load_config(REPO_ETC / "yicrouter.toml")

    assert config.router == RouterSettings()
    assert len(config.peers) >= 1
    assert len(config.workstations) >= 1
    assert config.files == (
        REPO_ETC / "yicrouter.toml",
        REPO_ETC / "yicrouter.d" / "10-example-peers.toml",
    )


def test_shipped_main_documents_defaults(tmp_path: Path) -> None:
    # Uncommenting every setting of the shipped main file must give the defaults.
    text = (REPO_ETC / "yicrouter.toml").read_text(encoding="utf-8")
    uncommented = []
    for line in text.splitlines():
        if line in ("# [router]", "# [queue]") or (line.startswith("# ") and " = " in line):
            line = line[2:]
        uncommented.append(line)
    uncommented_text = "\n".join(uncommented) + "\n"
    main_file = write(main_path(tmp_path), uncommented_text)

    config = load_config(main_file)

    assert config.router == RouterSettings()
    assert config.queue == QueueSettings()
    router_part, queue_part = uncommented_text.split("\n[queue]\n")
    for key in RouterSettings.__dataclass_fields__:
        assert f"\n{key} = " in router_part, key
    for key in QueueSettings.__dataclass_fields__:
        assert f"\n{key} = " in queue_part, key


def test_shipped_peer_example_documents_defaults() -> None:
    config = load_config(REPO_ETC / "yicrouter.toml")
    first = config.peers[0]
    first_workstation = config.workstations[0]

    assert first == PeerSettings(first.name, first.ae_title, first.host, first.port)
    assert first_workstation == WorkstationSettings(
        first_workstation.ae_title, first_workstation.host, first_workstation.port
    )


def test_check_config_ok_line() -> None:
    ok, lines = check_config(REPO_ETC / "yicrouter.toml")

    assert ok
    assert lines == ["OK: 2 files, 2 peers, 2 workstations"]


def test_check_config_problem_lines(tmp_path: Path) -> None:
    main_file = write(main_path(tmp_path), router(port=0, log_level="loud"))

    ok, lines = check_config(main_file)

    assert not ok
    assert len(lines) == 2
    assert all(line.startswith(f"{main_file}: router.") for line in lines)


# --- Reading files -------------------------------------------------------------


def test_minimal_config_uses_defaults(tmp_path: Path) -> None:
    main_file = write(main_path(tmp_path), "")

    config = load_config(main_file)

    assert config == Config(router=RouterSettings(), files=(main_file,))


def test_drop_ins_read_in_name_order(tmp_path: Path) -> None:
    main_file = write(main_path(tmp_path), peer(name="main", ae_title="MAIN"))
    second = write(drop_in_path(tmp_path, "20-b.toml"), peer(name="b", ae_title="B"))
    first = write(drop_in_path(tmp_path, "10-a.toml"), peer(name="a", ae_title="A"))
    # Names compare as strings, so "9-..." sorts after "20-...".
    third = write(drop_in_path(tmp_path, "9-c.toml"), peer(name="c", ae_title="C"))

    config = load_config(main_file)

    assert config.files == (main_file, first, second, third)
    assert [p.name for p in config.peers] == ["main", "a", "b", "c"]


def test_drop_in_order_within_file_kept(tmp_path: Path) -> None:
    main_file = write(main_path(tmp_path), "")
    write(
        drop_in_path(tmp_path, "10-a.toml"),
        peer(name="x", ae_title="X") + workstation(ae_title="W1") + peer(name="y", ae_title="Y"),
    )

    config = load_config(main_file)

    assert [p.name for p in config.peers] == ["x", "y"]
    assert [w.ae_title for w in config.workstations] == ["W1"]


def test_drop_in_skips_hidden_and_other_files(tmp_path: Path) -> None:
    main_file = write(main_path(tmp_path), "")
    write(drop_in_path(tmp_path, ".#10-a.toml"), "not toml at all [")
    write(drop_in_path(tmp_path, "10-a.toml.bak"), "not toml at all [")
    write(drop_in_path(tmp_path, "README"), "Drop-in files go here.")

    config = load_config(main_file)

    assert config.files == (main_file,)


def test_source_file_recorded(tmp_path: Path) -> None:
    main_file = write(main_path(tmp_path), peer())
    drop_in = write(drop_in_path(tmp_path, "10-a.toml"), workstation())

    config = load_config(main_file)

    assert config.peers[0].source_file == main_file
    assert config.workstations[0].source_file == drop_in


def test_router_table_in_drop_in(tmp_path: Path) -> None:
    main_file = write(main_path(tmp_path), "")
    write(drop_in_path(tmp_path, "00-router.toml"), router(port=4242))

    config = load_config(main_file)

    assert config.router.port == 4242


def test_relative_main_path_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(main_path(tmp_path), router(state_dir="state"))
    monkeypatch.chdir(tmp_path)

    config = load_config(Path("yicrouter.toml"))

    assert config.files == (tmp_path / "yicrouter.toml",)
    assert config.router.state_dir == tmp_path / "state"


def test_missing_main_file(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.toml"

    problems = load_problems(missing)

    assert len(problems) == 1
    assert str(missing) in problems[0]
    assert "not found" in problems[0]


def test_unreadable_drop_in_symlink(tmp_path: Path) -> None:
    main_file = write(main_path(tmp_path), "")
    broken = drop_in_path(tmp_path, "20-gone.toml")
    broken.parent.mkdir()
    broken.symlink_to(tmp_path / "missing-target.toml")

    problems = load_problems(main_file)

    assert len(problems) == 1
    assert problems[0].startswith(f"{broken}: cannot read the file")


def test_unreadable_drop_in_directory(tmp_path: Path) -> None:
    main_file = write(main_path(tmp_path), "")
    folder = drop_in_path(tmp_path, "20-folder.toml")
    folder.mkdir(parents=True)

    problems = load_problems(main_file)

    assert len(problems) == 1
    assert problems[0].startswith(f"{folder}: cannot read the file")


@pytest.mark.skipif(os.geteuid() == 0, reason="root can read files without read permission")
def test_unreadable_drop_in_permissions(tmp_path: Path) -> None:
    main_file = write(main_path(tmp_path), "")
    locked = write(drop_in_path(tmp_path, "20-locked.toml"), peer())
    locked.chmod(0)

    problems = load_problems(main_file)

    assert len(problems) == 1
    assert problems[0].startswith(f"{locked}: cannot read the file")


def test_drop_in_folder_is_a_file(tmp_path: Path) -> None:
    main_file = write(main_path(tmp_path), "")
    not_a_folder = write(tmp_path / "yicrouter.d", "")

    problems = load_problems(main_file)

    assert len(problems) == 1
    assert problems[0].startswith(f"{not_a_folder}: not a folder")


def test_invalid_utf8_rejected(tmp_path: Path) -> None:
    main_file = main_path(tmp_path)
    main_file.write_bytes(b'[router]\nae_title = "\xff"\n')

    problems = load_problems(main_file)

    assert len(problems) == 1
    assert problems[0].startswith(f"{main_file}: line 2: ")
    assert "UTF-8" in problems[0]


def test_byte_order_mark_accepted(tmp_path: Path) -> None:
    main_file = main_path(tmp_path)
    main_file.write_bytes(b"\xef\xbb\xbf" + router(port=4242).encode())

    config = load_config(main_file)

    assert config.router.port == 4242


# --- Syntax and structure --------------------------------------------------------


def test_syntax_error_line_and_column(tmp_path: Path) -> None:
    main_file = write(main_path(tmp_path), "[router]\nport = 11112\nbind 0.0.0.0\n")

    problems = load_problems(main_file)

    assert len(problems) == 1
    assert problems[0].startswith(f"{main_file}: line 3, column 6: invalid TOML: ")


def test_syntax_error_at_end_of_file(tmp_path: Path) -> None:
    main_file = write(main_path(tmp_path), '[router]\nae_title = "UNTERMINATED')

    problems = load_problems(main_file)

    assert len(problems) == 1
    assert problems[0].startswith(f"{main_file}: end of file (line 2): invalid TOML: ")


def test_syntax_error_in_drop_in_keeps_checking(tmp_path: Path) -> None:
    main_file = write(main_path(tmp_path), router(port=0))
    broken = write(drop_in_path(tmp_path, "10-a.toml"), "[[peer]\n")

    problems = load_problems(main_file)

    assert len(problems) == 2
    assert problems[0].startswith(f"{main_file}: router.port = 0: ")
    assert problems[1].startswith(f"{broken}: line 1, column ")


def test_unknown_top_level_table(tmp_path: Path) -> None:
    main_file = write(main_path(tmp_path), "[routing]\nport = 1\n")

    line = assert_one_problem(main_file, main_file, "routing", {"port": 1})

    assert "unknown table" in line
    assert "[router]" in line


def test_unknown_top_level_table_no_suggestion(tmp_path: Path) -> None:
    main_file = write(main_path(tmp_path), "[database]\nurl = 'x'\n")

    line = assert_one_problem(main_file, main_file, "database", {"url": "x"})

    assert "unknown table" in line
    assert "[[workstation]]" in line


def test_router_key_outside_router_table(tmp_path: Path) -> None:
    main_file = write(main_path(tmp_path), "port = 104\n")

    line = assert_one_problem(main_file, main_file, "port", 104)

    assert "[router]" in line


def test_second_router_table_names_both_files(tmp_path: Path) -> None:
    main_file = write(main_path(tmp_path), router(port=4242))
    drop_in = write(drop_in_path(tmp_path, "10-a.toml"), router(port=4343))

    problems = load_problems(main_file)

    assert len(problems) == 1
    assert problems[0].startswith(f"{drop_in}: router: ")
    assert str(main_file) in problems[0]


def test_peer_single_brackets_rejected(tmp_path: Path) -> None:
    main_file = write(main_path(tmp_path), render_table("[peer]", PEER))

    problems = load_problems(main_file)

    assert len(problems) == 1
    assert problems[0].startswith(f"{main_file}: peer: ")
    assert "[[peer]]" in problems[0]


def test_router_double_brackets_rejected(tmp_path: Path) -> None:
    main_file = write(main_path(tmp_path), "[[router]]\nport = 4242\n")

    problems = load_problems(main_file)

    assert len(problems) == 1
    assert problems[0].startswith(f"{main_file}: router = ")
    assert "expected a table" in problems[0]


def test_peer_array_of_non_tables(tmp_path: Path) -> None:
    main_file = write(main_path(tmp_path), 'peer = ["north"]\n')

    assert_one_problem(main_file, main_file, "peer[1]", "north")


# --- Keys and types ----------------------------------------------------------------


def test_unknown_key_suggests_nearest(tmp_path: Path) -> None:
    main_file = write(main_path(tmp_path), peer(aetitle="X"))

    line = assert_one_problem(main_file, main_file, "peer['north'].aetitle", "X")

    assert "unknown key" in line
    assert "'ae_title'" in line


def test_unknown_key_lists_known_keys(tmp_path: Path) -> None:
    main_file = write(main_path(tmp_path), router(colour="blue"))

    line = assert_one_problem(main_file, main_file, "router.colour", "blue")

    assert "unknown key" in line
    assert "log_format" in line


@pytest.mark.parametrize(
    ("table", "key", "value"),
    [
        ("router", "port", True),
        ("router", "port", "11112"),
        ("router", "port", 11112.0),
        ("router", "max_pdu", 1.5),
        ("router", "ae_title", 5),
        ("router", "state_dir", False),
        ("peer", "port", "104"),
        ("peer", "name", 1),
        ("peer", "connect_timeout", "5"),
        ("peer", "move_deadline", True),
        ("workstation", "port", False),
        ("workstation", "dimse_timeout", [30]),
    ],
)
def test_wrong_type_rejected(tmp_path: Path, table: str, key: str, value: object) -> None:
    if table == "router":
        text, label = router(**{key: value}), "router"
    elif table == "peer":
        text, label = peer(**{key: value}), "peer['north']" if key != "name" else "peer[1]"
    else:
        text, label = workstation(**{key: value}), "workstation[1]"
    main_file = write(main_path(tmp_path), text)

    line = assert_one_problem(main_file, main_file, f"{label}.{key}", value)

    assert "expected" in line


def test_integer_accepted_for_seconds(tmp_path: Path) -> None:
    main_file = write(main_path(tmp_path), peer(connect_timeout=3) + workstation(acse_timeout=7))

    config = load_config(main_file)

    assert config.peers[0].connect_timeout == 3.0
    assert isinstance(config.peers[0].connect_timeout, float)
    assert config.workstations[0].acse_timeout == 7.0


@pytest.mark.parametrize("key", ["name", "ae_title", "host", "port"])
def test_peer_missing_required_key(tmp_path: Path, key: str) -> None:
    values = {k: v for k, v in PEER.items() if k != key}
    main_file = write(main_path(tmp_path), render_table("[[peer]]", values))
    label = "peer[1]" if key == "name" else "peer['north']"

    problems = load_problems(main_file)

    line = find_problem(problems, main_file, f"{label}.{key}")
    assert "missing required key" in line
    assert len(problems) == 1


@pytest.mark.parametrize("key", ["ae_title", "host", "port"])
def test_workstation_missing_required_key(tmp_path: Path, key: str) -> None:
    values = {k: v for k, v in WORKSTATION.items() if k != key}
    main_file = write(main_path(tmp_path), render_table("[[workstation]]", values))

    problems = load_problems(main_file)

    line = find_problem(problems, main_file, f"workstation[1].{key}")
    assert "missing required key" in line
    assert len(problems) == 1


# --- AE titles ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ae_title", "reason"),
    [
        ("", "empty"),
        ("    ", "empty"),
        ("NORTHTRUSTPACS_ARCHIVE", "22 characters"),
        ("A" * 17, "17 characters"),
        ("NORTH\\PACS", "backslash"),
        ("NORTH\tPACS", "control"),
        ("NORTH\x7fPACS", "control"),
        ("NORTHPACS\n", "control"),
        ("MÜLLERPACS", "non-ASCII"),
    ],
)
def test_invalid_peer_ae_title(tmp_path: Path, ae_title: str, reason: str) -> None:
    main_file = write(main_path(tmp_path), peer(ae_title=ae_title))

    line = assert_one_problem(main_file, main_file, "peer['north'].ae_title", ae_title)

    assert reason in line


@pytest.mark.parametrize("table", ["router", "workstation"])
def test_invalid_ae_title_other_tables(tmp_path: Path, table: str) -> None:
    too_long = "READING_ROOM_WORKSTATION"
    if table == "router":
        text, key = router(ae_title=too_long), "router.ae_title"
    else:
        text, key = workstation(ae_title=too_long), "workstation[1].ae_title"
    main_file = write(main_path(tmp_path), text)

    line = assert_one_problem(main_file, main_file, key, too_long)

    assert "the maximum is 16" in line


def test_ae_title_whitespace_stripped(tmp_path: Path) -> None:
    text = (
        router(ae_title=" HUBROUTER ")
        + peer(ae_title="  NORTHPACS")
        + workstation(ae_title="CTWS1   ")
    )
    main_file = write(main_path(tmp_path), text)

    config = load_config(main_file)

    assert config.router.ae_title == "HUBROUTER"
    assert config.peers[0].ae_title == "NORTHPACS"
    assert config.workstations[0].ae_title == "CTWS1"


def test_ae_title_length_after_strip(tmp_path: Path) -> None:
    # 16 characters plus padding is valid, because the padding is not significant.
    main_file = write(main_path(tmp_path), peer(ae_title="  SIXTEEN_CHARS_X  "))

    config = load_config(main_file)

    assert config.peers[0].ae_title == "SIXTEEN_CHARS_X"


def test_ae_title_inner_space_kept(tmp_path: Path) -> None:
    main_file = write(main_path(tmp_path), workstation(ae_title="WS 1"))

    config = load_config(main_file)

    assert config.workstations[0].ae_title == "WS 1"


def test_duplicate_ae_title_across_files(tmp_path: Path) -> None:
    main_file = write(main_path(tmp_path), peer(ae_title="SHARED"))
    drop_in = write(drop_in_path(tmp_path, "10-a.toml"), workstation(ae_title=" SHARED "))

    line = assert_one_problem(main_file, drop_in, "workstation[1].ae_title", "SHARED")

    assert str(main_file) in line
    assert "peer['north']" in line


def test_duplicate_ae_title_between_peers(tmp_path: Path) -> None:
    main_file = write(main_path(tmp_path), peer() + peer(name="south"))

    line = assert_one_problem(main_file, main_file, "peer['south'].ae_title", "NORTHPACS")

    assert "already used by peer['north']" in line


def test_duplicate_ae_title_between_workstations(tmp_path: Path) -> None:
    main_file = write(main_path(tmp_path), "")
    first = write(drop_in_path(tmp_path, "10-a.toml"), workstation())
    second = write(drop_in_path(tmp_path, "20-b.toml"), workstation(host="10.0.0.22"))

    line = assert_one_problem(main_file, second, "workstation[1].ae_title", "CTWS1")

    assert str(first) in line


def test_duplicate_peer_name_across_files(tmp_path: Path) -> None:
    main_file = write(main_path(tmp_path), peer())
    drop_in = write(drop_in_path(tmp_path, "10-a.toml"), peer(ae_title="OTHERPACS"))

    line = assert_one_problem(main_file, drop_in, "peer[1].name", "north")

    assert str(main_file) in line


def test_peer_with_default_router_ae_title(tmp_path: Path) -> None:
    main_file = write(main_path(tmp_path), peer(ae_title="YICROUTER"))

    line = assert_one_problem(main_file, main_file, "peer['north'].ae_title", "YICROUTER")

    assert "router's own AE title" in line


def test_workstation_with_configured_router_ae_title(tmp_path: Path) -> None:
    router_file = write(drop_in_path(tmp_path, "00-router.toml"), router(ae_title="HUB"))
    main_file = write(main_path(tmp_path), workstation(ae_title="HUB"))

    line = assert_one_problem(main_file, main_file, "workstation[1].ae_title", "HUB")

    assert str(router_file) in line


def test_router_table_without_ae_title(tmp_path: Path) -> None:
    main_file = write(main_path(tmp_path), router(port=4242) + peer(ae_title="YICROUTER"))

    line = assert_one_problem(main_file, main_file, "peer['north'].ae_title", "YICROUTER")

    assert "the default" in line


def test_default_ae_title_free_when_router_renamed(tmp_path: Path) -> None:
    main_file = write(main_path(tmp_path), router(ae_title="HUB") + peer(ae_title="YICROUTER"))

    config = load_config(main_file)

    assert config.peers[0].ae_title == "YICROUTER"


# --- Other values -------------------------------------------------------------------


@pytest.mark.parametrize("port", [0, -1, 65536, 104000])
@pytest.mark.parametrize("table", ["router", "peer", "workstation"])
def test_port_out_of_range(tmp_path: Path, table: str, port: int) -> None:
    text = {"router": router, "peer": peer, "workstation": workstation}[table](port=port)
    label = {"router": "router", "peer": "peer['north']", "workstation": "workstation[1]"}[table]
    main_file = write(main_path(tmp_path), text)

    line = assert_one_problem(main_file, main_file, f"{label}.port", port)

    assert "1..65535" in line


@pytest.mark.parametrize("port", [1, 65535])
def test_port_bounds_accepted(tmp_path: Path, port: int) -> None:
    main_file = write(main_path(tmp_path), router(port=port) + peer(port=port))

    config = load_config(main_file)

    assert config.router.port == port
    assert config.peers[0].port == port


@pytest.mark.parametrize("value", [0, -1, -0.5, math.nan, math.inf])
@pytest.mark.parametrize("key", PEER_TIME_KEYS)
def test_peer_seconds_not_positive(tmp_path: Path, key: str, value: float) -> None:
    main_file = write(main_path(tmp_path), peer(**{key: value}))

    line = assert_one_problem(main_file, main_file, f"peer['north'].{key}", value)

    assert "seconds" in line


@pytest.mark.parametrize("key", WORKSTATION_TIME_KEYS)
def test_workstation_seconds_not_positive(tmp_path: Path, key: str) -> None:
    main_file = write(main_path(tmp_path), workstation(**{key: 0}))

    assert_one_problem(main_file, main_file, f"workstation[1].{key}", 0)


@pytest.mark.parametrize(
    ("key", "value"),
    [("log_level", "INFO"), ("log_level", "trace"), ("log_format", "xml")],
)
def test_log_setting_not_a_choice(tmp_path: Path, key: str, value: str) -> None:
    main_file = write(main_path(tmp_path), router(**{key: value}))

    line = assert_one_problem(main_file, main_file, f"router.{key}", value)

    assert "not one of" in line


@pytest.mark.parametrize("max_pdu", [-1, 1, 4095, 1048577])
def test_max_pdu_out_of_range(tmp_path: Path, max_pdu: int) -> None:
    main_file = write(main_path(tmp_path), router(max_pdu=max_pdu))

    line = assert_one_problem(main_file, main_file, "router.max_pdu", max_pdu)

    assert "0 (no limit)" in line
    assert "from 4096 to 1048576" in line


def test_spool_min_free_negative(tmp_path: Path) -> None:
    main_file = write(main_path(tmp_path), router(spool_min_free_mb=-1))

    line = assert_one_problem(main_file, main_file, "router.spool_min_free_mb", -1)

    assert "0 or more MiB" in line


def test_spool_min_free_default() -> None:
    assert RouterSettings().spool_min_free_mb == 1024


@pytest.mark.parametrize("max_pdu", [0, 4096, 1048576])
def test_max_pdu_accepted(tmp_path: Path, max_pdu: int) -> None:
    main_file = write(main_path(tmp_path), router(max_pdu=max_pdu))

    config = load_config(main_file)

    assert config.router.max_pdu == max_pdu


@pytest.mark.parametrize("host", ["", "   ", "pacs north", " pacs.north.example"])
def test_invalid_host(tmp_path: Path, host: str) -> None:
    main_file = write(main_path(tmp_path), peer(host=host) + workstation(host=host))

    problems = load_problems(main_file)

    assert repr(host) in find_problem(problems, main_file, "peer['north'].host")
    assert repr(host) in find_problem(problems, main_file, "workstation[1].host")
    assert len(problems) == 2


def test_empty_bind_rejected(tmp_path: Path) -> None:
    main_file = write(main_path(tmp_path), router(bind=""))

    assert_one_problem(main_file, main_file, "router.bind", "")


def test_empty_peer_name_rejected(tmp_path: Path) -> None:
    main_file = write(main_path(tmp_path), peer(name=" "))

    assert_one_problem(main_file, main_file, "peer[1].name", " ")


def test_relative_state_dir_resolved(tmp_path: Path) -> None:
    main_file = write(main_path(tmp_path), router(state_dir="var/state"))

    config = load_config(main_file)

    assert config.router.state_dir == tmp_path / "var" / "state"


def test_relative_state_dir_from_drop_in(tmp_path: Path) -> None:
    # Relative to the main file's folder, not to the drop-in folder.
    main_file = write(main_path(tmp_path), "")
    write(drop_in_path(tmp_path, "00-router.toml"), router(state_dir="state"))

    config = load_config(main_file)

    assert config.router.state_dir == tmp_path / "state"


def test_absolute_state_dir_kept(tmp_path: Path) -> None:
    main_file = write(main_path(tmp_path), router(state_dir="/srv/yicrouter"))

    config = load_config(main_file)

    assert config.router.state_dir == Path("/srv/yicrouter")


@pytest.mark.parametrize("state_dir", ["", "~/yicrouter"])
def test_invalid_state_dir(tmp_path: Path, state_dir: str) -> None:
    main_file = write(main_path(tmp_path), router(state_dir=state_dir))

    assert_one_problem(main_file, main_file, "router.state_dir", state_dir)


# --- Several problems at once -----------------------------------------------------------


def test_all_problems_reported(tmp_path: Path) -> None:
    main_file = write(main_path(tmp_path), router(port=0, log_format="xml"))
    trusts = write(
        drop_in_path(tmp_path, "20-trusts.toml"),
        peer(ae_title="NORTHTRUSTPACS_ARCHIVE", port="104") + peer(name="south", host=""),
    )
    rooms = write(
        drop_in_path(tmp_path, "30-rooms.toml"),
        workstation(ae_title="NORTHPACS", acse_timeout=-1),
    )

    problems = load_problems(main_file)

    assert len(problems) == 7, problems
    assert repr(0) in find_problem(problems, main_file, "router.port")
    assert repr("xml") in find_problem(problems, main_file, "router.log_format")
    long_title = find_problem(problems, trusts, "peer['north'].ae_title")
    assert repr("NORTHTRUSTPACS_ARCHIVE") in long_title
    assert repr("104") in find_problem(problems, trusts, "peer['north'].port")
    assert repr("") in find_problem(problems, trusts, "peer['south'].host")
    assert repr(-1) in find_problem(problems, rooms, "workstation[1].acse_timeout")
    duplicate = find_problem(problems, rooms, "workstation[1].ae_title")
    assert str(trusts) in duplicate


def test_problem_line_format(tmp_path: Path) -> None:
    main_file = write(main_path(tmp_path), "")
    trusts = write(
        drop_in_path(tmp_path, "20-trusts.toml"), peer(ae_title="NORTHTRUSTPACS_ARCHIVE")
    )

    problems = load_problems(main_file)

    assert problems == [
        f"{trusts}: peer['north'].ae_title = 'NORTHTRUSTPACS_ARCHIVE': AE title is 22 characters,"
        " but the maximum is 16 (PS3.5 table 6.2-1). Shorten it."
    ]


def test_config_error_message_joins_problems(tmp_path: Path) -> None:
    main_file = write(main_path(tmp_path), router(port=0, bind=""))

    with pytest.raises(ConfigError) as error:
        load_config(main_file)

    assert str(error.value) == "\n".join(error.value.problems)
    assert len(error.value.problems) == 2


# --- Retry queue ---------------------------------------------------------------------


def test_queue_defaults() -> None:
    defaults = QueueSettings()

    assert defaults.retry_base == 30.0
    assert defaults.retry_max == 3600.0
    assert defaults.max_attempts == 20
    assert defaults.max_age == 259200.0
    assert defaults.poll_interval == 5.0
    assert defaults.batch_size == 100


def test_queue_default_without_table(tmp_path: Path) -> None:
    main_file = write(main_path(tmp_path), router(port=4242))

    config = load_config(main_file)

    assert config.queue == QueueSettings()


def test_queue_table_loaded(tmp_path: Path) -> None:
    text = queue(
        retry_base=10,
        retry_max=600.5,
        max_attempts=5,
        max_age=86400,
        poll_interval=0.5,
        batch_size=250,
    )
    main_file = write(main_path(tmp_path), text)

    config = load_config(main_file)

    assert config.queue == QueueSettings(
        retry_base=10.0,
        retry_max=600.5,
        max_attempts=5,
        max_age=86400.0,
        poll_interval=0.5,
        batch_size=250,
    )
    assert isinstance(config.queue.retry_base, float)
    assert isinstance(config.queue.max_age, float)


def test_queue_table_in_drop_in(tmp_path: Path) -> None:
    main_file = write(main_path(tmp_path), router(port=4242))
    write(drop_in_path(tmp_path, "00-queue.toml"), queue(batch_size=10))

    config = load_config(main_file)

    assert config.queue.batch_size == 10
    assert config.router.port == 4242


@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [
        ("retry_base", 0, "greater than 0"),
        ("retry_base", -1.5, "greater than 0"),
        ("retry_base", math.nan, "not finite"),
        ("retry_base", "30", "expected a number"),
        ("retry_max", 0, "greater than 0"),
        ("retry_max", math.inf, "not finite"),
        ("retry_max", True, "expected a number"),
        ("max_attempts", 0, "1 or more"),
        ("max_attempts", -3, "1 or more"),
        ("max_attempts", 2.5, "expected an integer"),
        ("max_age", 0, "greater than 0"),
        ("max_age", -259200, "greater than 0"),
        ("poll_interval", 0, "greater than 0"),
        ("poll_interval", -0.5, "greater than 0"),
        ("poll_interval", [5], "expected a number"),
        ("batch_size", 0, "1..10000"),
        ("batch_size", 10001, "1..10000"),
        ("batch_size", "100", "expected an integer"),
        ("batch_size", 100.0, "expected an integer"),
    ],
)
def test_queue_invalid_value(tmp_path: Path, key: str, value: object, reason: str) -> None:
    main_file = write(main_path(tmp_path), queue(**{key: value}))

    line = assert_one_problem(main_file, main_file, f"queue.{key}", value)

    assert reason in line


@pytest.mark.parametrize(("key", "value"), [("max_attempts", 1), ("batch_size", 1), ("batch_size", 10000)])
def test_queue_bounds_accepted(tmp_path: Path, key: str, value: int) -> None:
    main_file = write(main_path(tmp_path), queue(**{key: value}))

    config = load_config(main_file)

    assert getattr(config.queue, key) == value


def test_queue_invalid_value_in_drop_in(tmp_path: Path) -> None:
    main_file = write(main_path(tmp_path), "")
    drop_in = write(drop_in_path(tmp_path, "10-queue.toml"), queue(max_attempts=0))

    line = assert_one_problem(main_file, drop_in, "queue.max_attempts", 0)

    assert line.startswith(f"{drop_in}: queue.max_attempts = 0: ")


def test_retry_max_below_retry_base(tmp_path: Path) -> None:
    main_file = write(main_path(tmp_path), queue(retry_base=120, retry_max=60))

    line = assert_one_problem(main_file, main_file, "queue.retry_max", 60)

    assert "retry_max is less than retry_base = 120" in line
    assert "Set retry_max to 120.0 or more" in line


def test_retry_max_below_default_base(tmp_path: Path) -> None:
    main_file = write(main_path(tmp_path), queue(retry_max=10))

    line = assert_one_problem(main_file, main_file, "queue.retry_max", 10)

    assert "retry_base = 30.0 (the default)" in line


def test_retry_base_above_default_max(tmp_path: Path) -> None:
    main_file = write(main_path(tmp_path), queue(retry_base=7200))

    line = assert_one_problem(main_file, main_file, "queue.retry_base", 7200)

    assert "retry_max = 3600.0 (the default)" in line
    assert "Set retry_base to 3600.0 or less" in line


def test_retry_max_equal_to_base(tmp_path: Path) -> None:
    main_file = write(main_path(tmp_path), queue(retry_base=60, retry_max=60.0))

    config = load_config(main_file)

    assert config.queue.retry_max == config.queue.retry_base


def test_retry_comparison_skips_invalid(tmp_path: Path) -> None:
    # An invalid retry_base is reported alone, not also compared with retry_max.
    main_file = write(main_path(tmp_path), queue(retry_base=-1, retry_max=60))

    assert_one_problem(main_file, main_file, "queue.retry_base", -1)


def test_second_queue_table_names_both_files(tmp_path: Path) -> None:
    main_file = write(main_path(tmp_path), queue(batch_size=10))
    drop_in = write(drop_in_path(tmp_path, "10-a.toml"), queue(batch_size=20))

    problems = load_problems(main_file)

    assert len(problems) == 1
    assert problems[0].startswith(f"{drop_in}: queue: ")
    assert str(main_file) in problems[0]
    assert "second [queue] table" in problems[0]


def test_queue_double_brackets_rejected(tmp_path: Path) -> None:
    main_file = write(main_path(tmp_path), "[[queue]]\nbatch_size = 10\n")

    line = assert_one_problem(main_file, main_file, "queue", [{"batch_size": 10}])

    assert "expected a table, got an array" in line
    assert "[queue]" in line


def test_queue_unknown_key_suggests_nearest(tmp_path: Path) -> None:
    main_file = write(main_path(tmp_path), queue(retry_maximum=60))

    line = assert_one_problem(main_file, main_file, "queue.retry_maximum", 60)

    assert "'retry_max'" in line


def test_queue_key_outside_queue_table(tmp_path: Path) -> None:
    main_file = write(main_path(tmp_path), "batch_size = 10\n")

    line = assert_one_problem(main_file, main_file, "batch_size", 10)

    assert "queue.batch_size" in line
    assert "[queue]" in line


def test_queue_table_misspelt(tmp_path: Path) -> None:
    main_file = write(main_path(tmp_path), "[queues]\nbatch_size = 10\n")

    line = assert_one_problem(main_file, main_file, "queues", {"batch_size": 10})

    assert "Rename it to [queue]" in line


# --- Database URL ------------------------------------------------------------------


def test_database_default_empty() -> None:
    assert RouterSettings().database == ""


def test_database_url_default(tmp_path: Path) -> None:
    settings = RouterSettings(state_dir=tmp_path)

    assert settings.database_url == f"sqlite:///{tmp_path}/yicrouter.sqlite3"
    assert settings.database_url.startswith("sqlite:////")


def test_database_url_configured() -> None:
    url = "postgresql://yicrouter@db.example/yicrouter"

    assert RouterSettings(database=url).database_url == url


def test_database_password_not_in_repr() -> None:
    settings = RouterSettings(database="postgresql://bob:s3cret@db.example/yicrouter")

    assert "s3cret" not in repr(settings)


@pytest.mark.parametrize(
    "url",
    [
        "",
        "sqlite:////srv/yicrouter/yicrouter.sqlite3",
        "sqlite:////srv/yicrouter/yicrouter.sqlite3?timeout=20",
        "postgresql://yicrouter@db.example:5432/yicrouter",
        "postgresql://yicrouter:s3cret@127.0.0.1/yicrouter?sslmode=require",
        "postgresql:///yicrouter",
        "postgres://yicrouter@db.example/yicrouter",
    ],
)
def test_database_url_accepted(tmp_path: Path, url: str) -> None:
    main_file = write(main_path(tmp_path), router(database=url))

    config = load_config(main_file)

    assert config.router.database == url


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("mysql://yicrouter@db.example/yicrouter", "'mysql://' is not supported"),
        ("sqlite+pool:////srv/yicrouter.sqlite3", "'sqlite+pool://' is not supported"),
        ("postgresqlext://db.example/yicrouter", "'postgresqlext://' is not supported"),
        ("/srv/yicrouter/yicrouter.sqlite3", "has no scheme"),
        ("yicrouter.sqlite3", "has no scheme"),
        ("sqlite:///yicrouter.sqlite3", "not absolute"),
        ("sqlite:///:memory:", "not absolute"),
        ("sqlite:///~/yicrouter.sqlite3", "not absolute"),
        ("sqlite://db.example/yicrouter.sqlite3", "has no host"),
        ("sqlite:////srv/yicrouter/", "names a folder"),
        ("postgresql://db.example", "no database name"),
        ("postgresql://db.example/", "no database name"),
        ("postgresql://db.example:99999/yicrouter", "Port out of range"),
        ("postgresql://db.example:pg/yicrouter", "could not be cast to integer"),
        ("postgresql://db.example:0/yicrouter", "port is 0"),
        ("postgresql://db.example/yicrouter ", "whitespace"),
        (" ", "whitespace"),
    ],
)
def test_database_url_rejected(tmp_path: Path, url: str, reason: str) -> None:
    main_file = write(main_path(tmp_path), router(database=url))

    line = assert_one_problem(main_file, main_file, "router.database", url)

    assert reason in line


def test_database_scheme_problem_lists_accepted(tmp_path: Path) -> None:
    main_file = write(main_path(tmp_path), router(database="mysql://db.example/yicrouter"))

    line = assert_one_problem(main_file, main_file, "router.database", "mysql://db.example/yicrouter")

    assert "sqlite://, postgresql://, postgres://" in line


def test_database_wrong_type(tmp_path: Path) -> None:
    main_file = write(main_path(tmp_path), router(database=5432))

    line = assert_one_problem(main_file, main_file, "router.database", 5432)

    assert "expected a string" in line


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://bob:s3cret@db.example:99999/yicrouter",
        "postgresql://bob:s3c@ret@db.example:99999/yicrouter",
        "postgresql://db.example:99999/yicrouter?user=bob&password=s3cret",
    ],
)
def test_database_password_hidden(tmp_path: Path, url: str) -> None:
    main_file = write(main_path(tmp_path), router(database=url))

    problems = load_problems(main_file)

    line = find_problem(problems, main_file, "router.database")
    assert "s3c" not in line
    assert "***" in line
    assert len(problems) == 1


def test_top_level_database_password_hidden(tmp_path: Path) -> None:
    # A top-level key is reported with its value, so the password is hidden there too.
    url = "postgresql://bob:s3cret@db.example/yicrouter"
    main_file = write(main_path(tmp_path), f"database = {toml_value(url)}\n")

    problems = load_problems(main_file)

    line = find_problem(problems, main_file, "database")
    assert "s3cret" not in line
    assert "router.database" in line
