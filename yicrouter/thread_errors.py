"""A threading.excepthook for pynetdicom's DUL threads.

pynetdicom 3.0.4 writes a received C-STORE data set to a temporary file in
its DUL reader thread, when chunked receiving is on. An OSError there, such
as ENOSPC on a full spool, ends that thread with an unhandled exception:
Python prints a traceback, the association stays half open, and the partial
temporary file stays in the spool. The hook logs the failure once as an
event, with the traceback at DEBUG, removes that file, and closes the
connection so that the peer's C-STORE fails at once.
"""

from __future__ import annotations

import threading
import traceback
from pathlib import Path
from typing import Any

from pynetdicom.dul import DULServiceProvider

from yicrouter.logs import get_logger

log = get_logger(__name__)


def install() -> None:
    """Replace threading.excepthook; other threads keep the previous hook."""
    previous = threading.excepthook
    if getattr(previous, "yicrouter_hook", False):
        return

    def hook(args: Any) -> None:
        if isinstance(args.thread, DULServiceProvider):
            handle_dul_failure(args)
            return
        previous(args)

    hook.yicrouter_hook = True  # type: ignore[attr-defined]
    threading.excepthook = hook


def handle_dul_failure(args: Any) -> None:
    """Log a DUL thread's exception as one event and close its connection."""
    dul: DULServiceProvider = args.thread
    assoc = getattr(dul, "_assoc", None)
    log.error(
        "association_reader_failed",
        association_id=str(getattr(assoc, "router_association_id", "")),
        error=f"{getattr(args.exc_type, '__name__', 'Exception')}: {args.exc_value}",
        reason="pynetdicom's network thread stopped, so the connection is closed",
    )
    log.debug("association_reader_traceback", traceback="".join(
        traceback.format_exception(args.exc_type, args.exc_value, args.exc_traceback)
    ))
    _remove_partial_data_set(assoc)
    sock = dul.socket
    if sock is not None:
        try:
            sock.close()
        except OSError as exc:
            log.debug("association_socket_close_failed", error=str(exc))


def _remove_partial_data_set(assoc: Any) -> None:
    """Close and delete the temporary file of the C-STORE data set being received, if any."""
    dimse = getattr(assoc, "dimse", None)
    message = getattr(dimse, "message", None)
    partial = getattr(message, "_data_set_file", None)
    if partial is None:
        return
    try:
        # Closing flushes the buffer, which fails again on a full disk.
        partial.close()
    except OSError:
        pass
    try:
        Path(partial.name).unlink(missing_ok=True)
    except OSError as exc:
        log.warning("partial_data_set_not_removed", path=str(partial.name), error=str(exc))
