"""End-to-end C-GET: workstations retrieve through yicrouter, and yicrouter retrieves from peers by C-GET.

The requester is DCMTK getscu, or a pynetdicom SCU where the test needs a
requester that proposes no SCP role for one SOP Class, which getscu 3.6.7
can't be made to do. Orthanc 1.10.1 can't act as C-GET requester: its REST
API has no C-GET route, and Orthanc's C-GET SCU was first committed in
October 2024, long after 1.10.1.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.dataset import Dataset

from conftest import Region, RouterFactory, Trust
from harness.dcmtk import RetrieveResult, StoreSCP, run_getscu, run_movescu
from harness.fake_peers import FakeRegion, PeerSpec, StudyRecipe
from harness.orthanc import OrthancServer
from harness.retrieve_scu import run_get, study_identifier
from harness.router import PeerEntry, RouterProcess
from harness.waiting import wait_for
from yicrouter import status
from yicrouter.demo.samplepacs import FaultOptions
from yicrouter.demo.seed import SeedStudy

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"


def _study_keys(study: SeedStudy) -> dict[str, str | None]:
    return {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": study.study_uid}


def _get_study(router: RouterProcess, study: SeedStudy, output_dir: Path) -> RetrieveResult:
    return run_getscu(router.node, output_dir, _study_keys(study), calling_ae="WS1", timeout=120.0)


def _received(result: RetrieveResult) -> dict[str, Dataset]:
    from pydicom import dcmread

    datasets = [dcmread(path) for path in result.received_files]
    return {str(ds.SOPInstanceUID): ds for ds in datasets}


def _assert_same_as_sources(region: Region, received: dict[str, Dataset]) -> None:
    for sop_uid, dataset in received.items():
        source = region.source_dataset(sop_uid)
        assert dataset.SOPClassUID == source.SOPClassUID, sop_uid
        assert dataset.SeriesInstanceUID == source.SeriesInstanceUID, sop_uid
        assert dataset.PixelData == source.PixelData, sop_uid


def _get_spool_files(router: RouterProcess) -> list[Path]:
    return list((router.state_dir / "spool" / "jobs").glob("get-*/*"))


def _queue_rows(router: RouterProcess) -> int:
    import sqlite3

    with sqlite3.connect(router.state_dir / "yicrouter.sqlite3") as connection:
        return int(connection.execute("SELECT COUNT(*) FROM queue_entry").fetchone()[0])


# Studies with uncompressed instances only, because getscu proposes only
# uncompressed transfer syntaxes, by the name of the trust that stores them.
GET_CASES = [("north", 0), ("south", 0), ("east", 0), ("east", 1)]


@pytest.mark.parametrize(("trust_name", "index"), GET_CASES, ids=[f"{t}-{i + 1}" for t, i in GET_CASES])
def test_get_study_arrives_complete(
    region: Region, router: RouterProcess, tmp_path: Path, trust_name: str, index: int
) -> None:
    trust = {trust.name: trust for trust in region.trusts}[trust_name]
    study = trust.studies[index]

    result = _get_study(router, study, tmp_path / "getscu")

    assert result.final_status == status.SUCCESS, result.describe()
    assert result.completed == len(study.files), result.describe()
    assert result.failed == 0, result.describe()
    received = _received(result)
    assert sorted(received) == sorted(study.sop_instance_uids)
    _assert_same_as_sources(region, received)
    assert _get_spool_files(router) == [], "C-GET spool files were left behind"


def test_get_shared_study_once(region: Region, router: RouterProcess, tmp_path: Path) -> None:
    study = region.shared_study

    result = _get_study(router, study, tmp_path / "getscu")

    assert result.final_status == status.SUCCESS, result.describe()
    assert sorted(_received(result)) == sorted(study.sop_instance_uids)
    assert len(result.received_files) == len(study.files), "an instance arrived more than once"


def test_get_pending_counts_rise(region: Region, router: RouterProcess, tmp_path: Path) -> None:
    study = region.east.studies[1]

    result = _get_study(router, study, tmp_path / "getscu")

    pending = [message for message in result.responses("C-GET RSP") if message.status == status.PENDING]
    completed = [message.suboperations("Completed") for message in pending]
    assert pending, result.describe()
    assert completed == sorted(completed), "Completed counts went backwards"
    assert result.final_status == status.SUCCESS, result.describe()


def test_get_without_scp_role_fails_those(region: Region, router: RouterProcess) -> None:
    study = region.shared_study
    ct_uids = sorted(uid for uid in study.sop_instance_uids
                     if region.source_dataset(uid).SOPClassUID == CT_IMAGE_STORAGE)
    mr_uids = sorted(uid for uid in study.sop_instance_uids
                     if region.source_dataset(uid).SOPClassUID == MR_IMAGE_STORAGE)
    assert ct_uids and mr_uids
    before = router.log_text().count("get_sop_class_not_accepted")

    run = run_get(router.node, "WS1", study_identifier(study.study_uid),
                  scp_role_for=[MR_IMAGE_STORAGE], without_role=[CT_IMAGE_STORAGE])

    final = run.final
    assert final.code == status.GET_SUBOPERATIONS_WARNING
    assert final.count("Completed") == len(mr_uids)
    assert final.count("Failed") == len(ct_uids)
    assert final.identifier is not None
    assert sorted(final.identifier.FailedSOPInstanceUIDList) == ct_uids
    assert sorted(uid for _, uid in run.stored) == mr_uids
    router.wait_for_log(r"get_completed")
    events = router.log_text().count("get_sop_class_not_accepted") - before
    assert events == 1, "expected one log event for the one SOP Class without the SCP role"
    assert re.search(r"get_sop_class_not_accepted.*1\.2\.840\.10008\.5\.1\.4\.1\.1\.2\b", router.log_text())


def test_get_leaves_no_queue_rows(region: Region, router: RouterProcess) -> None:
    study = region.north.studies[0]

    run = run_get(router.node, "WS1", study_identifier(study.study_uid), scp_role_for=[MR_IMAGE_STORAGE],
                  without_role=[CT_IMAGE_STORAGE])

    assert run.final.code == status.GET_OUT_OF_RESOURCES_SUBOPERATIONS
    assert run.final.count("Failed") == len(study.files)
    assert run.stored == []
    assert _queue_rows(router) == 0, "failed C-GET sub-operations must not become retry-queue rows"
    assert _get_spool_files(router) == []


def test_get_from_unknown_caller_refused(region: Region, router: RouterProcess, tmp_path: Path) -> None:
    result = run_getscu(router.node, tmp_path / "getscu", _study_keys(region.north.studies[0]),
                        calling_ae="NOTAWS", timeout=30.0)

    assert result.received_files == []
    assert result.final_status != status.SUCCESS, result.describe()


def test_get_without_query_level(region: Region, router: RouterProcess, tmp_path: Path) -> None:
    identifier = Dataset()
    identifier.StudyInstanceUID = region.north.studies[0].study_uid
    query = tmp_path / "no-level.dcm"
    identifier.save_as(query, implicit_vr=False, little_endian=True)

    result = run_getscu(router.node, tmp_path / "getscu", query_file=query, calling_ae="WS1")

    assert result.final_status == status.GET_IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS, result.describe()


# --- Peers retrieved with C-GET -----------------------------------------------------


@pytest.fixture
def get_router(region: Region, make_router: RouterFactory) -> RouterProcess:
    """A router that retrieves from every peer with C-GET, on a port the peers don't know."""
    peers = [PeerEntry(trust.name, trust.node, find_deadline=5.0, extra={"retrieve": "c-get"})
             for trust in region.trusts]
    return make_router(peers=peers)


