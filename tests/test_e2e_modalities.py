"""ModalitiesInStudy and SOPClassesInStudy through the router to peers that leave them out.

EAST is a DCMTK dcmqrscp 3.6.7, which ignores ModalitiesInStudy and
SOPClassesInStudy in a STUDY-level C-FIND and leaves both out of its
matches. NORTH is an Orthanc, which matches ModalitiesInStudy itself. Both
store the same CT study and MR study, so a study that one peer lets through
wrongly still reaches the workstation unless the router removes it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness.dcmqrscp import DcmqrscpServer
from harness.dcmtk import FindResult, run_findscu
from harness.orthanc import OrthancServer
from harness.ports import DicomNode, free_port
from harness.router import PeerEntry, RouterProcess, WorkstationEntry
from yicrouter import status
from yicrouter.demo.seed import SeedStudy, build_study

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

ROUTER_AE = "YICROUTER"
WORKSTATION_AE = "WS1"
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


@dataclass
class ModalityRegion:
    router: RouterProcess
    east: DcmqrscpServer
    north: OrthancServer
    ct: SeedStudy
    mr: SeedStudy


@pytest.fixture(scope="module")
def region(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModalityRegion]:
    work_dir = tmp_path_factory.mktemp("modalities")
    ct = build_study(work_dir / "seed" / "ct", patient_id="MOD-CT", patient_name="Modality^Ct",
                     accession_number="MODCT", study_date="20240301", sources=("CT_small.dcm",))
    mr = build_study(work_dir / "seed" / "mr", patient_id="MOD-MR", patient_name="Modality^Mr",
                     accession_number="MODMR", study_date="20240302", sources=("MR_small.dcm",))
    east = DcmqrscpServer("EAST", "EASTPACS", work_dir / "east", allow_unknown_callers=True)
    north = OrthancServer("NORTH", "NORTHPACS", work_dir / "north", allow_unknown_callers=True)
    router: RouterProcess | None = None
    try:
        east.start_process()
        north.start_process()
        east.wait_until_ready()
        north.wait_until_ready()
        east.seed([*ct.files, *mr.files])
        north.seed([*ct.files, *mr.files])
        router = RouterProcess(
            work_dir / "router", ae_title=ROUTER_AE, port=free_port(),
            peers=[PeerEntry("east", east.node, find_deadline=10.0), PeerEntry("north", north.node, find_deadline=10.0)],
            workstations=[WorkstationEntry(DicomNode(WORKSTATION_AE, free_port()))],
        )
        router.start()
        yield ModalityRegion(router, east, north, ct, mr)
    finally:
        if router is not None:
            router.stop()
        east.stop()
        north.stop()


def _find(node: DicomNode, keys: dict[str, str | None]) -> FindResult:
    request: dict[str, str | None] = {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": None}
    request.update(keys)
    result = run_findscu(node, request, calling_ae=WORKSTATION_AE, timeout=30.0)
    assert result.final_status == status.SUCCESS, result.describe()
    return result


def _study_uids(result: FindResult) -> set[str]:
    return {str(response.StudyInstanceUID) for response in result.datasets}


def _values(value: object) -> list[str]:
    return [value] if isinstance(value, str) else [str(item) for item in value]  # type: ignore[attr-defined]


def _last_completed(router: RouterProcess, count: int) -> str:
    """Wait for the `count`-th find_completed event and return it."""
    router.wait_for_log(r"(?s)(find_completed.*){%d}" % count, timeout=15.0)
    return re.findall(r"find_completed[^\n]*", router.log_text())[-1]


def test_dcmqrscp_ignores_modality_key(region: ModalityRegion) -> None:
    """The quirk itself: dcmqrscp returns the MR study for a CT query, without ModalitiesInStudy."""
    direct = _find(region.east.node, {"ModalitiesInStudy": "CT"})
    assert _study_uids(direct) == {region.ct.study_uid, region.mr.study_uid}
    for response in direct.datasets:
        assert "ModalitiesInStudy" not in response


def test_orthanc_matches_modality_key(region: ModalityRegion) -> None:
    direct = _find(region.north.node, {"ModalitiesInStudy": "CT"})
    assert _study_uids(direct) == {region.ct.study_uid}
    assert _values(direct.datasets[0].ModalitiesInStudy) == ["CT"]


def test_ct_query_returns_ct_study_only(region: ModalityRegion) -> None:
    before = region.router.log_text().count("find_completed")
    result = _find(region.router.node, {"ModalitiesInStudy": "CT"})
    assert _study_uids(result) == {region.ct.study_uid}
    assert _values(result.datasets[0].ModalitiesInStudy) == ["CT"]
    completed = _last_completed(region.router, before + 1)
    # Only dcmqrscp's two studies lacked the key, and Orthanc's matches needed nothing.
    assert "derived_by_peer={'east': 2}" in completed
    assert "failed_peers=[]" in completed


def test_ct_or_mr_query_returns_both(region: ModalityRegion) -> None:
    result = _find(region.router.node, {"ModalitiesInStudy": "CT\\MR", "PatientID": None})
    assert _study_uids(result) == {region.ct.study_uid, region.mr.study_uid}
    modalities = {str(response.PatientID): _values(response.ModalitiesInStudy) for response in result.datasets}
    assert modalities == {"MOD-CT": ["CT"], "MOD-MR": ["MR"]}


def test_mr_query_with_other_keys(region: ModalityRegion) -> None:
    result = _find(region.router.node, {"ModalitiesInStudy": "MR", "StudyDate": "20240301-20240331"})
    assert _study_uids(result) == {region.mr.study_uid}


def test_modality_return_key_not_derived(region: ModalityRegion) -> None:
    before = region.router.log_text().count("find_completed")
    result = _find(region.router.node, {"ModalitiesInStudy": None})
    assert _study_uids(result) == {region.ct.study_uid, region.mr.study_uid}
    completed = _last_completed(region.router, before + 1)
    assert "derived_by_peer={}" in completed


def test_sop_classes_underivable_kept(region: ModalityRegion) -> None:
    """dcmqrscp returns SOPClassUID at no level, so SOPClassesInStudy can't be derived there.

    The router keeps those studies, as it keeps any match without the key,
    and still derives ModalitiesInStudy from the same SERIES query. Orthanc
    1.10.1 returns no match at all for a SOPClassesInStudy matching key.
    """
    direct = _find(region.north.node, {"SOPClassesInStudy": CT_IMAGE_STORAGE})
    assert direct.datasets == []

    before = region.router.log_text().count("find_completed")
    result = _find(region.router.node, {"SOPClassesInStudy": CT_IMAGE_STORAGE, "ModalitiesInStudy": None,
                                        "PatientID": None})
    assert _study_uids(result) == {region.ct.study_uid, region.mr.study_uid}
    for response in result.datasets:
        assert "SOPClassesInStudy" not in response or not response.SOPClassesInStudy
    modalities = {str(response.PatientID): _values(response.ModalitiesInStudy) for response in result.datasets}
    assert modalities == {"MOD-CT": ["CT"], "MOD-MR": ["MR"]}
    assert "derived_by_peer={'east': 2}" in _last_completed(region.router, before + 1)
