"""Free TCP ports on the loopback interface, and the DICOM addresses built on them."""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass

LOOPBACK = "127.0.0.1"

# Ports handed out in this process. The operating system may return a port again
# once its probe socket is closed, so the harness remembers every port it gave out
# and never hands the same port to two servers of one test session.
_issued_ports: set[int] = set()
_issued_lock = threading.Lock()


@dataclass(frozen=True)
class DicomNode:
    """Network address of a DICOM Application Entity: AE title, host and TCP port."""

    ae_title: str
    port: int
    host: str = LOOPBACK


def free_port() -> int:
    """Reserve a TCP port on 127.0.0.1 that nothing listens on right now.

    NOTE: another program may still take the port between this call and the
    moment the server binds it. Servers are started right after their ports are
    reserved to keep that window short.
    """
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind((LOOPBACK, 0))
            port = int(probe.getsockname()[1])
        with _issued_lock:
            if port not in _issued_ports:
                _issued_ports.add(port)
                return port


def free_ports(count: int) -> list[int]:
    """Reserve `count` distinct free ports on 127.0.0.1."""
    if count < 0:
        raise ValueError(f"count must be zero or more, got {count}")
    return [free_port() for _ in range(count)]


def is_listening(port: int, host: str = LOOPBACK, timeout: float = 0.5) -> bool:
    """Return True when a TCP connection to host:port succeeds."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False
