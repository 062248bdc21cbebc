"""Patient, study and series keys read from a received file's header."""

from __future__ import annotations

import struct
from pathlib import Path

from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import ExplicitVRLittleEndian

from yicrouter.scp.store import read_keys


def _ct_without_pixels(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    dataset = dcmread(get_testdata_file("CT_small.dcm"))
    del dataset.PixelData
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    keys = {"patient": str(dataset.PatientID), "study": str(dataset.StudyInstanceUID),
            "series": str(dataset.SeriesInstanceUID), "sop": str(dataset.SOPInstanceUID)}
    path = tmp_path / "ct.dcm"
    dataset.save_as(path, enforce_file_format=True)
    return path, keys


def test_keys_read_from_header(tmp_path: Path) -> None:
    path, keys = _ct_without_pixels(tmp_path)
    found = read_keys(path, keys["sop"])
    assert found.patient_id == keys["patient"]
    assert found.study_uid == keys["study"]
    assert found.series_uid == keys["series"]


def test_patient_id_after_series_uid_found(tmp_path: Path) -> None:
    """A file whose Patient ID comes after later groups, out of tag order, still yields it."""
    path, keys = _ct_without_pixels(tmp_path)
    dataset = dcmread(path)
    del dataset.PatientID
    dataset.save_as(path, enforce_file_format=True)
    value = b"OUTOFORDER"
    # (0010,0020) LO in Explicit VR Little Endian (PS3.5 7.1.2), appended last.
    with open(path, "ab") as file:
        file.write(struct.pack("<HH2sH", 0x0010, 0x0020, b"LO", len(value)) + value)
    found = read_keys(path, keys["sop"])
    assert found.patient_id == "OUTOFORDER"
    assert found.series_uid == keys["series"]
