"""TCP_NODELAY and TCP_QUICKACK on the router's sockets, both accepted and opened."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from harness.ports import free_port
from yicrouter.config import Config, RouterSettings, WorkstationSettings
from yicrouter.daemon import Router
from yicrouter.net import QuickAckSocket, TUNING_HANDLERS, tune


def _nodelay(sock: socket.socket) -> bool:
    return bool(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))


def test_tune_sets_nodelay_and_quickack() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        client = socket.create_connection(server.getsockname())
        tuned = tune(client)
        try:
            assert _nodelay(tuned)
            assert isinstance(tuned, QuickAckSocket)
        finally:
            tuned.close()


def test_tune_keeps_timeout() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        client = socket.create_connection(server.getsockname())
        client.settimeout(7.5)
        tuned = tune(client)
        try:
            assert tuned.gettimeout() == 7.5
        finally:
            tuned.close()


@pytest.fixture
def router(tmp_path: Path) -> Iterator[Router]:
    config = Config(
        router=RouterSettings(bind="127.0.0.1", port=free_port(), state_dir=tmp_path / "state"),
        workstations=(WorkstationSettings(ae_title="NETWS", host="127.0.0.1", port=free_port()),),
    )
    running = Router(config)
    running.start()
    yield running
    running.stop()


def test_router_tunes_accepted_and_opened_sockets(router: Router) -> None:
    ae = AE(ae_title="NETWS")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", router.port, ae_title="YICROUTER", evt_handlers=TUNING_HANDLERS)
    try:
        assert assoc.is_established
        assert _nodelay(assoc.dul.socket.socket)
        accepted = router.active_associations()
        assert accepted, "the router lists no accepted association"
        for acceptor in accepted:
            assert _nodelay(acceptor.dul.socket.socket)
            assert isinstance(acceptor.dul.socket.socket, QuickAckSocket)
    finally:
        assoc.release()
