"""A SamplePacs whose C-MOVE ends while its last C-STOREs are still arriving at the router.

The peer sends the first instances as usual, through pynetdicom's C-MOVE
loop. It sends the last `racing` instances at once, each on its own
association, and aborts the C-MOVE association a short delay later. The
delay cycles through `abort_delays`, one per C-MOVE, so a few moves cover
the orderings: the router receives the A-ABORT before these C-STOREs arrive,
while it is storing them, or after it has acknowledged them, as when a real
peer is killed mid-move.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset
from pynetdicom import evt
from pynetdicom.presentation import build_context

from yicrouter.demo.samplepacs import SamplePacs

PENDING = 0xFF00


class RacingPacs(SamplePacs):
    """A SamplePacs whose every C-MOVE moves all its files to its one Move Destination."""

    def __init__(self, ae_title: str, port: int, files: list[Path], destination: tuple[str, int],
                 racing: int = 8, abort_delays: tuple[float, ...] = (0.0, 0.005, 0.02)) -> None:
        super().__init__(ae_title, port, files, move_destinations={})
        self._destination = destination
        self._racing = racing
        self._abort_delays = itertools.cycle(abort_delays)
        self._move_files = list(files)
        # Statuses that the router returned to the racing C-STOREs.
        self.racing_statuses: list[int] = []

    def _handle_move(self, event: evt.Event) -> Iterator[Any]:  # type: ignore[override]
        normal = self._move_files[: len(self._move_files) - self._racing]
        racing = self._move_files[len(normal):]
        contexts = [build_context(str(dcmread(path, stop_before_pixels=True).SOPClassUID))
                    for path in self._move_files[:1]]
        yield self._destination[0], self._destination[1], {"contexts": contexts}
        yield len(self._move_files)
        for path in normal:
            yield PENDING, dcmread(path)
        originator = (str(event.assoc.requestor.ae_title).strip(), int(event.request.MessageID))
        senders = [self._racing_store(path, contexts, originator) for path in racing]
        self._race(senders, event)

    def _racing_store(self, path: Path, contexts: list[Any], originator: tuple[str, int]) -> "_RacingStore":
        assoc = self._ae.associate(self._destination[0], self._destination[1], contexts=contexts,
                                   ae_title=originator[0])
        return _RacingStore(assoc, dcmread(path), originator, self.racing_statuses)

    def _race(self, senders: list["_RacingStore"], event: evt.Event) -> None:
        """Start every C-STORE, and abort the C-MOVE after this move's delay."""
        delay = next(self._abort_delays)
        threads = [threading.Thread(target=sender.send, daemon=True) for sender in senders]
        for thread in threads:
            thread.start()
        # The delay is the fault itself: the time between the C-STOREs and the A-ABORT.
        time.sleep(delay)
        event.assoc.abort()
        for thread in threads:
            thread.join(timeout=30.0)


@dataclass
class _RacingStore:
    assoc: Any
    dataset: Dataset
    originator: tuple[str, int]
    statuses: list[int]

    def send(self) -> None:
        if not self.assoc.is_established:
            return
        response = self.assoc.send_c_store(self.dataset, originator_aet=self.originator[0],
                                           originator_id=self.originator[1])
        if "Status" in response:
            self.statuses.append(int(response.Status))
        self.assoc.release()
