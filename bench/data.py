"""Synthetic studies for the benchmarks, built from pydicom's test files.

Every instance is a copy of a pydicom test file restamped by
yicrouter.demo.seed.build_study with new patient, study, series and SOP
Instance UIDs. CT studies get new 16-bit pixel data of a chosen matrix size,
because pydicom's CT_small.dcm is only 128x128. Patient details are invented.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom import dcmread

from yicrouter.demo.seed import SeedStudy, build_study

CT_MATRIX = 512


@dataclass(frozen=True)
class DataSizes:
    """How much data the benchmarks build and move."""

    # 512x512 16-bit CT instances in the CT study (0.5 MB each).
    ct_instances: int
    # Instances of 128x128 CT (about 39 kB each) in the small-instance study.
    small_instances: int
    # Size of the pixel data of the single large instance, in MB (10**6 bytes).
    large_megabytes: int
    # Studies moved at once in the concurrency measurement, one per workstation.
    concurrent_studies: int
    # Instances in each of those studies.
    instances_per_concurrent_study: int


FULL_SIZES = DataSizes(ct_instances=200, small_instances=1000, large_megabytes=200,
                       concurrent_studies=20, instances_per_concurrent_study=10)
SMOKE_SIZES = DataSizes(ct_instances=5, small_instances=20, large_megabytes=5,
                        concurrent_studies=20, instances_per_concurrent_study=1)


def data_sizes(smoke: bool) -> DataSizes:
    return SMOKE_SIZES if smoke else FULL_SIZES


def _ct_pixels(rows: int, columns: int, index: int) -> bytes:
    """Return little-endian signed 16-bit pixels: a ramp that differs per instance."""
    ramp = np.add.outer(np.arange(rows, dtype=np.int32), np.arange(columns, dtype=np.int32))
    return ((ramp + 7 * index) % 4096 - 1024).astype("<i2").tobytes()


def _resize_ct(path: Path, rows: int, columns: int, index: int) -> None:
    """Rewrite a CT_small copy in place with a rows x columns pixel matrix."""
    dataset = dcmread(path)
    dataset.Rows = rows
    dataset.Columns = columns
    dataset.BitsAllocated = 16
    dataset.BitsStored = 16
    dataset.HighBit = 15
    dataset.PixelRepresentation = 1
    dataset.SamplesPerPixel = 1
    dataset.PhotometricInterpretation = "MONOCHROME2"
    dataset.PixelData = _ct_pixels(rows, columns, index)
    dataset.save_as(path, enforce_file_format=True)


def build_ct_study(out_dir: Path, *, instances: int, patient_id: str,
                   matrix: int = CT_MATRIX) -> SeedStudy:
    """Write a study of `instances` matrix x matrix 16-bit CT instances."""
    study = build_study(out_dir, patient_id=patient_id, patient_name=f"Bench^{patient_id}",
                        accession_number=f"A{patient_id}"[-16:], sources=("CT_small.dcm",),
                        instances_per_source=instances)
    for index, path in enumerate(study.files):
        _resize_ct(path, matrix, matrix, index)
    return study


def build_small_study(out_dir: Path, *, instances: int, patient_id: str) -> SeedStudy:
    """Write a study of `instances` unchanged 128x128 CT_small copies."""
    return build_study(out_dir, patient_id=patient_id, patient_name=f"Bench^{patient_id}",
                       accession_number=f"A{patient_id}"[-16:], sources=("CT_small.dcm",),
                       instances_per_source=instances)


def build_large_instance(out_dir: Path, *, megabytes: int, patient_id: str) -> SeedStudy:
    """Write a study of one CT instance whose pixel data is at least `megabytes` MB.

    The matrix is square, so the pixel data is rounded up to the next even
    side length.
    """
    side = math.ceil(math.sqrt(megabytes * 10**6 / 2))
    side += side % 2
    study = build_study(out_dir, patient_id=patient_id, patient_name=f"Bench^{patient_id}",
                        accession_number=f"A{patient_id}"[-16:], sources=("CT_small.dcm",),
                        instances_per_source=1)
    _resize_ct(study.files[0], side, side, 0)
    return study


def build_concurrent_studies(out_dir: Path, sizes: DataSizes) -> list[SeedStudy]:
    """Write one small study per workstation of the concurrency measurement."""
    return [
        build_small_study(out_dir / f"load-{number:02d}", instances=sizes.instances_per_concurrent_study,
                          patient_id=f"LOAD-{number:02d}")
        for number in range(1, sizes.concurrent_studies + 1)
    ]
