"""Checks of the test harness itself, against the real peers and without the router.

If these fail, the end-to-end tests prove nothing about the router.
"""

from __future__ import annotations

import time
import tomllib
from pathlib import Path

import pytest

from conftest import Region, Trust
from harness.dcmtk import (
    StoreSCP,
    parse_dimse_messages,
    run_findscu,
    run_getscu,
    run_movescu,
)
from harness.ports import DicomNode, free_port, free_ports, is_listening
from harness.router import PeerEntry, WorkstationEntry, render_router_config
from harness.waiting import WaitTimeout, wait_for
from yicrouter import status

TRUST_NAMES = ["north", "south", "east"]


def _trust(region: Region, name: str) -> Trust:
    return {trust.name: trust for trust in region.trusts}[name]


# --- helpers without servers --------------------------------------------------


def test_wait_for_returns_truthy_value() -> None:
    calls = []

    def third_call_succeeds() -> str:
        calls.append(1)
        return "ready" if len(calls) >= 3 else ""

    assert wait_for(third_call_succeeds, timeout=5.0, interval=0.01) == "ready"
    assert len(calls) == 3


def test_wait_for_timeout_names_message() -> None:
    started = time.monotonic()
    with pytest.raises(WaitTimeout, match="peer never answered"):
        wait_for(lambda: False, timeout=0.2, interval=0.05, message=lambda: "peer never answered")
    assert time.monotonic() - started < 2.0


def test_free_ports_are_distinct_and_unused() -> None:
    ports = free_ports(20)
    assert len(set(ports)) == 20
    assert free_port() not in ports
    for port in ports:
        assert not is_listening(port)


def test_router_config_follows_contract(tmp_path: Path) -> None:
    text = render_router_config(
        ae_title="YICROUTER",
        port=11112,
        state_dir=tmp_path / "state",
        peers=[
            PeerEntry("north", DicomNode("NORTHPACS", 4242), find_deadline=5.0),
            PeerEntry("east", DicomNode("EASTPACS", 4243), extra={"dimse_timeout": 3.5}),
        ],
        workstations=[WorkstationEntry(DicomNode("WS1", 11113))],
    )
    config = tomllib.loads(text)

    assert config["router"] == {
        "ae_title": "YICROUTER",
        "bind": "127.0.0.1",
        "port": 11112,
        "state_dir": str(tmp_path / "state"),
        "log_level": "debug",
    }
    assert config["peer"][0] == {
        "name": "north",
        "ae_title": "NORTHPACS",
        "host": "127.0.0.1",
        "port": 4242,
        "find_deadline": 5.0,
    }
    assert "find_deadline" not in config["peer"][1]
    assert config["peer"][1]["dimse_timeout"] == 3.5
    assert config["workstation"] == [{"ae_title": "WS1", "host": "127.0.0.1", "port": 11113}]


def test_dimse_parser_reads_status_and_counts() -> None:
    output = "\n".join(
        [
            "D: ===================== OUTGOING DIMSE MESSAGE ====================",
            "D: Message Type                  : C-MOVE RQ",
            "D: -----------------------------------------------------------------",
            "D: (0008,0052) CS [STUDY]                                  #   6, 1 QueryRetrieveLevel",
            "D: ======================= END DIMSE MESSAGE =======================",
            "D: ===================== INCOMING DIMSE MESSAGE ====================",
            "D: Message Type                  : C-MOVE RSP",
            "D: Remaining Suboperations       : none",
            "D: Completed Suboperations       : 4",
            "D: Failed Suboperations          : 1",
            "D: Warning Suboperations         : 0",
            "D: DIMSE Status                  : 0xb000: Warning: Sub-operations complete",
            "D: ======================= END DIMSE MESSAGE =======================",
        ]
    )
    request, response = parse_dimse_messages(output)

    assert request.direction == "OUTGOING"
    assert request.message_type == "C-MOVE RQ"
    assert request.status is None
    assert "(0008,0052) CS [STUDY]" not in request.fields
    assert response.message_type == "C-MOVE RSP"
    assert response.status == 0xB000
    assert response.suboperations("Remaining") is None
    assert response.suboperations("Completed") == 4
    assert response.suboperations("Failed") == 1


# --- the real peers -----------------------------------------------------------


def test_region_starts_quickly(region: Region) -> None:
    assert region.startup_seconds < 15.0


