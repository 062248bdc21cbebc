"""A TCP proxy in front of a peer that sends A-ABORT in reply to the requester's A-RELEASE-RQ.

Some PACS abort an association instead of releasing it. The proxy passes
every other PDU through unchanged in both directions.
"""

from __future__ import annotations

import socket
import threading

from harness.ports import LOOPBACK

# PDU types and the A-ABORT PDU (PS3.8 9.3.1 and 9.3.8), source 2: service provider.
_A_RELEASE_RQ = 0x05
_A_ABORT = bytes([0x07, 0x00, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x02, 0x00])
_PDU_HEADER_BYTES = 6


class AbortOnReleaseProxy:
    """Listens on a free loopback port and forwards each connection to `target_port`."""

    def __init__(self, target_port: int) -> None:
        self._target_port = target_port
        self._listener = socket.create_server((LOOPBACK, 0))
        self.port = int(self._listener.getsockname()[1])
        threading.Thread(target=self._accept, name="abort-on-release", daemon=True).start()

    def close(self) -> None:
        self._listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection((LOOPBACK, self._target_port))
            threading.Thread(target=self._requester_to_peer, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._peer_to_requester, args=(upstream, client), daemon=True).start()

    @staticmethod
    def _requester_to_peer(client: socket.socket, upstream: socket.socket) -> None:
        pending = b""
        try:
            while data := client.recv(65536):
                pending += data
                while len(pending) >= _PDU_HEADER_BYTES:
                    length = _PDU_HEADER_BYTES + int.from_bytes(pending[2:6], "big")
                    if len(pending) < length:
                        break
                    pdu, pending = pending[:length], pending[length:]
                    if pdu[0] == _A_RELEASE_RQ:
                        client.sendall(_A_ABORT)
                        return
                    upstream.sendall(pdu)
        except OSError:
            pass
        finally:
            client.close()
            upstream.close()

    @staticmethod
    def _peer_to_requester(upstream: socket.socket, client: socket.socket) -> None:
        try:
            while data := upstream.recv(65536):
                client.sendall(data)
        except OSError:
            pass
