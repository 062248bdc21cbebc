"""A SamplePacs that keeps every C-MOVE and C-GET identifier it receives.

SamplePacs's FaultOptions.record_identifiers keeps C-FIND identifiers only.
Retrieve tests also need to see what a peer was asked to send, for example
whether the router filled in the parent UIDs of a relational retrieve.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from copy import deepcopy

from pydicom.dataset import Dataset
from pynetdicom.events import Event

from yicrouter.demo.samplepacs import MoveYield, SamplePacs, SubOperationYield


class RetrieveRecordingPacs(SamplePacs):
    """SamplePacs whose C-MOVE and C-GET identifiers are kept in `move_identifiers` and `get_identifiers`."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.move_identifiers: list[Dataset] = []
        self.get_identifiers: list[Dataset] = []
        self._recording_lock = threading.Lock()

    def retrieve_identifiers(self) -> list[Dataset]:
        """Return the C-MOVE and C-GET identifiers received so far, C-MOVE ones first."""
        with self._recording_lock:
            return [*self.move_identifiers, *self.get_identifiers]

    def _handle_move(self, event: Event) -> Iterator[MoveYield]:
        with self._recording_lock:
            self.move_identifiers.append(deepcopy(event.identifier))
        return super()._handle_move(event)

    def _handle_get(self, event: Event) -> Iterator[SubOperationYield]:
        with self._recording_lock:
            self.get_identifiers.append(deepcopy(event.identifier))
        return super()._handle_get(event)