PEER_GET_CASES = [("north", 0), ("east", 0), ("east", 1)]


@pytest.mark.parametrize(("trust_name", "index"), PEER_GET_CASES, ids=[f"{t}-{i + 1}" for t, i in PEER_GET_CASES])
def test_move_from_get_peer(
    region: Region, get_router: RouterProcess, ws1: StoreSCP, trust_name: str, index: int
) -> None:
    trust: Trust = {trust.name: trust for trust in region.trusts}[trust_name]
    study = trust.studies[index]
    gets_before, moves_before = trust.requests_seen("Get"), trust.requests_seen("Move")

    result = run_movescu(get_router.node, "WS1", _study_keys(study), calling_ae="WS1", timeout=120.0)

    assert result.final_status == status.SUCCESS, result.describe()
    assert result.completed == len(study.files), result.describe()
    ws1.wait_for_files(len(study.files))
    received = ws1.received_datasets()
    assert sorted(received) == sorted(study.sop_instance_uids)
    _assert_same_as_sources(region, received)
    assert trust.requests_seen("Get") > gets_before, f"{trust_name} got no C-GET"
    assert trust.requests_seen("Move") == moves_before, f"{trust_name} got a C-MOVE"


def test_get_through_get_peer(region: Region, get_router: RouterProcess, tmp_path: Path) -> None:
    study = region.south.studies[0]

    result = _get_study(get_router, study, tmp_path / "getscu")

    assert result.final_status == status.SUCCESS, result.describe()
    received = _received(result)
    assert sorted(received) == sorted(study.sop_instance_uids)
    _assert_same_as_sources(region, received)
    assert _get_spool_files(get_router) == []


def test_get_peer_keeps_jpeg_bytes(region: Region, get_router: RouterProcess, ws1: StoreSCP) -> None:
    study = region.north.studies[1]

    result = run_movescu(get_router.node, "WS1", _study_keys(study), calling_ae="WS1", timeout=120.0)

    assert result.final_status == status.SUCCESS, result.describe()
    ws1.wait_for_files(len(study.files))
    for sop_uid, dataset in ws1.received_datasets().items():
        source = region.source_dataset(sop_uid)
        assert dataset.file_meta.TransferSyntaxUID == source.file_meta.TransferSyntaxUID, sop_uid
        assert dataset.PixelData == source.PixelData, sop_uid


