"""The settings that the runner passes to every measurement."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from bench.data import DataSizes, data_sizes
from bench.stats import MeasurementResult


@dataclass(frozen=True)
class BenchContext:
    """Settings for one run of the suite."""

    # Tiny data and one repetition, for CI. Smoke runs check nothing about time.
    smoke: bool
    # Timed repetitions of each side of each comparison.
    repeat: int
    # A fresh folder for this measurement's peers, router and data.
    work_dir: Path

    @property
    def sizes(self) -> DataSizes:
        return data_sizes(self.smoke)


# A measurement starts what it needs under context.work_dir, stops it again and
# returns its result.
Measurement = Callable[[BenchContext], MeasurementResult]
