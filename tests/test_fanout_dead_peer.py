"""A fan-out learns that a peer is down as soon as its connection is refused.

Only an association that ends before any A-ASSOCIATE response counts:
a peer that aborts instead of releasing was searched.

When the TCP connection is refused, pynetdicom 3.0.4 aborts the association
and then sleeps 0.1 s before associate() returns. The fan-out takes the
failure from the association's EVT_ABORTED instead, so the other peers'
final response does not wait for that sleep.
"""

from __future__ import annotations

from pathlib import Path

from pydicom.dataset import Dataset

from harness.abort_on_release import AbortOnReleaseProxy
from harness.ports import free_port
from yicrouter.config import PeerSettings
from yicrouter.demo.samplepacs import SamplePacs
from yicrouter.demo.seed import build_study
from yicrouter.dialect import plan_find
from yicrouter.fanout import Fanout
from yicrouter.peer_client import ASSOCIATION_FAILED
from yicrouter.query import InformationModel, parse_find


def test_refused_connection_ends_fanout_early() -> None:
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


def test_abort_on_release_not_failure(tmp_path: Path) -> None:
    """A peer that replies to A-RELEASE-RQ with A-ABORT still counts as searched, with all its matches."""
    study = build_study(tmp_path / "seed", patient_id="ABORTREL1", patient_name="Abort^Release",
                        accession_number="AR1", sources=("CT_small.dcm",), instances_per_source=1)
    pacs = SamplePacs("ABORTPACS", free_port(), study.files, move_destinations={})
    pacs.start()
    proxy = AbortOnReleaseProxy(pacs.port)
    try:
        peer = PeerSettings(name="aborter", ae_title="ABORTPACS", host="127.0.0.1", port=proxy.port)
        identifier = Dataset()
        identifier.QueryRetrieveLevel = "STUDY"
        identifier.PatientID = "ABORTREL1"
        identifier.StudyInstanceUID = ""
        query = parse_find(InformationModel.STUDY_ROOT, identifier)
        fanout = Fanout((peer,), "FANOUTTEST", 65536, {})
        matches = list(fanout.matches({"aborter": plan_find(peer, query, identifier)}))
    finally:
        proxy.close()
        pacs.stop()
    assert [str(match.StudyInstanceUID) for _, match in matches] == [study.study_uid]
    assert fanout.result.failed_peers == {}
    assert fanout.result.requests_by_peer == {"aborter": 1}