@pytest.mark.parametrize("trust_name", TRUST_NAMES)
def test_peer_find_returns_seeded_studies(region: Region, trust_name: str) -> None:
    trust = _trust(region, trust_name)
    result = run_findscu(
        trust.node,
        {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": None, "PatientID": None},
        calling_ae="WS1",
    )

    assert result.final_status == status.SUCCESS, result.describe()
    found = [str(ds.StudyInstanceUID) for ds in result.datasets]
    assert sorted(found) == sorted(study.study_uid for study in trust.studies)
    for dataset in result.datasets:
        assert dataset.QueryRetrieveLevel == "STUDY"


@pytest.mark.parametrize("trust_name", TRUST_NAMES)
def test_peer_find_series_and_image_levels(region: Region, trust_name: str) -> None:
    trust = _trust(region, trust_name)
    study = trust.studies[-1]

    series = run_findscu(
        trust.node,
        {
            "QueryRetrieveLevel": "SERIES",
            "StudyInstanceUID": study.study_uid,
            "SeriesInstanceUID": None,
            "Modality": None,
        },
        calling_ae="WS1",
    )
    assert series.final_status == status.SUCCESS, series.describe()
    assert sorted(str(ds.SeriesInstanceUID) for ds in series.datasets) == sorted(study.series_uids)

    images = run_findscu(
        trust.node,
        {
            "QueryRetrieveLevel": "IMAGE",
            "StudyInstanceUID": study.study_uid,
            "SeriesInstanceUID": study.series_uids[0],
            "SOPInstanceUID": None,
        },
        calling_ae="WS1",
    )
    assert images.final_status == status.SUCCESS, images.describe()
    expected = study.sop_instance_uids[: len(study.sop_instance_uids) // len(study.series_uids)]
    assert sorted(str(ds.SOPInstanceUID) for ds in images.datasets) == sorted(expected)


@pytest.mark.parametrize("trust_name", TRUST_NAMES)
def test_peer_patient_root_find(region: Region, trust_name: str) -> None:
    trust = _trust(region, trust_name)
    study = trust.studies[0]
    result = run_findscu(
        trust.node,
        {
            "QueryRetrieveLevel": "STUDY",
            "PatientID": study.patient_id,
            "StudyInstanceUID": None,
        },
        model="patient",
        calling_ae="WS1",
    )

    assert result.final_status == status.SUCCESS, result.describe()
    assert [str(ds.StudyInstanceUID) for ds in result.datasets] == [study.study_uid]


@pytest.mark.parametrize("trust_name", TRUST_NAMES)
def test_peer_move_to_storescp(region: Region, trust_name: str, ws1: StoreSCP) -> None:
    trust = _trust(region, trust_name)
    study = trust.studies[-2]
    result = run_movescu(
        trust.node,
        "WS1",
        {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": study.study_uid},
        calling_ae="WS1",
    )

    assert result.final_status == status.SUCCESS, result.describe()
    assert result.completed == len(study.files)
    assert result.failed == 0
    ws1.wait_for_files(len(study.files))
    received = ws1.received_datasets()
    assert sorted(received) == sorted(study.sop_instance_uids)
    for sop_uid, dataset in received.items():
        source = region.source_dataset(sop_uid)
        assert dataset.file_meta.TransferSyntaxUID == source.file_meta.TransferSyntaxUID
        assert dataset.PixelData == source.PixelData
    assert {item.calling_ae for item in ws1.received()} == {trust.node.ae_title}


def test_orthanc_move_keeps_jpeg_baseline(region: Region, ws1: StoreSCP) -> None:
    study = region.north.studies[1]
    result = run_movescu(
        region.north.node,
        "WS1",
        {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": study.study_uid},
        calling_ae="WS1",
    )

    assert result.final_status == status.SUCCESS, result.describe()
    ws1.wait_for_files(len(study.files))
    jpeg = [ds for ds in ws1.received_datasets().values() if ds.file_meta.TransferSyntaxUID.is_compressed]
    assert len(jpeg) == 2
    for dataset in jpeg:
        assert dataset.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.50"
        assert dataset.PixelData == region.source_dataset(str(dataset.SOPInstanceUID)).PixelData


def test_orthanc_get_delivers_study(region: Region, tmp_path: Path) -> None:
    study = region.south.studies[0]
    result = run_getscu(
        region.south.node,
        tmp_path / "get",
        {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": study.study_uid},
        calling_ae="WS1",
    )

    assert result.final_status == status.SUCCESS, result.describe()
    assert result.completed == len(study.files)
    assert len(result.received_files) == len(study.files)


def test_orthanc_added_modality_receives(region: Region, tmp_path: Path) -> None:
    study = region.south.studies[0]
    with StoreSCP("WS3", tmp_path / "ws3", port=free_port()) as ws3:
        region.south.server.add_modality("ws3", ws3.node)  # type: ignore[union-attr]
        result = run_movescu(
            region.south.node,
            "WS3",
            {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": study.study_uid},
            calling_ae="WS1",
        )
        assert result.final_status == status.SUCCESS, result.describe()
        assert len(ws3.wait_for_files(len(study.files))) == len(study.files)


def test_peers_reject_unknown_move_destination(region: Region) -> None:
    study = region.shared_study
    keys = {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": study.study_uid}

    east = run_movescu(region.east.node, "NOSUCHAE", keys, calling_ae="WS1")
    assert east.final_status == status.MOVE_DESTINATION_UNKNOWN, east.describe()

    # Orthanc 1.10.1 returns Unable to process (0xC001), not Move Destination
    # unknown (0xA801). The router must not pass that on.
    north = run_movescu(region.north.node, "NOSUCHAE", keys, calling_ae="WS1")
    assert north.final_status is not None, north.describe()
    assert status.is_failure(north.final_status), north.describe()


@pytest.mark.parametrize("trust_name", TRUST_NAMES)
def test_peers_reject_unknown_calling_ae(region: Region, trust_name: str) -> None:
    trust = _trust(region, trust_name)
    result = run_findscu(
        trust.node,
        {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": None},
        calling_ae="STRANGER",
    )

    assert result.datasets == []
    assert result.final_status is None, result.describe()
