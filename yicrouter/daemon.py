"""`yicrouter serve`: start the SCP, run until a signal, stop and end the process.

Signal handlers only set a flag; the main thread notices it and shuts down.
Some settings pass the config check but fail at start-up: a state_dir that
can't be written, a port in use, a bind address that is not local. Each one
stops the router with one line that names the file, key, value and fix, as a
config error does.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import time
from types import FrameType
from typing import Any, NoReturn

import peewee
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
from pynetdicom import _config as pynetdicom_config

from yicrouter import __version__
from yicrouter.config import Config
from yicrouter.db import SchemaTooNew, open_database
from yicrouter.logs import get_logger
from yicrouter.moves import GET_SPOOL_PREFIX, MoveRegistry
from yicrouter.net import TUNING_HANDLERS
from yicrouter.query import InformationModel
from yicrouter import retry_queue, thread_errors
from yicrouter.delivery import DeliveryJob, DeliverySettings
from yicrouter.retry_queue import QueueEntry, RetryPolicy
from yicrouter.routing import Location
from yicrouter.scp.association import RouterServer, start_server
from yicrouter.scp.common import RouterServices
from yicrouter.scp.events import ASSOCIATION_HANDLERS
from yicrouter.scp.find import handle_find, handle_sop_extended
from yicrouter.scp.store import handle_store
from yicrouter.spool import Spool
from yicrouter.transcode import storage_scp_preference
from yicrouter.statelock import StateDirLock, StateDirLocked
from yicrouter.startup_errors import (
    RouterStartError,
    check_writable,
    describe_listen_error,
    describe_state_dir_error,
    router_table_file,
)

log = get_logger(__name__)

# Seconds of silence after which an accepted connection is closed.
_NETWORK_TIMEOUT = 60.0
# Seconds to wait for an A-ASSOCIATE-RQ after a connection opens.
_ACSE_TIMEOUT = 30.0

# PS3.4 A.4: the Verification SOP Class, served for C-ECHO.
VERIFICATION_SOP_CLASS = "1.2.840.10008.1.1"

# Seconds that moves cut off by a stop have to send their final response.
_FINAL_RESPONSE_SECONDS = 2.0

# Seconds between checks of the stop flag that the signal handlers set.
_STOP_POLL_INTERVAL = 0.2
# Seconds that serve() waits after router.stop() for running moves to end
# before it ends the process anyway. It stays well below the unit's
# TimeoutStopSec (30 s), after which systemd would send SIGKILL.
STOP_GRACE_SECONDS = 5.0

_STATE_DIR_FIX = (
    "Create the folder and let the router's user write to it,"
    " or set router.state_dir to a folder that this user can create and write"
)


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
        ae.add_supported_context(model.get_sop_class, ALL_TRANSFER_SYNTAXES)
    storage_syntaxes = storage_scp_preference(ALL_TRANSFER_SYNTAXES)
    for context in AllStoragePresentationContexts:
        if context.abstract_syntax is not None:
            # Accept the roles that a requester proposes with SCP/SCU Role
            # Selection (PS3.7 D.3.3.4): a C-GET requester takes the SCP role
            # and the router the SCU role. Without a proposal the roles stay
            # the default, so peers' C-STOREs still reach the router as SCP.
            ae.add_supported_context(
                context.abstract_syntax, storage_syntaxes, scu_role=True, scp_role=True
            )
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
        self._state_lock = StateDirLock(config.router.state_dir)
        self._requeued = 0
        queue = config.queue
        self.services.retry_policy = RetryPolicy(
            base=queue.retry_base, maximum=queue.retry_max,
            max_attempts=queue.max_attempts, max_age=queue.max_age,
        )
        self._delivery = DeliveryJob(
            config, self.spool, self.services.retry_policy,
            DeliverySettings(poll_interval=queue.poll_interval, batch_size=queue.batch_size),
        )

    def start(self) -> None:
        """Prepare the state folder and start listening.

        Raises RouterStartError when the state folder or the database can't
        be used or the router can't listen, and leaves nothing running then.
        """
        router = self.config.router
        # Received data sets go to disk in the spool and leave it unchanged.
        self._previous_chunking = (
            pynetdicom_config.STORE_RECV_CHUNKED_DATASET, pynetdicom_config.STORE_SEND_CHUNKED_DATASET
        )
        pynetdicom_config.STORE_RECV_CHUNKED_DATASET = True
        pynetdicom_config.STORE_SEND_CHUNKED_DATASET = True
        thread_errors.install()
        try:
            self._prepare_state_dir()
            self._server = self._listen()
        except RouterStartError:
            self._restore_settings()
            raise
        self._delivery.start()
        log.info(
            "router_started", version=__version__, ae_title=router.ae_title,
            bind=router.bind, port=self.port, state_dir=str(router.state_dir),
            config_files=[str(f) for f in self.config.files],
            peers=[p.name for p in self.config.peers],
            workstations=[w.ae_title for w in self.config.workstations],
            queue_depth=retry_queue.depth(), requeued_after_restart=self._requeued,
        )

    def _prepare_state_dir(self) -> None:
        state_dir = self.config.router.state_dir
        try:
            self.spool.prepare()
            # prepare() succeeds on folders that exist already, even read-only ones.
            check_writable(self.spool.incoming)
        except OSError as exc:
            raise self._start_error(
                "state_dir", str(state_dir), describe_state_dir_error(exc), _STATE_DIR_FIX
            ) from exc
        self._lock_state_dir()
        self._remove_get_spool_folders()
        try:
            open_database(state_dir, [Location, QueueEntry], self.config.router.database_url)
            # NOTE: this releases every row in flight, which is right for one
            # router per database. Routers that share a database would need to
            # release only their own rows and leave the rest to lease expiry.
            self._requeued = retry_queue.release()
        except SchemaTooNew as exc:
            raise self._start_error(
                "state_dir", str(state_dir), "the database in this folder has a newer schema version",
                "Upgrade yicrouter, or set router.state_dir to a new folder",
            ) from exc
        except peewee.DatabaseError as exc:
            raise self._start_error(
                "state_dir", str(state_dir), f"cannot open the database in this folder: {exc}",
                "Let the router's user read and write the folder and its yicrouter.sqlite3* files,"
                " or move those files away to start with an empty routing table",
            ) from exc

    def _remove_get_spool_folders(self) -> None:
        """Delete the spool folders of C-GETs that a stopped router left behind.

        Their instances have no retry-queue rows, and their requesters'
        associations ended with that router, so nothing can send them now.
        """
        removed = 0
        for folder in self.spool.jobs.glob(f"{GET_SPOOL_PREFIX}*"):
            shutil.rmtree(folder, ignore_errors=True)
            removed += 1
        if removed:
            log.info("spool_get_folders_removed", folders=removed, spool=str(self.spool.jobs))

    def _lock_state_dir(self) -> None:
        state_dir = self.config.router.state_dir
        try:
            self._state_lock.acquire()
        except StateDirLocked as exc:
            raise self._start_error(
                "state_dir", str(state_dir),
                f"another yicrouter (process {exc.holder or 'unknown'}) is using this folder",
                "Stop that router first, or give this one its own router.state_dir",
            ) from exc
        except OSError as exc:
            raise self._start_error(
                "state_dir", str(state_dir), describe_state_dir_error(exc), _STATE_DIR_FIX
            ) from exc

    def _listen(self) -> RouterServer:
        router = self.config.router
        handlers: list[Any] = [
            *TUNING_HANDLERS,
            *ASSOCIATION_HANDLERS,
            (evt.EVT_C_FIND, handle_find, [self.services]),
            (evt.EVT_SOP_EXTENDED, handle_sop_extended),
            (evt.EVT_C_STORE, handle_store, [self.services]),
        ]
        ae = _build_ae(self.config)
        try:
            return start_server(ae, (router.bind, router.port), router.ae_title, self.services, handlers)
        except OSError as exc:
            key, value, error, fix = describe_listen_error(exc, router.bind, router.port)
            raise self._start_error(key, value, error, fix) from exc

    def _start_error(self, key: str, value: object, error: str, fix: str) -> RouterStartError:
        return RouterStartError(router_table_file(self.config), f"router.{key}", value, error, fix)

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

    def stop_accepting(self) -> None:
        """Stop listening for associations; those already accepted go on."""
        if self._server is not None:
            self._server.shutdown()
            self._server = None

    def stop(self) -> None:
        """Stop listening, end running moves with a failure status, and release the state folder.

        The C-STORE handler needs the spool settings until the last move has
        ended, so they are restored only after running moves got the signal to end.
        """
        self.stop_accepting()
        self._delivery.stop()
        if len(self.moves) > 0:
            self.services.stopping.set()
            _wait_for_moves(self, _FINAL_RESPONSE_SECONDS)
        self._restore_settings()
        log.info("router_stopped", ae_title=self.config.router.ae_title, running_moves=len(self.moves))

    def _restore_settings(self) -> None:
        self.spool.release()
        self._state_lock.release()
        if self._previous_chunking is not None:
            (pynetdicom_config.STORE_RECV_CHUNKED_DATASET,
             pynetdicom_config.STORE_SEND_CHUNKED_DATASET) = self._previous_chunking
            self._previous_chunking = None


def serve(config: Config) -> NoReturn:
    """Run the router until SIGTERM or SIGINT, then end the process.

    The exit status is 0 after a stop and 1 when the router could not start.
    """
    stop_signal: list[int] = []

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop_signal.append(signum)

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    router = Router(config)
    try:
        router.start()
    except RouterStartError as exc:
        _report_start_failure(exc)
        _end_process(1)
    while not stop_signal:
        time.sleep(_STOP_POLL_INTERVAL)
    log.info("router_stopping", signal=signal.Signals(stop_signal[0]).name, running_moves=len(router.moves))
    router.stop_accepting()
    running = _wait_for_moves(router, STOP_GRACE_SECONDS)
    if running:
        log.warning(
            "router_stop_forced", running_moves=running, waited_seconds=STOP_GRACE_SECONDS,
            reason="moves were still running, so they end now with a failure status",
        )
    router.stop()
    _end_process(0)


def _report_start_failure(exc: RouterStartError) -> None:
    print(f"yicrouter: not starting: {exc}", file=sys.stderr)
    log.error(
        "router_start_failed", error=exc.error, file=str(exc.file) if exc.file else None,
        key=exc.key, value=exc.value, fix=exc.fix,
    )
    log.debug("router_start_failed_traceback", exc_info=exc)


def _wait_for_moves(router: Router, timeout: float) -> int:
    """Wait up to `timeout` seconds until no move runs; return how many still run."""
    deadline = time.monotonic() + timeout
    while len(router.moves) > 0 and time.monotonic() < deadline:
        time.sleep(_STOP_POLL_INTERVAL)
    return len(router.moves)


def _end_process(status: int) -> NoReturn:
    """Flush stdout and stderr, then end the process with `status` at once.

    os._exit does not wait for threads. pynetdicom's DUL threads are not
    daemon threads, so without it a thread that waits on a frozen peer would
    keep the process alive until the peer's DIMSE timeout had passed.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
