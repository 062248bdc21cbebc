"""Medians, ratios and the result records that every measurement returns."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any


def median(samples: list[float]) -> float:
    """Return the median of `samples`, or NaN when there are none."""
    return statistics.median(samples) if samples else float("nan")


def ratio(subject: float, baseline: float) -> float:
    """Return subject / baseline, or NaN when the baseline is zero or NaN."""
    if not baseline or baseline != baseline:
        return float("nan")
    return subject / baseline


@dataclass
class Comparison:
    """Samples of one quantity through the router and of its baseline, in seconds.

    A target is either a maximum ratio of the medians (`max_ratio`) or a
    maximum difference of the medians in seconds (`max_difference`), or none.
    """

    name: str
    subject: list[float]
    baseline: list[float]
    baseline_label: str
    max_ratio: float | None = None
    max_difference: float | None = None
    unit: str = "s"

    @property
    def subject_median(self) -> float:
        return median(self.subject)

    @property
    def baseline_median(self) -> float:
        return median(self.baseline)

    @property
    def ratio(self) -> float:
        return ratio(self.subject_median, self.baseline_median)

    @property
    def difference(self) -> float:
        return self.subject_median - self.baseline_median

    @property
    def target(self) -> str:
        if self.max_ratio is not None and self.max_ratio < 1:
            # A speed-up target: the router at least 1/max_ratio times faster.
            return f"{1 / self.max_ratio:g}x faster (ratio <= {self.max_ratio:g})"
        if self.max_ratio is not None:
            return f"ratio <= {self.max_ratio:g}"
        if self.max_difference is not None:
            return f"<= baseline + {self.max_difference * 1000:g} ms"
        return ""

    @property
    def target_met(self) -> bool | None:
        """Whether the medians meet the target, or None without a target."""
        if self.max_ratio is not None:
            return self.ratio <= self.max_ratio
        if self.max_difference is not None:
            return self.difference <= self.max_difference
        return None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "unit": self.unit,
            "subject": self.subject,
            "baseline": self.baseline,
            "baseline_label": self.baseline_label,
            "subject_median": self.subject_median,
            "baseline_median": self.baseline_median,
            "ratio": self.ratio,
            "difference": self.difference,
            "target": self.target,
            "target_met": self.target_met,
        }


@dataclass
class Count:
    """A counted outcome, such as failed C-MOVEs, with an optional maximum."""

    name: str
    value: int
    maximum: int | None = None

    @property
    def target_met(self) -> bool | None:
        return None if self.maximum is None else self.value <= self.maximum

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "value": self.value, "maximum": self.maximum,
                "target_met": self.target_met}


@dataclass
class MeasurementResult:
    """The comparisons, counts and notes that one registered measurement returns."""

    name: str
    comparisons: list[Comparison] = field(default_factory=list)
    counts: list[Count] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "comparisons": [comparison.to_json() for comparison in self.comparisons],
            "counts": [count.to_json() for count in self.counts],
            "notes": self.notes,
        }
