"""End-to-end C-MOVE through yicrouter from NORTH, SOUTH and EAST to storescp workstations.

Run alone with `python -m pytest tests/test_e2e_move.py`, or every end-to-end
test with `python -m pytest -m e2e`.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import JPEGBaseline8Bit

from conftest import ROUTER_AE, Region
from harness.dcmtk import RetrieveResult, StoreSCP, run_movescu
from harness.router import RouterProcess
from yicrouter import status
from yicrouter.demo.seed import SeedStudy

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]


def _study_keys(study: SeedStudy) -> dict[str, str | None]:
    return {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": study.study_uid}


def _move_study(router: RouterProcess, study: SeedStudy, destination: str) -> RetrieveResult:
    return run_movescu(
        router.node, destination, _study_keys(study), calling_ae=destination, timeout=120.0
    )


def _assert_same_as_sources(region: Region, received: dict[str, Dataset]) -> None:
    for sop_uid, dataset in received.items():
        source = region.source_dataset(sop_uid)
        assert dataset.SOPClassUID == source.SOPClassUID, sop_uid
        assert dataset.StudyInstanceUID == source.StudyInstanceUID, sop_uid
        assert dataset.SeriesInstanceUID == source.SeriesInstanceUID, sop_uid
        assert dataset.file_meta.TransferSyntaxUID == source.file_meta.TransferSyntaxUID, sop_uid
        assert dataset.PixelData == source.PixelData, sop_uid


# Every study in the region, by the name of the trust that stores it. The shared
# study is stored at NORTH and EAST and is tested separately.
STUDY_CASES = [
    ("north", 0), ("north", 1),
    ("south", 0), ("south", 1),
    ("east", 0), ("east", 1),
]  # fmt: skip


@pytest.mark.parametrize(("trust_name", "index"), STUDY_CASES, ids=[f"{t}-{i + 1}" for t, i in STUDY_CASES])
def test_move_study_arrives_complete(
    region: Region, router: RouterProcess, ws1: StoreSCP, trust_name: str, index: int
) -> None:
    trust = {trust.name: trust for trust in region.trusts}[trust_name]
    study = trust.studies[index]
    seen_before = trust.requests_seen("Move")

    result = _move_study(router, study, "WS1")

    assert result.final_status == status.SUCCESS, result.describe()
    # Proves that requests_seen() counts requests, which the unknown
    # destination test relies on.
    assert trust.requests_seen("Move") > seen_before, f"{trust_name} was not asked"
    assert result.completed == len(study.files), result.describe()
    assert result.failed == 0, result.describe()
    ws1.wait_for_files(len(study.files))
    received = ws1.received_datasets()
    assert sorted(received) == sorted(study.sop_instance_uids)
    _assert_same_as_sources(region, received)
    assert len(ws1.received()) == len(study.files), "an instance arrived more than once"
    assert {item.calling_ae for item in ws1.received()} == {ROUTER_AE}


def test_move_keeps_jpeg_baseline_bytes(region: Region, router: RouterProcess, ws1: StoreSCP) -> None:
    study = region.north.studies[1]
    result = _move_study(router, study, "WS1")

    assert result.final_status == status.SUCCESS, result.describe()
    ws1.wait_for_files(len(study.files))
    jpeg = [
        dataset
        for dataset in ws1.received_datasets().values()
        if region.source_dataset(str(dataset.SOPInstanceUID)).file_meta.TransferSyntaxUID
        == JPEGBaseline8Bit
    ]
    assert len(jpeg) == 2
    for dataset in jpeg:
        source = region.source_dataset(str(dataset.SOPInstanceUID))
        assert dataset.file_meta.TransferSyntaxUID == JPEGBaseline8Bit
        assert dataset.PixelData == source.PixelData


def test_move_shared_study_delivers_once(region: Region, router: RouterProcess, ws1: StoreSCP) -> None:
    study = region.shared_study
    result = _move_study(router, study, "WS1")

    assert result.final_status == status.SUCCESS, result.describe()
    assert result.completed == len(study.files), result.describe()
    ws1.wait_for_files(len(study.files))
    received = ws1.received_datasets()
    assert sorted(received) == sorted(study.sop_instance_uids)
    _assert_same_as_sources(region, received)
    assert len(ws1.received()) == len(study.files), "an instance arrived more than once"


def test_move_series_level(region: Region, router: RouterProcess, ws1: StoreSCP) -> None:
    study = region.south.studies[1]
    series_uid = study.series_uids[1]
    expected = [uid for uid in study.sop_instance_uids if region.source_dataset(uid).SeriesInstanceUID == series_uid]
    keys = {
        "QueryRetrieveLevel": "SERIES",
        "StudyInstanceUID": study.study_uid,
        "SeriesInstanceUID": series_uid,
    }

    result = run_movescu(router.node, "WS1", keys, calling_ae="WS1")

    assert result.final_status == status.SUCCESS, result.describe()
    assert result.completed == len(expected), result.describe()
    ws1.wait_for_files(len(expected))
    assert sorted(ws1.received_datasets()) == sorted(expected)


def test_move_patient_root(region: Region, router: RouterProcess, ws1: StoreSCP) -> None:
    study = region.east.studies[0]
    keys = {"QueryRetrieveLevel": "PATIENT", "PatientID": study.patient_id}

    result = run_movescu(router.node, "WS1", keys, model="patient", calling_ae="WS1")

    assert result.final_status == status.SUCCESS, result.describe()
    ws1.wait_for_files(len(study.files))
    assert sorted(ws1.received_datasets()) == sorted(study.sop_instance_uids)


def test_move_to_unknown_destination(region: Region, router: RouterProcess) -> None:
    seen_before = {trust.name: trust.requests_seen("Move") for trust in region.trusts}

    result = run_movescu(
        router.node, "NOSUCHAE", _study_keys(region.north.studies[0]), calling_ae="WS1"
    )

    assert result.final_status == status.MOVE_DESTINATION_UNKNOWN, result.describe()
    for trust in region.trusts:
        assert trust.requests_seen("Move") == seen_before[trust.name], f"{trust.name} was asked"


def test_move_without_query_level(region: Region, router: RouterProcess, tmp_path: Path) -> None:
    identifier = Dataset()
    identifier.StudyInstanceUID = region.north.studies[0].study_uid
    query = tmp_path / "no-level.dcm"
    identifier.save_as(query, implicit_vr=False, little_endian=True)

    result = run_movescu(router.node, "WS1", query_file=query, calling_ae="WS1")

    assert result.final_status == status.MOVE_IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS, result.describe()


def test_move_patient_id_wildcard_fails(region: Region, router: RouterProcess) -> None:
    keys = {"QueryRetrieveLevel": "PATIENT", "PatientID": "P*"}
    seen_before = {trust.name: trust.requests_seen("Move") for trust in region.trusts}

    result = run_movescu(router.node, "WS1", keys, model="patient", calling_ae="WS1")

    assert result.final_status == status.MOVE_IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS, result.describe()
    for trust in region.trusts:
        assert trust.requests_seen("Move") == seen_before[trust.name], f"{trust.name} was asked"


def test_concurrent_moves_stay_separate(
    region: Region, router: RouterProcess, ws1: StoreSCP, ws2: StoreSCP
) -> None:
    first, second = region.north.studies[0], region.north.studies[1]

    with ThreadPoolExecutor(max_workers=2) as pool:
        first_move = pool.submit(_move_study, router, first, "WS1")
        second_move = pool.submit(_move_study, router, second, "WS2")
        first_result, second_result = first_move.result(), second_move.result()

    assert first_result.final_status == status.SUCCESS, first_result.describe()
    assert second_result.final_status == status.SUCCESS, second_result.describe()
    assert first_result.completed == len(first.files), first_result.describe()
    assert second_result.completed == len(second.files), second_result.describe()
    ws1.wait_for_files(len(first.files))
    ws2.wait_for_files(len(second.files))
    assert sorted(ws1.received_datasets()) == sorted(first.sop_instance_uids)
    assert sorted(ws2.received_datasets()) == sorted(second.sop_instance_uids)
    assert len(ws1.received()) == len(first.files)
    assert len(ws2.received()) == len(second.files)
