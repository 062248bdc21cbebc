"""Every form of matching key through the router to real peers, and re-matching of their matches.

NORTH is an Orthanc and EAST a DCMTK dcmqrscp. Each stores two of four studies
with different dates, times, names and modalities, so every expected answer
needs matches from both. IGNORER is a pynetdicom fake that ignores
ModalitiesInStudy but returns its value, as some PACS do; it is the only
peer that returns a non-matching study on demand, because dcmqrscp 3.6.7
leaves ModalitiesInStudy out of its matches altogether and Orthanc 1.10.1
applies it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.pdu_primitives import SOPClassExtendedNegotiation
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind  # type: ignore[attr-defined]

from harness.dcmqrscp import DcmqrscpServer
from harness.dcmtk import FindResult, run_findscu
from harness.derived_files import derive_file, requested_procedure_items
from harness.orthanc import OrthancServer
from harness.ports import LOOPBACK, DicomNode, free_port
from harness.recording_peer import RecordingFindPeer
from harness.router import PeerEntry, RouterProcess, WorkstationEntry
from yicrouter import status

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

ROUTER_AE = "YICROUTER"


@dataclass(frozen=True)
class Study:
    name: str
    uid: str
    series_uids: tuple[str, ...]


@dataclass
class MatchingRegion:
    router: RouterProcess
    modality_router: RouterProcess
    ignorer: RecordingFindPeer
    north: DicomNode
    studies: dict[str, Study]


# Name: (source, Patient's Name, StudyDate, StudyTime, held by).
STUDY_SPECS = {
    "early": ("CT_small.dcm", "Range^Early", "20240105", "090000", "north"),
    "middle": ("MR_small.dcm", "Range^Middle", "20240115", "150000", "east"),
    "late": ("CT_small.dcm", "Range^Late", "20240131", "110000", "north"),
    "other": ("CT_small.dcm", "Other^Person", "20240210", "100000", "east"),
}


def _seed_files(seed_dir: Path) -> tuple[dict[str, Study], dict[str, list[Path]]]:
    studies: dict[str, Study] = {}
    held: dict[str, list[Path]] = {"north": [], "east": []}
    for name, (source, patient_name, study_date, study_time, holder) in STUDY_SPECS.items():
        # The early study has two series, distinguished by their Requested Procedure IDs.
        items = [requested_procedure_items("RP1", "RP2"), requested_procedure_items("RP3")] if name == "early" else None
        paths = derive_file(
            source, seed_dir / f"{name}.dcm", series_count=2 if items else 1, series_items=items,
            PatientName=patient_name, PatientID=f"M-{name}", StudyDate=study_date, StudyTime=study_time,
            AccessionNumber=f"ACC-{name}",
        )
        studies[name] = _study_of(name, paths)
        held[holder] += paths
    return studies, held


def _study_of(name: str, paths: list[Path]) -> Study:
    headers = [dcmread(path, stop_before_pixels=True) for path in paths]
    return Study(name, str(headers[0].StudyInstanceUID), tuple(str(h.SeriesInstanceUID) for h in headers))


def _modality_records() -> list[Dataset]:
    records = []
    for patient_id, modality in (("IGN-CT", "CT"), ("IGN-MR", "MR")):
        record = Dataset()
        record.PatientID = patient_id
        record.PatientName = f"Ignorer^{modality}"
        record.StudyInstanceUID = generate_uid()
        record.StudyDate = "20240120"
        record.ModalitiesInStudy = modality
        records.append(record)
    return records


@pytest.fixture(scope="module")
def matching_region(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MatchingRegion]:
    work_dir = tmp_path_factory.mktemp("matching")
    studies, held = _seed_files(work_dir / "seeds")
    router_node = DicomNode(ROUTER_AE, free_port())
    ws1 = DicomNode("WS1", free_port())
    known = {"router": router_node, "ws1": ws1}
    north = OrthancServer("NORTH", "NORTHPACS", work_dir / "north", modalities=known)
    east = DcmqrscpServer("EAST", "EASTPACS", work_dir / "east", move_destinations=known)
    ignorer = RecordingFindPeer("IGNORERPACS", _modality_records(), ignored_keys={"ModalitiesInStudy"})
    routers: list[RouterProcess] = []
    try:
        north.start_process()
        east.start_process()
        ignorer.start()
        north.wait_until_ready()
        east.wait_until_ready()
        north.seed(held["north"])
        east.seed(held["east"])
        north_entry = PeerEntry("north", north.node, find_deadline=10.0)
        routers.append(RouterProcess(
            work_dir / "router", ae_title=ROUTER_AE, port=router_node.port,
            peers=[north_entry, PeerEntry("east", east.node, find_deadline=10.0)],
            workstations=[WorkstationEntry(ws1)],
        ))
        routers.append(RouterProcess(
            work_dir / "modality-router", ae_title=ROUTER_AE, port=free_port(),
            peers=[north_entry, PeerEntry("ignorer", ignorer.node, find_deadline=10.0)],
            workstations=[WorkstationEntry(ws1)],
        ))
        for router in routers:
            router.start()
        yield MatchingRegion(routers[0], routers[1], ignorer, north.node, studies)
    finally:
        for router in routers:
            router.stop()
        ignorer.stop()
        north.stop()
        east.stop()


def find(node: DicomNode, keys: dict[str, str | None], level: str = "STUDY") -> FindResult:
    request: dict[str, str | None] = {
        "QueryRetrieveLevel": level, "StudyInstanceUID": None, "PatientName": None,
        "StudyDate": None, "StudyTime": None,
    }
    request.update(keys)
    result = run_findscu(node, request, calling_ae="WS1", timeout=30.0)
    assert result.final_status == status.SUCCESS, result.describe()
    return result


def found_names(region: MatchingRegion, result: FindResult) -> list[str]:
    """Return the seeded study names that the responses list, sorted."""
    by_uid = {study.uid: name for name, study in region.studies.items()}
    return sorted(by_uid.get(str(response.StudyInstanceUID), str(response.StudyInstanceUID))
                  for response in result.datasets)


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        ({"StudyDate": "20240101-20240131"}, ["early", "late", "middle"]),
        ({"StudyDate": "-20240115"}, ["early", "middle"]),
        ({"StudyDate": "20240115-"}, ["late", "middle", "other"]),
        ({"StudyDate": "20240115"}, ["middle"]),
        ({"StudyDate": "20240101-20240131", "StudyTime": "100000-160000"}, ["late", "middle"]),
        ({"StudyTime": "-1000"}, ["early", "other"]),
        ({"StudyTime": "100000.000000-115959.999999"}, ["late", "other"]),
        ({"PatientName": "Range^*"}, ["early", "late", "middle"]),
        ({"PatientName": "R?nge^Late"}, ["late"]),
        ({"PatientName": "*Middle"}, ["middle"]),
        ({"PatientName": "Range^Early"}, ["early"]),
        ({"AccessionNumber": "ACC-other"}, ["other"]),
    ],
)
def test_key_form_selects_studies(
    matching_region: MatchingRegion, keys: dict[str, str], expected: list[str]
) -> None:
    result = find(matching_region.router.node, keys)
    assert found_names(matching_region, result) == expected


def test_uid_list_selects_studies(matching_region: MatchingRegion) -> None:
    studies = matching_region.studies
    uid_list = f"{studies['early'].uid}\\{studies['other'].uid}"

    result = find(matching_region.router.node, {"StudyInstanceUID": uid_list})

    assert found_names(matching_region, result) == ["early", "other"]


def test_sequence_key_selects_series(matching_region: MatchingRegion) -> None:
    """Orthanc ignores sequence keys outside worklists; the router keeps the series whose item matches."""
    early = matching_region.studies["early"]
    identifier = {
        "QueryRetrieveLevel": "SERIES", "StudyInstanceUID": early.uid, "SeriesInstanceUID": None,
        "RequestAttributesSequence[0].RequestedProcedureID": "RP2",
    }
    direct = run_findscu(matching_region.north, identifier, calling_ae="WS1", timeout=30.0)
    assert sorted(str(response.SeriesInstanceUID) for response in direct.datasets) == sorted(early.series_uids)

    result = run_findscu(matching_region.router.node, identifier, calling_ae="WS1", timeout=30.0)

    assert result.final_status == status.SUCCESS, result.describe()
    assert [str(response.SeriesInstanceUID) for response in result.datasets] == [early.series_uids[0]]


def test_ignored_modality_key_filtered(matching_region: MatchingRegion) -> None:
    direct = run_findscu(matching_region.ignorer.node,
                         {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": None, "PatientID": None,
                          "ModalitiesInStudy": "CT"},
                         calling_ae="WS1", timeout=30.0)
    assert sorted(str(response.PatientID) for response in direct.datasets) == ["IGN-CT", "IGN-MR"]

    result = find(matching_region.modality_router.node, {"ModalitiesInStudy": "CT", "PatientID": None})

    patients = sorted(str(response.PatientID) for response in result.datasets)
    assert patients == ["IGN-CT", "M-early", "M-late"]
    for response in result.datasets:
        modalities = response.ModalitiesInStudy
        assert "CT" in ([modalities] if isinstance(modalities, str) else list(modalities))


def find_with_combined_datetime(node: DicomNode, keys: dict[str, str]) -> list[Dataset]:
    """Send a STUDY-level C-FIND from a pynetdicom SCU that negotiated combined date-time matching."""
    extended = SOPClassExtendedNegotiation()
    extended.sop_class_uid = StudyRootQueryRetrieveInformationModelFind
    extended.service_class_application_information = b"\x00\x01"
    ae = AE(ae_title="WS1")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = ae.associate(LOOPBACK, node.port, ae_title=node.ae_title, ext_neg=[extended])
    assert assoc.is_established
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.StudyInstanceUID = ""
    for keyword, value in keys.items():
        setattr(identifier, keyword, value)
    matches = []
    try:
        for response, match in assoc.send_c_find(identifier, StudyRootQueryRetrieveInformationModelFind):
            assert "Status" in response, "the router aborted the C-FIND or it timed out"
            if match is not None:
                matches.append(match)
        assert response.Status == status.SUCCESS
    finally:
        assoc.release()
    return matches


def test_combined_date_time_range(matching_region: MatchingRegion) -> None:
    """Combined matching spans 2024-01-01 10:00 to 2024-01-31 16:00, so 09:00 on 5 January matches."""
    keys = {"StudyDate": "20240101-20240131", "StudyTime": "100000-160000"}

    matches = find_with_combined_datetime(matching_region.router.node, keys)

    by_uid = {study.uid: name for name, study in matching_region.studies.items()}
    assert sorted(by_uid[str(match.StudyInstanceUID)] for match in matches) == ["early", "late", "middle"]
