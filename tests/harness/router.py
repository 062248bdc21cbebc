"""Run yicrouter as a subprocess with a generated TOML configuration.

The configuration follows the router's documented format: a [router] table,
one [[peer]] table per partner PACS and one [[workstation]] table per allowed
caller and Move Destination.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from harness import LoggedProcess
from harness.dcmtk import echo_succeeds
from harness.ports import LOOPBACK, DicomNode, free_port
from harness.waiting import wait_for


@dataclass(frozen=True)
class PeerEntry:
    """One [[peer]] table: a PACS that the router queries and retrieves from."""

    name: str
    node: DicomNode
    # Seconds that one C-FIND to this peer may take in total. None leaves the
    # router's default.
    find_deadline: float | None = None
    # Further keys of the table, for example {"dimse_timeout": 5.0}.
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class WorkstationEntry:
    """One [[workstation]] table: an allowed caller that is also a Move Destination."""

    node: DicomNode
    extra: Mapping[str, Any] = field(default_factory=dict)


def _toml_value(value: Any) -> str:
    """Render a scalar or a list as a TOML value.

    JSON string escapes (\\", \\\\, \\n, \\uXXXX) are also valid in TOML basic
    strings, so json.dumps renders strings.
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (str, Path)):
        return json.dumps(str(value))
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} value {value!r} to TOML")


def _toml_table(header: str, values: Mapping[str, Any]) -> list[str]:
    return [header, *(f"{key} = {_toml_value(value)}" for key, value in values.items())]


def render_router_config(
    *,
    ae_title: str,
    port: int,
    state_dir: Path,
    peers: Sequence[PeerEntry] = (),
    workstations: Sequence[WorkstationEntry] = (),
    bind: str = LOOPBACK,
    log_level: str = "debug",
    extra_router: Mapping[str, Any] | None = None,
) -> str:
    """Return the text of a yicrouter TOML configuration file."""
    router = {
        "ae_title": ae_title,
        "bind": bind,
        "port": port,
        "state_dir": state_dir,
        "log_level": log_level,
        **(extra_router or {}),
    }
    lines = _toml_table("[router]", router)
    for peer in peers:
        table: dict[str, Any] = {
            "name": peer.name,
            "ae_title": peer.node.ae_title,
            "host": peer.node.host,
            "port": peer.node.port,
        }
        if peer.find_deadline is not None:
            table["find_deadline"] = peer.find_deadline
        table.update(peer.extra)
        lines += ["", *_toml_table("[[peer]]", table)]
    for workstation in workstations:
        table = {
            "ae_title": workstation.node.ae_title,
            "host": workstation.node.host,
            "port": workstation.node.port,
            **workstation.extra,
        }
        lines += ["", *_toml_table("[[workstation]]", table)]
    return "\n".join(lines) + "\n"


def run_config_check(config_path: Path, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """Run `python -m yicrouter config check PATH` and return its result.

    stdout and stderr are captured separately as text.
    """
    return subprocess.run(
        [sys.executable, "-m", "yicrouter", "config", "check", str(config_path)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=_router_environment(),
    )


def _router_environment() -> dict[str, str]:
    environment = dict(os.environ)
    # Without this, Python buffers the log written to a file, and tests that
    # read the log would miss the latest lines.
    environment["PYTHONUNBUFFERED"] = "1"
    return environment


class RouterProcess:
    """yicrouter run with `python -m yicrouter serve --config PATH` in `work_dir`."""

    def __init__(
        self,
        work_dir: Path,
        *,
        ae_title: str = "YICROUTER",
        port: int | None = None,
        peers: Sequence[PeerEntry] = (),
        workstations: Sequence[WorkstationEntry] = (),
        log_level: str = "debug",
        extra_router: Mapping[str, Any] | None = None,
        echo_calling_ae: str | None = None,
    ) -> None:
        """Prepare a router. Nothing runs until start().

        `echo_calling_ae` is the calling AE title of the readiness C-ECHO. It
        defaults to the first workstation's AE title, because the router may
        reject callers that are not configured.
        """
        self.work_dir = work_dir.resolve()
        self.ae_title = ae_title
        self.port = port if port is not None else free_port()
        self.peers = list(peers)
        self.workstations = list(workstations)
        self.log_level = log_level
        self.extra_router = dict(extra_router or {})
        if echo_calling_ae is None:
            echo_calling_ae = workstations[0].node.ae_title if workstations else "ECHOSCU"
        self.echo_calling_ae = echo_calling_ae
        self.process: LoggedProcess | None = None

    @property
    def node(self) -> DicomNode:
        return DicomNode(self.ae_title, self.port)

    @property
    def config_path(self) -> Path:
        return self.work_dir / "yicrouter.toml"

    @property
    def state_dir(self) -> Path:
        return self.work_dir / "state"

    @property
    def log_path(self) -> Path:
        return self.work_dir / "router.log"

    def write_config(self) -> Path:
        """Write the TOML configuration and return its path."""
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        text = render_router_config(
            ae_title=self.ae_title,
            port=self.port,
            state_dir=self.state_dir,
            peers=self.peers,
            workstations=self.workstations,
            log_level=self.log_level,
            extra_router=self.extra_router,
        )
        self.config_path.write_text(text, encoding="utf-8")
        return self.config_path

    def start(self, timeout: float = 20.0) -> "RouterProcess":
        """Write the configuration, start the router and wait until it responds to a C-ECHO.

        Raises ProcessExitedError with the log tail if the router exits first.
        """
        self.write_config()
        args = [sys.executable, "-m", "yicrouter", "serve", "--config", str(self.config_path)]
        self.process = LoggedProcess(
            f"yicrouter {self.ae_title}",
            args,
            self.log_path,
            cwd=self.work_dir,
            env=_router_environment(),
        )
        self.process.start()
        self.process.wait_until_ready(
            lambda: echo_succeeds(self.node, calling_ae=self.echo_calling_ae),
            timeout,
            f"router responds to C-ECHO on port {self.port}",
        )
        return self

    def stop(self, timeout: float = 10.0) -> int | None:
        """Send SIGTERM, then SIGKILL after `timeout` seconds. Returns the exit status."""
        return self.process.stop(timeout) if self.process is not None else None

    def is_running(self) -> bool:
        return self.process is not None and self.process.is_running()

    def log_text(self) -> str:
        return self.process.log_text() if self.process is not None else ""

    def wait_for_log(self, pattern: str, timeout: float = 10.0) -> re.Match[str]:
        """Wait until the log matches the regular expression `pattern`, and return the match."""
        compiled = re.compile(pattern)
        return wait_for(
            lambda: compiled.search(self.log_text()),
            timeout=timeout,
            message=lambda: f"router log {self.log_path} has no match for {pattern!r}:\n"
            + (self.process.log_tail() if self.process else ""),
        )

    def __enter__(self) -> "RouterProcess":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
