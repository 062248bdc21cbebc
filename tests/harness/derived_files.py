"""DICOM files derived from pydicom's test data, with chosen attributes and fresh UIDs.

Character set tests keep each source file's bytes and (0008,0005) unless an
attribute is replaced. A replaced text value is encoded with the file's
(0008,0005), or as Latin-1 when the file declares none, because pydicom 3.0.2
falls back to Latin-1 on write.
"""

from __future__ import annotations

from pathlib import Path

from pydicom import dcmread
from pydicom.data import get_charset_files, get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import UID, generate_uid


def source_path(name: str) -> Path:
    """Return the path of a pydicom test file, looking in charset_files first."""
    charset_files = get_charset_files(name)
    if charset_files:
        return Path(charset_files[0])
    path = get_testdata_file(name)
    if path is None:
        raise FileNotFoundError(f"pydicom has no test file named {name}")
    return Path(str(path))


def derive_file(
    source: str,
    out_path: Path,
    *,
    without_charset: bool = False,
    series_count: int = 1,
    series_items: list[list[Dataset]] | None = None,
    **attributes: object,
) -> list[Path]:
    """Write copies of `source` as one new study and return their paths.

    Each of the `series_count` series contains one instance. `attributes` are
    set on every instance, `without_charset` removes (0008,0005), and
    `series_items`, when given, sets the RequestAttributesSequence items of
    each series in turn.
    """
    study_uid = generate_uid()
    paths = []
    for series_index in range(series_count):
        dataset = dcmread(source_path(source))
        if without_charset and "SpecificCharacterSet" in dataset:
            del dataset.SpecificCharacterSet
        _restamp(dataset, study_uid, series_index)
        for keyword, value in attributes.items():
            setattr(dataset, keyword, value)
        if series_items is not None:
            dataset.RequestAttributesSequence = series_items[series_index]
        path = out_path.with_name(f"{out_path.stem}-{series_index + 1}.dcm")
        path.parent.mkdir(parents=True, exist_ok=True)
        dataset.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def _restamp(dataset: Dataset, study_uid: str, series_index: int) -> None:
    sop_instance_uid = generate_uid()
    dataset.StudyInstanceUID = study_uid
    dataset.SeriesInstanceUID = generate_uid()
    dataset.SeriesNumber = series_index + 1
    dataset.SOPInstanceUID = sop_instance_uid
    dataset.file_meta.MediaStorageSOPInstanceUID = UID(sop_instance_uid)


def requested_procedure_items(*ids: str) -> list[Dataset]:
    """Return RequestAttributesSequence items with one Requested Procedure ID each."""
    items = []
    for requested_procedure_id in ids:
        item = Dataset()
        item.RequestedProcedureID = requested_procedure_id
        items.append(item)
    return items
