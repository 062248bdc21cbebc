"""Presentation context lists that pynetdicom can copy without rebuilding UIDs.

pynetdicom 3.0.4 deep-copies the supported presentation contexts for every
association that it accepts, and the proposed ones for every association that
it requests. copy.deepcopy rebuilds each transfer syntax UID through pydicom's
UID constructor, which validates it again. The router supports 177 abstract
syntaxes with 45 transfer syntaxes each, so every association it accepted
cost 65 to 100 ms of CPU, with the GIL held, before negotiation began. Every
workstation query and the first instance of every relayed study waited for
it, and so did every other thread of the router.

UIDs are immutable strings, so the copies can share them. A ContextList
copies each PresentationContext and its list of transfer syntaxes, and
keeps the UID objects themselves.
"""

from __future__ import annotations

import copy
from typing import Any, Iterable

from pynetdicom.presentation import PresentationContext


def _copy_context(context: PresentationContext) -> PresentationContext:
    duplicate = copy.copy(context)
    # The only mutable state of a PresentationContext is its lists of UIDs.
    for name, value in vars(context).items():
        if isinstance(value, list):
            setattr(duplicate, name, list(value))
    return duplicate


class ContextList(list[PresentationContext]):
    """A list of presentation contexts whose deep copy shares the UID objects."""

    def __deepcopy__(self, memo: dict[int, Any]) -> "ContextList":
        return ContextList(_copy_context(context) for context in self)


def context_list(contexts: Iterable[PresentationContext]) -> ContextList:
    """Return `contexts` as a ContextList, for pynetdicom's contexts arguments."""
    return contexts if isinstance(contexts, ContextList) else ContextList(contexts)
