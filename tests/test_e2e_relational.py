"""Relational queries (PS3.4 C.4.1.2.2) from a workstation that negotiated them.

The workstation is a pynetdicom SCU that proposes relational queries in SOP
Class Extended Negotiation. The SamplePacs peers accept hierarchical queries
only: "plain" has no router option and fails, "tuned" has needs_parent_uids
and gets every parent UID. The real Orthanc 1.10.1 and dcmqrscp 3.6.7 take a
SERIES query whose StudyInstanceUID is universal, so they get it as is.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.pdu_primitives import SOPClassExtendedNegotiation
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelFind,
)

from harness.dcmqrscp import DcmqrscpServer
from harness.dcmtk import run_findscu
from harness.orthanc import OrthancServer
from harness.ports import LOOPBACK, DicomNode, free_port
from harness.quirk_region import WORKSTATION_AE, FakePeer, QuirkRegion, StudyRecipe, start_quirk_region
from harness.router import PeerEntry, RouterProcess, WorkstationEntry
from yicrouter import status
from yicrouter.demo.samplepacs import FaultOptions
from yicrouter.demo.seed import SeedStudy, build_study

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

RELATIONAL = b"\x01"
RECIPES = {
    "jan": StudyRecipe("REL-1", "Relational^Jan", "20240110"),
    "mar": StudyRecipe("REL-2", "Relational^Mar", "20240305", source="MR_small.dcm"),
}


@dataclass
class FindOutcome:
    final_status: int
    matches: list[Dataset]


def _associate(node: DicomNode, relational: bool, extra_classes: tuple[str, ...] = ()) -> Association:
    ae = AE(ae_title=WORKSTATION_AE)
    classes = (StudyRootQueryRetrieveInformationModelFind, *extra_classes)
    extended = []
    for sop_class in classes:
        ae.add_requested_context(sop_class)
        if relational:
            item = SOPClassExtendedNegotiation()
            item.sop_class_uid = sop_class
            item.service_class_application_information = RELATIONAL
            extended.append(item)
    assoc = ae.associate(LOOPBACK, node.port, ae_title=node.ae_title, ext_neg=extended or None)
    assert assoc.is_established
    return assoc


def find(node: DicomNode, keys: dict[str, str], relational: bool = True) -> FindOutcome:
    """Send a Study Root C-FIND, proposing relational queries when asked."""
    assoc = _associate(node, relational)
    identifier = Dataset()
    for keyword, value in keys.items():
        setattr(identifier, keyword, value)
    matches = []
    final = -1
    try:
        for rsp, match in assoc.send_c_find(identifier, StudyRootQueryRetrieveInformationModelFind):
            assert "Status" in rsp, "the router aborted the C-FIND or it timed out"
            final = int(rsp.Status)
            if match is not None and status.is_pending(final):
                matches.append(match)
    finally:
        assoc.release()
    return FindOutcome(final, matches)


def _series_uids(outcome: FindOutcome) -> set[str]:
    return {str(match.SeriesInstanceUID) for match in outcome.matches}


def _study_series(study: SeedStudy) -> set[str]:
    return {str(dcmread(path, stop_before_pixels=True).SeriesInstanceUID) for path in study.files}


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[..., QuirkRegion]]:
    regions: list[QuirkRegion] = []

    def start_region(*fake_peers: FakePeer) -> QuirkRegion:
        region = start_quirk_region(tmp_path / f"region-{len(regions)}", RECIPES, list(fake_peers))
        regions.append(region)
        return region

    yield start_region
    for region in regions:
        region.stop()


def _pair() -> tuple[FakePeer, FakePeer]:
    faults = FaultOptions(record_identifiers=True)
    return (FakePeer("plain", faults, ("jan", "mar")),
            FakePeer("tuned", faults, ("jan", "mar"), {"needs_parent_uids": True}))


def _completed(region: QuirkRegion) -> str:
    return region.router.wait_for_log(r"find_completed[^\n]*").group(0)


# --- Negotiation ------------------------------------------------------------------------------


def test_relational_negotiation_accepted(start: Callable[..., QuirkRegion]) -> None:
    region = start(FakePeer("tuned", FaultOptions(), ("jan",), {"needs_parent_uids": True}))
    assoc = _associate(region.router.node, relational=True,
                       extra_classes=(PatientRootQueryRetrieveInformationModelMove,))
    try:
        accepted = {str(uid): info for uid, info in assoc.acceptor.sop_class_extended.items()}
    finally:
        assoc.release()
    assert accepted[StudyRootQueryRetrieveInformationModelFind] == RELATIONAL
    assert accepted[PatientRootQueryRetrieveInformationModelMove] == RELATIONAL


def test_missing_parent_rejected_without_negotiation(start: Callable[..., QuirkRegion]) -> None:
    region = start(FakePeer("tuned", FaultOptions(record_identifiers=True), ("jan",), {"needs_parent_uids": True}))
    keys = {"QueryRetrieveLevel": "SERIES", "SeriesInstanceUID": "", "Modality": ""}

    outcome = find(region.router.node, keys, relational=False)
    assert outcome.final_status == status.FIND_IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS
    assert outcome.matches == []

    dcmtk = run_findscu(region.router.node, {**keys, "Modality": None}, calling_ae=WORKSTATION_AE)
    assert dcmtk.final_status == status.FIND_IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS, dcmtk.describe()
    assert region.peers["tuned"].find_identifiers == []


# --- needs_parent_uids ------------------------------------------------------------------------


def test_relational_series_fills_parent_uids(start: Callable[..., QuirkRegion]) -> None:
    region = start(*_pair())
    outcome = find(region.router.node, {"QueryRetrieveLevel": "SERIES", "SeriesInstanceUID": "", "Modality": "",
                                        "StudyInstanceUID": ""})
    assert outcome.final_status == status.SUCCESS
    expected = _study_series(region.studies["jan"]) | _study_series(region.studies["mar"])
    assert _series_uids(outcome) == expected
    for match in outcome.matches:
        assert str(match.StudyInstanceUID) in {study.study_uid for study in region.studies.values()}
    completed = _completed(region)
    # The plain peer rejects a SERIES query without StudyInstanceUID, as hierarchical-only PACS do.
    assert "failed_peers=['plain']" in completed
    assert "relational=True" in completed
    levels = [str(ds.QueryRetrieveLevel) for ds in region.peers["tuned"].find_identifiers]
    assert levels == ["STUDY", "SERIES", "SERIES"]
    series_requests = region.peers["tuned"].find_identifiers[1:]
    assert {str(ds.StudyInstanceUID) for ds in series_requests} == {s.study_uid for s in region.studies.values()}


def test_relational_upper_key_selects_study(start: Callable[..., QuirkRegion]) -> None:
    region = start(*_pair())
    outcome = find(region.router.node, {"QueryRetrieveLevel": "SERIES", "SeriesInstanceUID": "",
                                        "PatientName": "Relational^M*", "StudyDate": ""})
    assert outcome.final_status == status.SUCCESS
    assert _series_uids(outcome) == _study_series(region.studies["mar"])
    assert [str(match.StudyDate) for match in outcome.matches] == ["20240305"]
    assert [str(match.PatientName) for match in outcome.matches] == ["Relational^Mar"]
    # The plain peer also gets the STUDY query first, then SERIES queries with a parent UID, which it accepts.
    assert "failed_peers=[]" in _completed(region)
    tuned = region.peers["tuned"].find_identifiers
    assert [str(ds.QueryRetrieveLevel) for ds in tuned] == ["STUDY", "SERIES"]
    assert str(tuned[0].PatientName) == "Relational^M*"


def test_relational_image_uses_routing_table(start: Callable[..., QuirkRegion]) -> None:
    region = start(FakePeer("tuned", FaultOptions(record_identifiers=True), ("jan",), {"needs_parent_uids": True}))
    study = region.studies["jan"]
    series_uid = next(iter(_study_series(study)))
    first = find(region.router.node, {"QueryRetrieveLevel": "SERIES", "SeriesInstanceUID": ""})
    assert _series_uids(first) == {series_uid}
    region.router.wait_for_log(r"find_completed")

    images = find(region.router.node, {"QueryRetrieveLevel": "IMAGE", "SeriesInstanceUID": series_uid,
                                       "SOPInstanceUID": ""})
    assert images.final_status == status.SUCCESS
    assert {str(match.SOPInstanceUID) for match in images.matches} == set(study.sop_instance_uids)
    last = region.peers["tuned"].find_identifiers[-1]
    # The series was seen at this peer, so the IMAGE query goes out at once with its StudyInstanceUID.
    assert str(last.QueryRetrieveLevel) == "IMAGE"
    assert str(last.StudyInstanceUID) == study.study_uid
    assert len(region.peers["tuned"].find_identifiers) == 3


# --- Real peers without needs_parent_uids ------------------------------------------------------


@dataclass
class RealRegion:
    router: RouterProcess
    ct: SeedStudy
    mr: SeedStudy


@pytest.fixture(scope="module")
def real_region(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealRegion]:
    work_dir = tmp_path_factory.mktemp("relational")
    ct = build_study(work_dir / "seed" / "ct", patient_id="REL-CT", patient_name="Relational^Ct",
                     accession_number="RELCT", study_date="20240110", sources=("CT_small.dcm",))
    mr = build_study(work_dir / "seed" / "mr", patient_id="REL-MR", patient_name="Relational^Mr",
                     accession_number="RELMR", study_date="20240305", sources=("MR_small.dcm",))
    north = OrthancServer("NORTH", "NORTHPACS", work_dir / "north", allow_unknown_callers=True)
    east = DcmqrscpServer("EAST", "EASTPACS", work_dir / "east", allow_unknown_callers=True)
    router: RouterProcess | None = None
    try:
        north.start_process()
        east.start_process()
        north.wait_until_ready()
        east.wait_until_ready()
        north.seed(ct.files)
        east.seed(mr.files)
        router = RouterProcess(
            work_dir / "router", ae_title="YICROUTER", port=free_port(),
            peers=[PeerEntry("north", north.node, find_deadline=10.0), PeerEntry("east", east.node, find_deadline=10.0)],
            workstations=[WorkstationEntry(DicomNode(WORKSTATION_AE, free_port()))],
        )
        router.start()
        yield RealRegion(router, ct, mr)
    finally:
        if router is not None:
            router.stop()
        north.stop()
        east.stop()


def test_real_peers_relational_series(real_region: RealRegion) -> None:
    outcome = find(real_region.router.node, {"QueryRetrieveLevel": "SERIES", "SeriesInstanceUID": "",
                                             "StudyInstanceUID": "", "Modality": ""})
    assert outcome.final_status == status.SUCCESS
    by_modality = {str(match.Modality): str(match.StudyInstanceUID) for match in outcome.matches}
    assert by_modality == {"CT": real_region.ct.study_uid, "MR": real_region.mr.study_uid}


def test_real_peers_relational_modality_key(real_region: RealRegion) -> None:
    outcome = find(real_region.router.node, {"QueryRetrieveLevel": "SERIES", "SeriesInstanceUID": "",
                                             "Modality": "MR"})
    assert outcome.final_status == status.SUCCESS
    assert _series_uids(outcome) == _study_series(real_region.mr)


def test_real_peers_relational_study_date(real_region: RealRegion) -> None:
    outcome = find(real_region.router.node, {"QueryRetrieveLevel": "SERIES", "SeriesInstanceUID": "",
                                             "StudyDate": "20240101-20240131", "Modality": ""})
    assert outcome.final_status == status.SUCCESS
    assert [str(match.Modality) for match in outcome.matches] == ["CT"]
    assert [str(match.StudyDate) for match in outcome.matches] == ["20240110"]
