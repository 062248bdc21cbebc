"""The excepthook that turns a failed pynetdicom DUL thread into one log event."""

from __future__ import annotations

import errno
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.dimse_messages import C_STORE_RQ
from structlog.testing import capture_logs

from yicrouter import thread_errors


@pytest.fixture
def restore_excepthook() -> Iterator[None]:
    previous = threading.excepthook
    yield
    threading.excepthook = previous


def _fail_in(thread: threading.Thread) -> None:
    """Run the current excepthook as Python does for an exception that ends `thread`."""
    try:
        raise OSError(errno.ENOSPC, "No space left on device")
    except OSError as exc:
        args = threading.ExceptHookArgs((type(exc), exc, exc.__traceback__, thread))
        threading.excepthook(args)


def test_dul_failure_logged_once(restore_excepthook: None) -> None:
    passed_on: list[threading.Thread | None] = []
    threading.excepthook = lambda args: passed_on.append(args.thread)
    thread_errors.install()
    thread_errors.install()
    assoc = Association(AE(), "acceptor")

    with capture_logs() as events:
        _fail_in(assoc.dul)

    failures = [e for e in events if e["event"] == "association_reader_failed"]
    assert len(failures) == 1
    assert "No space left on device" in failures[0]["error"]
    # The previous hook, Python's default in the daemon, would print a traceback.
    assert passed_on == []


def test_other_threads_keep_previous_hook(restore_excepthook: None) -> None:
    passed_on: list[threading.Thread | None] = []
    threading.excepthook = lambda args: passed_on.append(args.thread)
    thread_errors.install()
    other = threading.Thread(name="not-a-dul")

    _fail_in(other)

    assert passed_on == [other]


def test_dul_failure_removes_partial_data_set(restore_excepthook: None, tmp_path: Path) -> None:
    thread_errors.install()
    assoc = Association(AE(), "acceptor")
    message = C_STORE_RQ()
    partial = tempfile.NamedTemporaryFile(delete=False, mode="wb", suffix=".dcm", dir=tmp_path)
    partial.write(b"\x00" * 132)
    message._data_set_file = partial  # as pynetdicom sets it for a chunked receive
    assoc.dimse.message = message

    with capture_logs():
        _fail_in(assoc.dul)

    assert partial.closed
    assert list(tmp_path.iterdir()) == []
