"""`yicrouter serve`: start the SCP, run until a signal, stop cleanly.

Signal handlers only set a flag; the main thread notices it and shuts down.
"""

from __future__ import annotations

import signal
import time
from types import FrameType
from typing import Any

from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
from pynetdicom import _config as pynetdicom_config

from yicrouter import __version__
from yicrouter.config import Config
from yicrouter.db import open_database
from yicrouter.logs import get_logger
from yicrouter.moves import MoveRegistry
from yicrouter.net import TUNING_HANDLERS
from yicrouter.query import InformationModel
from yicrouter.routing import Location
from yicrouter.scp.association import RouterServer, start_server
from yicrouter.scp.common import RouterServices
from yicrouter.scp.events import ASSOCIATION_HANDLERS
from yicrouter.scp.find import handle_find
from yicrouter.scp.store import handle_store
from yicrouter.spool import Spool

log = get_logger(__name__)

# Seconds of silence after which an accepted connection is closed.
_NETWORK_TIMEOUT = 60.0
# Seconds to wait for an A-ASSOCIATE-RQ after a connection opens.
_ACSE_TIMEOUT = 30.0

# PS3.4 A.4: the Verification SOP Class, served for C-ECHO.
VERIFICATION_SOP_CLASS = "1.2.840.10008.1.1"

# Seconds between checks of the stop flag that the signal handlers set.
_STOP_POLL_INTERVAL = 0.2


def _build_ae(config: Config) -> AE:
    router = config.router
    ae = AE(ae_title=router.ae_title)
    ae.maximum_pdu_size = router.max_pdu
    ae.maximum_associations = 64
    # Close a connection that sends nothing for this many seconds, including
    # one that stops in the middle of a PDU.
    ae.network_timeout = _NETWORK_TIMEOUT
    ae.acse_timeout = _ACSE_TIMEOUT
    # Reject an A-ASSOCIATE-RQ whose Called AE Title is not the router's.
    ae.require_called_aet = True
    ae.add_supported_context(VERIFICATION_SOP_CLASS, ALL_TRANSFER_SYNTAXES)
    for model in InformationModel:
        ae.add_supported_context(model.find_sop_class, ALL_TRANSFER_SYNTAXES)
        ae.add_supported_context(model.move_sop_class, ALL_TRANSFER_SYNTAXES)
    for context in AllStoragePresentationContexts:
        if context.abstract_syntax is not None:
            ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
    allowed = [w.ae_title for w in config.workstations] + [p.ae_title for p in config.peers]
    ae.require_calling_aet = allowed
    return ae


class Router:
    """The running router: its AE, server and shared state."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.spool = Spool(config.router.state_dir)
        self.moves = MoveRegistry(config.router.ae_title)
        self.services = RouterServices(config=config, moves=self.moves, spool=self.spool)
        self._server: RouterServer | None = None
        self._previous_chunking: tuple[bool, bool] | None = None

    def start(self) -> None:
        router = self.config.router
        # Received data sets go to disk in the spool and leave it unchanged.
        self._previous_chunking = (
            pynetdicom_config.STORE_RECV_CHUNKED_DATASET, pynetdicom_config.STORE_SEND_CHUNKED_DATASET
        )
        pynetdicom_config.STORE_RECV_CHUNKED_DATASET = True
        pynetdicom_config.STORE_SEND_CHUNKED_DATASET = True
        self.spool.prepare()
        open_database(router.state_dir, [Location])
        handlers: list[Any] = [
            *TUNING_HANDLERS,
            *ASSOCIATION_HANDLERS,
            (evt.EVT_C_FIND, handle_find, [self.services]),
            (evt.EVT_C_STORE, handle_store, [self.services]),
        ]
        ae = _build_ae(self.config)
        self._server = start_server(ae, (router.bind, router.port), router.ae_title, self.services, handlers)
        log.info(
            "router_started", version=__version__, ae_title=router.ae_title,
            bind=router.bind, port=self.port, state_dir=str(router.state_dir),
            config_files=[str(f) for f in self.config.files],
            peers=[p.name for p in self.config.peers],
            workstations=[w.ae_title for w in self.config.workstations],
        )

    @property
    def port(self) -> int:
        if self._server is None:
            return self.config.router.port
        return int(self._server.server_address[1])

    def active_associations(self) -> list[Any]:
        """Return the associations the router has accepted and not yet closed."""
        if self._server is None:
            return []
        return list(self._server.active_associations)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        self.spool.release()
        if self._previous_chunking is not None:
            (pynetdicom_config.STORE_RECV_CHUNKED_DATASET,
             pynetdicom_config.STORE_SEND_CHUNKED_DATASET) = self._previous_chunking
        log.info("router_stopped", ae_title=self.config.router.ae_title, running_moves=len(self.moves))


def serve(config: Config) -> int:
    """Run the router until SIGTERM or SIGINT; return the exit status."""
    stop_signal: list[int] = []

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop_signal.append(signum)

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    router = Router(config)
    router.start()
    while not stop_signal:
        time.sleep(_STOP_POLL_INTERVAL)
    log.info("router_stopping", signal=signal.Signals(stop_signal[0]).name)
    router.stop()
    return 0
