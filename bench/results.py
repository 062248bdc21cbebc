"""Print the results table and write the results to bench/results/latest.json."""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping, Sequence

from bench.stats import Comparison, Count, MeasurementResult

RESULTS_DIR = Path(__file__).resolve().parent / "results"
LATEST = RESULTS_DIR / "latest.json"


def _seconds(value: float) -> str:
    if math.isnan(value):
        return "n/a"
    return f"{value * 1000:.1f} ms" if value < 1 else f"{value:.3f} s"


def _verdict(met: bool | None) -> str:
    return {True: "met", False: "MISSED", None: ""}[met]


def _comparison_row(measurement: str, comparison: Comparison) -> list[str]:
    return [
        measurement, comparison.name, _seconds(comparison.subject_median),
        _seconds(comparison.baseline_median), comparison.baseline_label,
        "n/a" if math.isnan(comparison.ratio) else f"{comparison.ratio:.2f}",
        comparison.target, _verdict(comparison.target_met),
    ]


def _count_row(measurement: str, count: Count) -> list[str]:
    target = "" if count.maximum is None else f"<= {count.maximum}"
    return [measurement, count.name, str(count.value), "", "", "", target, _verdict(count.target_met)]


def format_table(results: Sequence[MeasurementResult]) -> str:
    """Return a plain-text table: one row per comparison and per count."""
    header = ["measurement", "quantity", "router", "baseline", "baseline is", "ratio", "target", ""]
    rows = [header]
    for result in results:
        rows += [_comparison_row(result.name, comparison) for comparison in result.comparisons]
        rows += [_count_row(result.name, count) for count in result.counts]
    widths = [max(len(row[column]) for row in rows) for column in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    for result in results:
        lines += [f"{result.name}: {note}" for note in result.notes]
    return "\n".join(lines)


def write_json(results: Sequence[MeasurementResult], errors: Mapping[str, str],
               settings: Mapping[str, Any], machine: Mapping[str, str], path: Path = LATEST) -> Path:
    """Write every result, failed measurement and machine fact as one JSON document."""
    document = {
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "settings": dict(settings),
        "machine": dict(machine),
        "measurements": {result.name: result.to_json() for result in results},
        "errors": dict(errors),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".json.tmp")
    # NaN is not valid JSON, so it is written as null.
    temporary.write_text(json.dumps(_without_nan(document), indent=2) + "\n", encoding="utf-8")
    temporary.replace(path)
    return path


def _without_nan(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {key: _without_nan(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_without_nan(item) for item in value]
    return value
