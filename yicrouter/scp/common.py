"""Objects shared by the SCP handlers."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydicom.dataset import Dataset

from yicrouter.config import Config
from yicrouter.retry_queue import RetryPolicy

if TYPE_CHECKING:
    from yicrouter.moves import MoveRegistry
    from yicrouter.spool import Spool


@dataclass
class RouterServices:
    """The config and shared router state that every SCP handler uses."""

    config: Config
    moves: "MoveRegistry"
    spool: "Spool"
    retry_policy: RetryPolicy = field(default_factory=RetryPolicy)
    # Set when the router stops: running moves then end with a failure status.
    stopping: threading.Event = field(default_factory=threading.Event)

    @property
    def ae_title(self) -> str:
        return self.config.router.ae_title


def association_id(assoc: Any) -> str:
    """Return the router's id of an association, as used in every log event."""
    return str(getattr(assoc, "router_association_id", f"a{id(assoc):x}"))


def association_log_context(assoc: Any) -> dict[str, Any]:
    return {
        "association_id": association_id(assoc),
        "calling_ae_title": str(assoc.requestor.ae_title).strip(),
    }


def status_with_comment(code: int, comment: str) -> Dataset:
    """Return a status Dataset carrying Error Comment (0000,0902), max 64 chars."""
    ds = Dataset()
    ds.Status = code
    ds.ErrorComment = comment[:64]
    return ds


def cancelled_before_served(assoc: Any, message_id: int) -> bool:
    """Return True when a C-CANCEL for this C-FIND was filed before it was served.

    RouterAssociation records such cancels, because pynetdicom 3.0.4 clears them.
    """
    return message_id in getattr(assoc, "early_find_cancels", set())
