"""Build small synthetic studies from the DICOM files that pydicom ships.

The demo region and the test suite both seed their peer PACS with these. Each
instance is a copy of a pydicom test file with new patient, study, series and
SOP Instance UIDs. The pixel data and transfer syntax stay as they were.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import UID, generate_uid


@dataclass
class SeedStudy:
    """One synthetic study written to disk."""

    patient_id: str
    patient_name: str
    study_uid: str
    study_date: str
    accession_number: str
    files: list[Path] = field(default_factory=list)
    series_uids: list[str] = field(default_factory=list)
    sop_instance_uids: list[str] = field(default_factory=list)
    modalities: set[str] = field(default_factory=set)


def _uid(*parts: object) -> str:
    """Return a UID that is stable for the same parts, so reruns match."""
    return str(generate_uid(entropy_srcs=[str(p) for p in parts]))


def _restamp(
    ds: Dataset, study: SeedStudy, series_uid: str, series_number: int, index: int
) -> None:
    sop_uid = _uid(study.study_uid, series_uid, index)
    ds.PatientID = study.patient_id
    ds.PatientName = study.patient_name
    ds.StudyInstanceUID = study.study_uid
    ds.StudyDate = study.study_date
    ds.StudyTime = "101500"
    ds.AccessionNumber = study.accession_number
    ds.StudyID = study.accession_number[-8:]
    ds.StudyDescription = f"Seed study {study.accession_number}"
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = series_number
    ds.InstanceNumber = index + 1
    ds.SOPInstanceUID = sop_uid
    ds.file_meta.MediaStorageSOPInstanceUID = UID(sop_uid)
    if "Modality" not in ds or not ds.Modality:
        ds.Modality = "OT"


def build_study(
    out_dir: Path,
    *,
    patient_id: str,
    patient_name: str,
    accession_number: str,
    study_date: str = "20240115",
    sources: tuple[str, ...] = ("CT_small.dcm",),
    instances_per_source: int = 1,
) -> SeedStudy:
    """Write one study to `out_dir`: one series per source file name.

    `sources` are names of files in pydicom's test data, for example
    "CT_small.dcm" or "SC_rgb_jpeg_dcmtk.dcm" (JPEG Baseline).
    """
    study = SeedStudy(
        patient_id=patient_id,
        patient_name=patient_name,
        study_uid=_uid("study", patient_id, accession_number),
        study_date=study_date,
        accession_number=accession_number,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    for series_number, source in enumerate(sources, start=1):
        path = get_testdata_file(source)
        if path is None:
            raise FileNotFoundError(f"pydicom test file not found: {source}")
        series_uid = _uid(study.study_uid, "series", series_number, source)
        study.series_uids.append(series_uid)
        for index in range(instances_per_source):
            ds = dcmread(path)
            _restamp(ds, study, series_uid, series_number, index)
            study.modalities.add(str(ds.Modality))
            target = out_dir / f"{ds.SOPInstanceUID}.dcm"
            ds.save_as(target, enforce_file_format=True)
            study.files.append(target)
            study.sop_instance_uids.append(str(ds.SOPInstanceUID))
    return study
