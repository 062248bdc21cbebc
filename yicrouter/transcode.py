"""Choosing the presentation context and payload for each outgoing C-STORE.

STUB: the interface is fixed, the bodies are placeholders to be filled in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pydicom.dataset import Dataset
from pynetdicom.presentation import PresentationContext

from yicrouter.moves import ReceivedInstance


@dataclass(frozen=True)
class Payload:
    """What to send in one C-STORE: the received file unchanged, or a decoded data set."""

    data: Path | Dataset
    transfer_syntax: str


@dataclass(frozen=True)
class Unsendable:
    """Why an instance cannot be sent over the accepted presentation contexts."""

    reason: str


def prepare(instance: ReceivedInstance, accepted: Sequence[PresentationContext]) -> Payload | Unsendable:
    """Return the payload for `instance` over one of the `accepted` contexts, or why there is none."""
    for context in accepted:
        if context.abstract_syntax == instance.sop_class_uid and context.transfer_syntax[0] == instance.transfer_syntax:
            return Payload(instance.path, instance.transfer_syntax)
    return Unsendable("no accepted presentation context")


def proposed_contexts(wanted: dict[str, set[str]]) -> list[list[PresentationContext]]:
    """Return the presentation contexts to propose for SOP Classes and their transfer syntaxes.

    The result is split into lists of at most 128 contexts, one per association.
    """
    raise NotImplementedError
