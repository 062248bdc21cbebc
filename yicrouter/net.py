"""TCP socket tuning for every association the router opens or accepts.

pynetdicom 3.0.4 never sets TCP_NODELAY. With Nagle's algorithm on and delayed
ACKs at the peer, each small PDU can wait for the peer's delayed-ACK timer,
which made a 50-instance storescu transfer about 77 times slower on loopback.
TCP_QUICKACK on the receiving side, set again before each read because Linux
clears it, removes the stall even when the sender keeps Nagle on.
"""

from __future__ import annotations

import socket
from typing import Any

from pynetdicom import evt

# Linux only: the constant is missing on other platforms.
_TCP_QUICKACK = getattr(socket, "TCP_QUICKACK", None)


class QuickAckSocket(socket.socket):
    """A socket that turns TCP_QUICKACK back on before each receive."""

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        if _TCP_QUICKACK is not None:
            try:
                self.setsockopt(socket.IPPROTO_TCP, _TCP_QUICKACK, 1)
            except OSError:
                pass
        return super().recv(bufsize, flags)


def tune(sock: socket.socket) -> socket.socket:
    """Return `sock` with TCP_NODELAY set, as a QuickAckSocket on the same fd."""
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        return sock
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if type(sock) is not socket.socket or _TCP_QUICKACK is None:
        # Already tuned, or a TLS socket that must keep its own class.
        return sock
    timeout = sock.gettimeout()
    tuned = QuickAckSocket(sock.family, sock.type, sock.proto, fileno=sock.detach())
    tuned.settimeout(timeout)
    return tuned


def _on_connection_open(event: Any) -> None:
    """Tune the socket of an association as soon as its TCP connection opens.

    pynetdicom triggers EVT_CONN_OPEN before the association's reader thread
    makes its first read, so replacing the socket object here is safe.
    """
    assoc_socket = event.assoc.dul.socket
    if assoc_socket is not None and assoc_socket.socket is not None:
        assoc_socket.socket = tune(assoc_socket.socket)


TUNING_HANDLERS: list[Any] = [(evt.EVT_CONN_OPEN, _on_connection_open)]
