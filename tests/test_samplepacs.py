"""SamplePacs against DCMTK's real SCUs and storescp, plus its fault options.

The read-only tests share one SamplePacs, and the others start their own,
each on a free loopback port. The matching rules have table tests of their
own at the end of the file.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydicom import config, dcmread
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.tag import Tag
from pynetdicom import AE, StoragePresentationContexts, evt
from pynetdicom.events import Event

from harness.dcmtk import (
    StoreSCP,
    echo_succeeds,
    run_echoscu,
    run_findscu,
    run_getscu,
    run_movescu,
    run_storescu,
)
from harness.ports import DicomNode
from harness.waiting import wait_for
from yicrouter.demo.matching import element_matches
from yicrouter.demo.samplepacs import (
    GET_IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS,
    FaultOptions,
    SamplePacs,
)
from yicrouter.demo.seed import SeedStudy, build_study
from yicrouter.status import (
    CANCEL,
    FIND_IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS,
    MOVE_DESTINATION_UNKNOWN,
    MOVE_IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS,
    PENDING,
    SUCCESS,
)

PACS_AE = "SAMPLEPACS"
STORESCP_AE = "STORESCP"
PYSCP_AE = "PYSCP"


@dataclass
class Seeded:
    john: SeedStudy
    jane: SeedStudy
    anna: SeedStudy

    @property
    def studies(self) -> list[SeedStudy]:
        return [self.john, self.jane, self.anna]

    @property
    def files(self) -> list[Path]:
        return [path for study in self.studies for path in study.files]


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Seeded:
    """Seed three studies. Patient details are invented."""
    seed_dir = tmp_path_factory.mktemp("seed")
    return Seeded(
        john=build_study(
            seed_dir,
            patient_id="PID001",
            patient_name="DOE^JOHN",
            accession_number="ACC0001",
            study_date="20240110",
            sources=("CT_small.dcm", "MR_small.dcm"),
            instances_per_source=2,
        ),
        jane=build_study(
            seed_dir,
            patient_id="PID002",
            patient_name="DOE^JANE",
            accession_number="ACC0002",
            study_date="20240120",
        ),
        # The JPEG Baseline series checks that compressed pixel data moves unchanged.
        anna=build_study(
            seed_dir,
            patient_id="PID003",
            patient_name="SMITH^ANNA",
            accession_number="ACC0003",
            study_date="20240301",
            sources=("MR_small.dcm", "SC_rgb_jpeg_dcmtk.dcm"),
        ),
    )


PacsFactory = Callable[..., SamplePacs]


@pytest.fixture
def make_pacs(seeded: Seeded) -> Iterator[PacsFactory]:
    """Start a SamplePacs on a free port. Each one started is stopped after the test."""
    started: list[SamplePacs] = []

    def start(
        destinations: dict[str, tuple[str, int]] | None = None,
        options: FaultOptions | None = None,
        storage_dir: Path | None = None,
    ) -> SamplePacs:
        pacs = SamplePacs(
            PACS_AE,
            0,
            seeded.files,
            destinations or {},
            options=options,
            storage_dir=storage_dir,
        )
        pacs.start()
        started.append(pacs)
        return pacs

    yield start
    for pacs in started:
        pacs.stop()


@pytest.fixture(scope="module")
def pacs(seeded: Seeded) -> Iterator[SamplePacs]:
    """One SamplePacs without faults or Move Destinations, shared by the read-only tests."""
    with SamplePacs(PACS_AE, 0, seeded.files, {}) as shared:
        yield shared


@pytest.fixture
def storescp(tmp_path: Path) -> Iterator[StoreSCP]:
    scp = StoreSCP(STORESCP_AE, tmp_path / "storescp")
    try:
        yield scp.start()
    finally:
        scp.stop()


@dataclass
class ReceivedStore:
    sop_instance_uid: str
    originator_ae: str | None
    originator_message_id: int | None
    dataset: Dataset


@pytest.fixture
def python_scp() -> Iterator[tuple[int, list[ReceivedStore]]]:
    """Run a pynetdicom Storage SCP that records each C-STORE request, and yield (port, records)."""
    records: list[ReceivedStore] = []
    lock = threading.Lock()

    def handle_store(event: Event) -> int:
        request = event.request
        dataset = event.dataset
        dataset.file_meta = event.file_meta
        with lock:
            records.append(
                ReceivedStore(
                    str(request.AffectedSOPInstanceUID),
                    request.MoveOriginatorApplicationEntityTitle,
                    request.MoveOriginatorMessageID,
                    dataset,
                )
            )
        return SUCCESS

    ae = AE(ae_title=PYSCP_AE)
    ae.supported_contexts = StoragePresentationContexts
    server = ae.start_server(
        ("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, handle_store)]
    )
    assert server is not None
    try:
        yield int(server.server_address[1]), records
    finally:
        ae.shutdown()


def node_of(pacs: SamplePacs) -> DicomNode:
    return DicomNode(pacs.ae_title, pacs.port)


def study_keys(**keys: str | None) -> dict[str, str | None]:
    return {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": None, **keys}


def series_of(study: SeedStudy, series_uid: str) -> set[str]:
    """SOP Instance UIDs of one series of a seeded study."""
    return {
        str(header.SOPInstanceUID)
        for header in (dcmread(path, stop_before_pixels=True) for path in study.files)
        if header.SeriesInstanceUID == series_uid
    }


def assert_same_instances(received: dict[str, Dataset], sources: list[Path]) -> None:
    """Check UIDs and pixel data of received datasets against the seeded files."""
    expected = {str(dcmread(path).SOPInstanceUID): path for path in sources}
    assert set(received) == set(expected)
    for uid, path in expected.items():
        assert received[uid].PixelData == dcmread(path).PixelData, f"pixel data differs for {uid}"


# C-FIND


def test_find_study_level_returns_seeded_studies(
    pacs: SamplePacs, seeded: Seeded, tmp_path: Path
) -> None:
    keys = study_keys(
        PatientName=None,
        ModalitiesInStudy=None,
        NumberOfStudyRelatedSeries=None,
        NumberOfStudyRelatedInstances=None,
    )
    result = run_findscu(node_of(pacs), keys, output_dir=tmp_path / "find")

    assert result.final_status == SUCCESS, result.describe()
    by_uid = {str(ds.StudyInstanceUID): ds for ds in result.datasets}
    assert set(by_uid) == {study.study_uid for study in seeded.studies}

    john = by_uid[seeded.john.study_uid]
    assert john.QueryRetrieveLevel == "STUDY"
    assert john.PatientName == "DOE^JOHN"
    assert list(john.ModalitiesInStudy) == ["CT", "MR"]
    assert john.NumberOfStudyRelatedSeries == 2
    assert john.NumberOfStudyRelatedInstances == 4
    # CT_small.dcm, the first instance of the study, declares ISO_IR 100.
    assert john.SpecificCharacterSet == "ISO_IR 100"


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("DOE^J*", {"john", "jane"}),
        ("doe^jo*", {"john"}),
        ("?MITH^ANNA", {"anna"}),
        ("*ANN?", {"anna"}),
        ("DOE^JOHN", {"john"}),
        ("NOBODY*", set()),
    ],
)
def test_find_patient_name_wildcard(
    pacs: SamplePacs, seeded: Seeded, pattern: str, expected: set[str]
) -> None:
    result = run_findscu(node_of(pacs), study_keys(PatientName=pattern))

    assert result.final_status == SUCCESS, result.describe()
    found = {str(ds.StudyInstanceUID) for ds in result.datasets}
    assert found == {getattr(seeded, name).study_uid for name in expected}


@pytest.mark.parametrize(
    ("date_range", "expected"),
    [
        ("20240101-20240115", {"john"}),
        ("-20240120", {"john", "jane"}),
        ("20240120-", {"jane", "anna"}),
        ("20240301", {"anna"}),
    ],
)
def test_find_study_date_range(
    pacs: SamplePacs, seeded: Seeded, date_range: str, expected: set[str]
) -> None:
    result = run_findscu(node_of(pacs), study_keys(StudyDate=date_range))

    assert result.final_status == SUCCESS, result.describe()
    found = {str(ds.StudyInstanceUID) for ds in result.datasets}
    assert found == {getattr(seeded, name).study_uid for name in expected}


def test_find_list_of_uids(pacs: SamplePacs, seeded: Seeded) -> None:
    uids = f"{seeded.john.study_uid}\\{seeded.anna.study_uid}"
    result = run_findscu(node_of(pacs), study_keys(StudyInstanceUID=uids))

    assert result.final_status == SUCCESS, result.describe()
    found = {str(ds.StudyInstanceUID) for ds in result.datasets}
    assert found == {seeded.john.study_uid, seeded.anna.study_uid}


def test_find_series_level(pacs: SamplePacs, seeded: Seeded) -> None:
    keys = {
        "QueryRetrieveLevel": "SERIES",
        "StudyInstanceUID": seeded.john.study_uid,
        "SeriesInstanceUID": None,
        "Modality": None,
        "NumberOfSeriesRelatedInstances": None,
    }
    result = run_findscu(node_of(pacs), keys)

    assert result.final_status == SUCCESS, result.describe()
    by_uid = {str(ds.SeriesInstanceUID): ds for ds in result.datasets}
    assert set(by_uid) == set(seeded.john.series_uids)
    assert {str(ds.Modality) for ds in by_uid.values()} == {"CT", "MR"}
    assert [ds.NumberOfSeriesRelatedInstances for ds in by_uid.values()] == [2, 2]
    assert {str(ds.QueryRetrieveLevel) for ds in by_uid.values()} == {"SERIES"}


def test_find_image_level(pacs: SamplePacs, seeded: Seeded) -> None:
    series_uid = seeded.john.series_uids[1]
    keys = {
        "QueryRetrieveLevel": "IMAGE",
        "StudyInstanceUID": seeded.john.study_uid,
        "SeriesInstanceUID": series_uid,
        "SOPInstanceUID": None,
        "InstanceNumber": None,
    }
    result = run_findscu(node_of(pacs), keys)

    assert result.final_status == SUCCESS, result.describe()
    found = {str(ds.SOPInstanceUID) for ds in result.datasets}
    assert found == series_of(seeded.john, series_uid)
    assert sorted(int(ds.InstanceNumber) for ds in result.datasets) == [1, 2]


def test_find_patient_root(pacs: SamplePacs, seeded: Seeded) -> None:
    node = node_of(pacs)
    patient_keys = {
        "QueryRetrieveLevel": "PATIENT",
        "PatientID": "PID00*",
        "PatientName": None,
        "NumberOfPatientRelatedStudies": None,
        "NumberOfPatientRelatedInstances": None,
    }
    patients = run_findscu(node, patient_keys, model="patient")
    study_level = run_findscu(
        node, {**study_keys(), "PatientID": "PID001"}, model="patient"
    )

    assert patients.final_status == SUCCESS, patients.describe()
    by_id = {str(ds.PatientID): ds for ds in patients.datasets}
    assert set(by_id) == {"PID001", "PID002", "PID003"}
    assert by_id["PID001"].NumberOfPatientRelatedStudies == 1
    assert by_id["PID001"].NumberOfPatientRelatedInstances == 4
    assert study_level.final_status == SUCCESS, study_level.describe()
    assert [str(ds.StudyInstanceUID) for ds in study_level.datasets] == [seeded.john.study_uid]


def test_patient_root_needs_patient_id(pacs: SamplePacs) -> None:
    result = run_findscu(node_of(pacs), study_keys(), model="patient")

    assert result.final_status == FIND_IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS, result.describe()
    assert result.datasets == []


def test_find_without_level_fails(pacs: SamplePacs) -> None:
    result = run_findscu(node_of(pacs), {"PatientName": "DOE*"})

    assert result.final_status == FIND_IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS, result.describe()
    assert result.datasets == []


def test_find_delay_slows_each_match(make_pacs: PacsFactory) -> None:
    pacs = make_pacs(options=FaultOptions(find_delay=0.3))

    started = time.monotonic()
    result = run_findscu(node_of(pacs), study_keys())
    elapsed = time.monotonic() - started

    assert result.final_status == SUCCESS, result.describe()
    assert len(result.datasets) == 3
    assert elapsed >= 0.9


def test_find_delay_beyond_dimse_timeout(make_pacs: PacsFactory) -> None:
    pacs = make_pacs(options=FaultOptions(find_delay=3.0))

    # timeout=1.0 gives findscu a 1 s DIMSE timeout (-td 1).
    result = run_findscu(node_of(pacs), study_keys(), timeout=1.0)

    assert result.datasets == [], result.describe()
    assert result.final_status is None, result.describe()


def test_find_abort_after(make_pacs: PacsFactory) -> None:
    pacs = make_pacs(options=FaultOptions(find_abort_after=1))

    result = run_findscu(node_of(pacs), study_keys())

    assert result.statuses == [PENDING], result.describe()
    assert len(result.datasets) == 1


def test_find_cancel(make_pacs: PacsFactory) -> None:
    pacs = make_pacs(options=FaultOptions(find_delay=0.3))

    result = run_findscu(node_of(pacs), study_keys(), extra_args=["--cancel", "1"])

    assert result.final_status == CANCEL, result.describe()
    assert len(result.datasets) < 3


# C-MOVE and C-GET


def test_move_delivers_all_instances(
    make_pacs: PacsFactory, storescp: StoreSCP, seeded: Seeded
) -> None:
    pacs = make_pacs({STORESCP_AE: ("127.0.0.1", storescp.port)})
    sources = seeded.john.files + seeded.anna.files
    uids = f"{seeded.john.study_uid}\\{seeded.anna.study_uid}"

    result = run_movescu(node_of(pacs), STORESCP_AE, study_keys(StudyInstanceUID=uids))

    assert result.final_status == SUCCESS, result.describe()
    assert result.completed == len(sources)
    assert result.failed == 0
    assert result.statuses.count(PENDING) == len(sources)
    storescp.wait_for_files(len(sources))
    assert_same_instances(storescp.received_datasets(), sources)
    assert {item.calling_ae for item in storescp.received()} == {PACS_AE}


def test_move_unknown_destination(pacs: SamplePacs, storescp: StoreSCP, seeded: Seeded) -> None:
    keys = study_keys(StudyInstanceUID=seeded.jane.study_uid)

    result = run_movescu(node_of(pacs), "NOSUCHAE", keys)

    assert result.final_status == MOVE_DESTINATION_UNKNOWN, result.describe()
    assert storescp.received() == []


@pytest.mark.parametrize("omit", [False, True], ids=["with-originator", "without-originator"])
def test_move_originator_fields(
    make_pacs: PacsFactory,
    python_scp: tuple[int, list[ReceivedStore]],
    seeded: Seeded,
    omit: bool,
) -> None:
    port, records = python_scp
    pacs = make_pacs(
        {PYSCP_AE: ("127.0.0.1", port)}, options=FaultOptions(omit_move_originator=omit)
    )
    sources = seeded.john.files

    result = run_movescu(
        node_of(pacs), PYSCP_AE, study_keys(StudyInstanceUID=seeded.john.study_uid)
    )

    assert result.final_status == SUCCESS, result.describe()
    assert result.completed == len(sources)
    assert result.statuses.count(PENDING) == len(sources)
    wait_for(lambda: len(records) >= len(sources), timeout=10.0)
    assert_same_instances({r.sop_instance_uid: r.dataset for r in records}, sources)
    originators = {(r.originator_ae, r.originator_message_id) for r in records}
    if omit:
        assert originators == {(None, None)}
    else:
        assert {ae for ae, _ in originators} == {PACS_AE}
        assert None not in {message_id for _, message_id in originators}


def test_move_abort_after(make_pacs: PacsFactory, storescp: StoreSCP, seeded: Seeded) -> None:
    pacs = make_pacs(
        {STORESCP_AE: ("127.0.0.1", storescp.port)}, options=FaultOptions(move_abort_after=1)
    )

    result = run_movescu(
        node_of(pacs), STORESCP_AE, study_keys(StudyInstanceUID=seeded.john.study_uid)
    )

    assert result.statuses == [PENDING], result.describe()
    # movescu 3.6.7 exits with 0 after an abort, so its log is the evidence.
    assert "Peer Aborted Association" in result.output, result.describe()
    storescp.wait_for_files(1)
    assert len(storescp.received()) == 1


def test_move_cancel_stops_sub_operations(
    make_pacs: PacsFactory, storescp: StoreSCP, seeded: Seeded
) -> None:
    pacs = make_pacs(
        {STORESCP_AE: ("127.0.0.1", storescp.port)}, options=FaultOptions(store_delay=0.3)
    )
    keys = study_keys(StudyInstanceUID=seeded.john.study_uid)

    result = run_movescu(node_of(pacs), STORESCP_AE, keys, extra_args=["--cancel", "1"])

    assert result.final_status == CANCEL, result.describe()
    completed = result.completed
    assert completed is not None and completed < len(seeded.john.files), result.describe()
    assert result.remaining == len(seeded.john.files) - completed, result.describe()
    storescp.wait_for_files(completed)
    assert len(storescp.received()) == completed


def test_move_without_unique_key_fails(
    make_pacs: PacsFactory, storescp: StoreSCP
) -> None:
    pacs = make_pacs({STORESCP_AE: ("127.0.0.1", storescp.port)})

    result = run_movescu(node_of(pacs), STORESCP_AE, {"QueryRetrieveLevel": "STUDY"})

    assert result.final_status == MOVE_IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS, result.describe()
    assert storescp.received() == []


def test_get_delivers_series(pacs: SamplePacs, seeded: Seeded, tmp_path: Path) -> None:
    series_uid = seeded.john.series_uids[0]
    keys = {
        "QueryRetrieveLevel": "SERIES",
        "StudyInstanceUID": seeded.john.study_uid,
        "SeriesInstanceUID": series_uid,
    }

    result = run_getscu(node_of(pacs), tmp_path / "get", keys)

    assert result.final_status == SUCCESS, result.describe()
    assert result.completed == 2
    received = {str(ds.SOPInstanceUID): ds for ds in map(dcmread, result.received_files)}
    expected_uids = series_of(seeded.john, series_uid)
    sources = [path for path in seeded.john.files if path.stem in expected_uids]
    assert_same_instances(received, sources)


def test_get_without_unique_key_fails(pacs: SamplePacs, tmp_path: Path) -> None:
    result = run_getscu(node_of(pacs), tmp_path / "get", {"QueryRetrieveLevel": "STUDY"})

    assert result.final_status == GET_IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS, result.describe()
    assert result.received_files == []


# C-STORE, C-ECHO and association faults


def test_store_then_find(make_pacs: PacsFactory, tmp_path: Path) -> None:
    pacs = make_pacs(storage_dir=tmp_path / "storage")
    extra = build_study(
        tmp_path / "extra",
        patient_id="PID004",
        patient_name="NEW^ARRIVAL",
        accession_number="ACC0004",
    )

    run_storescu(node_of(pacs), extra.files)
    result = run_findscu(node_of(pacs), study_keys(PatientID="PID004"))

    assert (tmp_path / "storage" / f"{extra.sop_instance_uids[0]}.dcm").is_file()
    assert pacs.instance_count == 8
    assert [str(ds.StudyInstanceUID) for ds in result.datasets] == [extra.study_uid]


def test_echo_succeeds(pacs: SamplePacs) -> None:
    assert echo_succeeds(node_of(pacs))


def test_reject_association(make_pacs: PacsFactory) -> None:
    pacs = make_pacs(options=FaultOptions(reject_association=True))

    result = run_echoscu(node_of(pacs))

    assert "Association Rejected" in result.output, result.describe()
    assert "Calling AE Title Not Recognized" in result.output, result.describe()
    assert "Echo Response" not in result.output, result.describe()


def test_fault_options_reject_negative() -> None:
    with pytest.raises(ValueError, match="find_delay"):
        FaultOptions(find_delay=-1.0)


# Matching rules (PS3.4 C.2.2.2), without the network


def element(keyword: str, value: object) -> DataElement:
    """Build an element without validation, because keys such as "1.2.*" are invalid UIDs."""
    tag = Tag(keyword)
    return DataElement(tag, dictionary_VR(tag), value, validation_mode=config.IGNORE)


@pytest.mark.parametrize(
    ("keyword", "key", "stored", "expected"),
    [
        ("PatientName", "", "DOE^JOHN", True),
        ("PatientName", "*", "DOE^JOHN", True),
        ("PatientName", "doe^john", "DOE^JOHN", True),
        ("PatientName", "DOE^JO?N", "DOE^JOHN", True),
        ("PatientName", "DOE^JO?", "DOE^JOHN", False),
        ("PatientID", "pid001", "PID001", False),
        ("PatientID", "PID*", "PID001", True),
        ("Modality", "CT", ["CT", "MR"], True),
        ("ModalitiesInStudy", ["US", "MR"], ["CT", "MR"], True),
        ("ModalitiesInStudy", ["US", "XA"], ["CT", "MR"], False),
        ("StudyInstanceUID", "1.2.3\\1.2.4", "1.2.4", True),
        ("StudyInstanceUID", "1.2.*", "1.2.4", False),
        ("StudyDate", "20240101-20240131", "20240131", True),
        ("StudyDate", "20240101-20240131", "20240201", False),
        ("StudyDate", "-20240101", "20231231", True),
        ("StudyDate", "20240101-", "20231231", False),
        ("StudyTime", "080000-120000", "101500", True),
        ("StudyTime", "08-12", "125959.5", True),
        ("StudyTime", "08-12", "130000", False),
        ("StudyTime", "1015", "1015", True),
        ("AcquisitionDateTime", "2024-2024", "20240615120000", True),
        ("AcquisitionDateTime", "20240101-20240131", "20240201000000", False),
        ("AcquisitionDateTime", "20240101-", "20240115120000-0500", True),
    ],
)
def test_element_matches(keyword: str, key: object, stored: object, expected: bool) -> None:
    assert element_matches(element(keyword, key), element(keyword, stored)) is expected


def test_element_matches_absent_stored_value() -> None:
    assert element_matches(element("PatientName", ""), None)
    assert not element_matches(element("PatientName", "DOE*"), None)


def test_sequence_matches_any_item() -> None:
    stored = Dataset()
    stored.RequestAttributesSequence = [Dataset(), Dataset()]
    stored.RequestAttributesSequence[0].RequestedProcedureID = "RP1"
    stored.RequestAttributesSequence[1].RequestedProcedureID = "RP2"
    key = Dataset()
    key.RequestAttributesSequence = [Dataset()]
    key.RequestAttributesSequence[0].RequestedProcedureID = "RP2"
    other = Dataset()
    other.RequestAttributesSequence = [Dataset()]
    other.RequestAttributesSequence[0].RequestedProcedureID = "RP3"

    stored_element = stored["RequestAttributesSequence"]
    assert element_matches(key["RequestAttributesSequence"], stored_element)
    assert not element_matches(other["RequestAttributesSequence"], stored_element)
