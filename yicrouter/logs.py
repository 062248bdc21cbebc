"""Logging set-up: structlog events to stderr, pynetdicom kept quiet.

Event names are stable snake_case strings, and each event carries the ids
involved (calling AE title, peer, association id, Study Instance UID, move id).
Patient names and IDs are never logged above DEBUG.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog
from pydicom import config as pydicom_config
from pynetdicom import _config as pynetdicom_config

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
          "error": logging.ERROR}


def configure_logging(level: str = "info", log_format: str = "console") -> None:
    """Configure structlog and the standard logging used by pynetdicom."""
    numeric_level = LEVELS[level]
    renderer: Any
    if log_format == "json":
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    quiet_pynetdicom()
    quiet_pydicom()


def quiet_pynetdicom() -> None:
    """Stop pynetdicom from logging identifiers, which hold patient data.

    pynetdicom 3.0 logs every C-FIND request and response identifier at INFO by
    default. Its own warnings and errors still reach stderr.
    """
    pynetdicom_config.LOG_REQUEST_IDENTIFIERS = False
    pynetdicom_config.LOG_RESPONSE_IDENTIFIERS = False
    pynetdicom_logger = logging.getLogger("pynetdicom")
    pynetdicom_logger.setLevel(logging.WARNING)
    if not pynetdicom_logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s [%(levelname)s] %(name)s: %(message)s"))
        pynetdicom_logger.addHandler(handler)
    pynetdicom_logger.propagate = False


def quiet_pydicom() -> None:
    """Stop pydicom from printing a UserWarning for each invalid value it reads.

    The router checks the values it acts on and logs its own events, so the
    warnings would only add unstructured lines, some with patient data.
    """
    pydicom_config.settings.reading_validation_mode = pydicom_config.IGNORE


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)
