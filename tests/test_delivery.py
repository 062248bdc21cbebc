"""The delivery job against a destination whose association fails."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from pydicom.data import get_testdata_file

from harness.ports import LOOPBACK, free_port
from yicrouter import retry_queue
from yicrouter.config import Config, RouterSettings, WorkstationSettings
from yicrouter.db import open_database
from yicrouter.delivery import DeliveryJob, DeliverySettings
from yicrouter.retry_queue import QueueEntry, RetryPolicy
from yicrouter.routing import Location
from yicrouter.spool import Spool

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"


@pytest.fixture(autouse=True)
def database(tmp_path: Path) -> Iterator[None]:
    open_database(tmp_path, [Location, QueueEntry])
    yield


def _queue_rows(tmp_path: Path, count: int) -> list[int]:
    """Queue `count` instances for WS1, due now, each with a real file."""
    source = Path(str(get_testdata_file("CT_small.dcm")))
    ids = []
    for index in range(count):
        path = tmp_path / f"instance{index}.dcm"
        path.write_bytes(source.read_bytes())
        entry_id, _ = retry_queue.enqueue(
            sop_instance_uid=f"1.2.3.{index}", sop_class_uid=CT_IMAGE_STORAGE,
            transfer_syntax=EXPLICIT_VR_LITTLE_ENDIAN, path=str(path), size=path.stat().st_size,
            destination="WS1", originator=("WS1", 1), move_id="m1", owner="move:m1", lease_seconds=60.0,
        )
        ids.append(entry_id)
    retry_queue.release("move:m1", now=retry_queue.utc_now() - timedelta(seconds=1))
    return ids


def _attempts(entry_id: int) -> int:
    with QueueEntry._meta.database.connection_context():
        return int(QueueEntry.get_by_id(entry_id).attempts)


def test_unreachable_destination_paused(tmp_path: Path) -> None:
    # Nothing listens on this port, so the association fails at once.
    workstation = WorkstationSettings(ae_title="WS1", host=LOOPBACK, port=free_port(), connect_timeout=1.0)
    config = Config(router=RouterSettings(state_dir=tmp_path), workstations=(workstation,))
    job = DeliveryJob(config, Spool(tmp_path), RetryPolicy(base=30.0, maximum=60.0),
                      DeliverySettings(poll_interval=60.0, batch_size=1))
    first, second = _queue_rows(tmp_path, 2)

    job.run()
    job.run()

    # The first run tried one row and failed to associate. The second run must
    # leave the destination alone, although its other row is due.
    assert _attempts(first) == 1
    assert _attempts(second) == 0
