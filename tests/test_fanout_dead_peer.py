"""A fan-out learns that a peer is down as soon as its connection is refused.

When the TCP connection is refused, pynetdicom 3.0.4 aborts the association
and then sleeps 0.1 s before associate() returns. The fan-out takes the
failure from the association's EVT_ABORTED instead, so the other peers'
final response does not wait for that sleep.
"""

from __future__ import annotations

from pydicom.dataset import Dataset

from harness.ports import free_port
from yicrouter.config import PeerSettings
from yicrouter.dialect import plan_find
from yicrouter.fanout import Fanout
from yicrouter.peer_client import ASSOCIATION_FAILED
from yicrouter.query import InformationModel, parse_find


def test_refused_connection_ends_the_fanout_before_associate_returns() -> None:
    dead = PeerSettings(name="dead", ae_title="DEADPACS", host="127.0.0.1", port=free_port())
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.PatientID = "DEAD*"
    query = parse_find(InformationModel.STUDY_ROOT, identifier)
    fanout = Fanout((dead,), "FANOUTTEST", 65536, {})
    matches = list(fanout.matches({"dead": plan_find(dead, query, identifier)}))
    assert matches == []
    assert fanout.result.failed_peers == {"dead": ASSOCIATION_FAILED}
    assert fanout.result.requests_by_peer == {"dead": 0}
    assert fanout.result.unfinished_peers == []
    # associate() has not returned yet: PeerCall keeps the association only
    # after it returns, and pynetdicom is still in its 0.1 s sleep.
    assert fanout.calls["dead"]._assoc is None