# --- A peer that rejects SCP/SCU Role Selection ------------------------------------


@pytest.fixture
def no_role_region(tmp_path: Path) -> Iterator[FakeRegion]:
    region = FakeRegion(tmp_path)
    try:
        yield region.start(
            {"norole": PeerSpec(FaultOptions(reject_role_selection=True), ("a", "b"), {"retrieve": "c-get"})},
            {"a": StudyRecipe("FAKE-a", "CT_small.dcm", 3), "b": StudyRecipe("FAKE-b", "MR_small.dcm", 2)},
        )
    finally:
        region.stop()


def test_peer_without_roles_falls_back_to_move(no_role_region: FakeRegion, tmp_path: Path) -> None:
    region = no_role_region
    assert region.router is not None
    ws1 = StoreSCP("WS1", tmp_path / "ws1", port=region.workstations["WS1"].port).start()
    try:
        for name in ("a", "b"):
            study = region.studies[name]
            result = run_movescu(region.node, "WS1", _study_keys(study), calling_ae="WS1", timeout=60.0)
            assert result.final_status == status.SUCCESS, result.describe()
            assert result.completed == len(study.files), result.describe()
        expected = sorted(uid for name in ("a", "b") for uid in region.studies[name].sop_instance_uids)
        ws1.wait_for_files(len(expected))
        assert sorted(ws1.received_datasets()) == expected
    finally:
        ws1.stop()
    log_text = region.router.log_text()
    assert log_text.count("peer_get_unsupported") == 1, "the fallback must be logged once per peer"
    assert re.search(r"peer_get_unsupported.*peer=norole", log_text)


def test_get_requester_through_fallback_peer(no_role_region: FakeRegion) -> None:
    study = no_role_region.studies["a"]

    run = run_get(no_role_region.node, "WS1", study_identifier(study.study_uid), scp_role_for=[CT_IMAGE_STORAGE])

    assert run.final.code == status.SUCCESS
    assert run.final.count("Completed") == len(study.files)
    assert sorted(uid for _, uid in run.stored) == sorted(study.sop_instance_uids)
    assert no_role_region.router is not None
    wait_for(lambda: "get_completed" in no_role_region.router.log_text(), timeout=10.0)


# --- More SOP Classes than one association has presentation contexts for ----------

# Twelve storage SOP Classes that storescp and Orthanc both accept. With one
# uncompressed and ten compressed contexts each, they need two associations.
MANY_SOP_CLASSES = [
    "1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.4", "1.2.840.10008.5.1.4.1.1.1",
    "1.2.840.10008.5.1.4.1.1.1.1", "1.2.840.10008.5.1.4.1.1.1.2", "1.2.840.10008.5.1.4.1.1.6.1",
    "1.2.840.10008.5.1.4.1.1.7", "1.2.840.10008.5.1.4.1.1.20", "1.2.840.10008.5.1.4.1.1.12.1",
    "1.2.840.10008.5.1.4.1.1.12.2", "1.2.840.10008.5.1.4.1.1.128", "1.2.840.10008.5.1.4.1.1.481.1",
]


@pytest.fixture
def many_classes_peer(region: Region, tmp_path: Path) -> Iterator[tuple[OrthancServer, SeedStudy]]:
    """An Orthanc holding one study whose instances have twelve different SOP Classes."""
    from pydicom import dcmread

    from yicrouter.demo.seed import build_study

    study = build_study(tmp_path / "seed", patient_id="MANY-0001", patient_name="Many^Classes",
                        accession_number="MANY0001", study_date="20240501", sources=("CT_small.dcm",),
                        instances_per_source=len(MANY_SOP_CLASSES))
    for path, sop_class in zip(study.files, MANY_SOP_CLASSES):
        dataset = dcmread(path)
        dataset.SOPClassUID = sop_class
        dataset.file_meta.MediaStorageSOPClassUID = sop_class
        dataset.save_as(path)
    server = OrthancServer("MANY", "MANYPACS", tmp_path / "orthanc", modalities={"router": region.router_node})
    try:
        server.start()
        server.seed(study.files)
        yield server, study
    finally:
        server.stop()


def test_get_peer_over_two_associations(
    many_classes_peer: tuple[OrthancServer, SeedStudy], make_router: RouterFactory, ws1: StoreSCP
) -> None:
    server, study = many_classes_peer
    router = make_router(peers=[PeerEntry("many", server.node, find_deadline=5.0, extra={"retrieve": "c-get"})])

    result = run_movescu(router.node, "WS1", _study_keys(study), calling_ae="WS1", timeout=120.0)

    assert result.final_status == status.SUCCESS, result.describe()
    assert result.completed == len(study.files), result.describe()
    assert result.failed == 0, result.describe()
    ws1.wait_for_files(len(study.files))
    received = ws1.received_datasets()
    assert sorted(received) == sorted(study.sop_instance_uids)
    assert {str(dataset.SOPClassUID) for dataset in received.values()} == set(MANY_SOP_CLASSES)
    assert server.log_text().count("Incoming Get request") >= 2, "the second association sent no C-GET"
