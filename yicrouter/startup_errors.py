"""Start-up errors: a `[router]` setting that the operating system refuses.

Each becomes a RouterStartError whose message reads like a config problem
line, so `yicrouter serve` can print it on one line and stop.
"""

from __future__ import annotations

import errno
import socket
import tempfile
from pathlib import Path

from yicrouter.config import Config
from yicrouter.config.files import parse_file


class RouterStartError(Exception):
    """Raised by Router.start when a `[router]` setting can't be used.

    The message has the form of a config problem line: the file (when the
    configuration came from files), the key, the value, the error and the fix.
    """

    def __init__(self, file: Path | None, key: str, value: object, error: str, fix: str) -> None:
        self.file = file
        self.key = key
        self.value = value
        self.error = error
        self.fix = fix
        # Unlike config problem lines, the value is never shortened, because
        # it is a path, a port or an address that the reader needs whole.
        message = f"{key} = {value!r}: {error}. {fix}."
        super().__init__(message if file is None else f"{file}: {message}")


def check_writable(folder: Path) -> None:
    """Create and delete a file in `folder`; raise OSError naming `folder` when that fails."""
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, str(folder)) from exc


def describe_os_error(exc: OSError) -> str:
    reason = exc.strerror or str(exc)
    if exc.filename is not None:
        return f"{reason}: {exc.filename}"
    return reason


def describe_state_dir_error(exc: OSError) -> str:
    if isinstance(exc, (NotADirectoryError, FileExistsError)) and exc.filename is not None:
        wanted = Path(exc.filename)
        # Root first, so the message names the outermost file in the way.
        for part in reversed([wanted, *wanted.parents]):
            if part.exists() and not part.is_dir():
                return f"cannot create the folder {wanted}, because {part} is a file"
    return f"cannot create or write the folder: {describe_os_error(exc)}"


def describe_listen_error(exc: OSError, bind: str, port: int) -> tuple[str, object, str, str]:
    """Return the key, value, error and fix for a failure to listen on bind:port."""
    cannot_listen = f"cannot listen on {bind}:{port}"
    any_address = "e.g. '0.0.0.0' for every IPv4 interface or '127.0.0.1' for this machine only"
    if isinstance(exc, socket.gaierror):
        return ("bind", bind, f"{cannot_listen}: {bind} is not a valid address ({exc.strerror})",
                f"Set router.bind to an IP address of this machine, {any_address}")
    if exc.errno == errno.EADDRINUSE:
        return ("port", port, f"{cannot_listen}: the port is already in use",
                f"Stop the program that listens on port {port} (`ss -ltnp` lists them),"
                " or set router.port to a free port")
    if exc.errno == errno.EADDRNOTAVAIL:
        return ("bind", bind, f"{cannot_listen}: {bind} is not an address of this machine",
                f"Set router.bind to an address of this machine, {any_address}")
    if exc.errno == errno.EACCES and port < 1024:
        return ("port", port, f"{cannot_listen}: permission denied",
                "Ports below 1024 need root or the CAP_NET_BIND_SERVICE capability,"
                " so grant it (AmbientCapabilities= in the systemd unit) or set router.port to 1024 or above")
    return ("bind", bind, f"{cannot_listen}: {describe_os_error(exc)}",
            "Check router.bind and router.port, and that the router's user may listen there")


def router_table_file(config: Config) -> Path | None:
    """Return the config file that contains `[router]`.

    That is the main file when no file contains it, and None for a
    configuration built in code, as the demo does.
    """
    for file in config.files:
        document = parse_file(file, [])
        if document is not None and "router" in document:
            return file
    return config.files[0] if config.files else None
