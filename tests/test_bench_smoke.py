"""The benchmark suite's smoke mode runs end to end and records every measurement.

No timing is checked: `python -m bench --smoke` uses tiny data and one
repetition, and this test asserts only that each measurement ran and produced
samples.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPOSITORY_ROOT = Path(__file__).resolve().parent.parent

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]


def _run_bench(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bench", *args], cwd=REPOSITORY_ROOT,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=timeout, check=False)


def test_bench_smoke_records_every_measurement(tmp_path: Path) -> None:
    listed = _run_bench("--list", timeout=60)
    assert listed.returncode == 0, listed.stderr
    names = listed.stdout.split()
    assert names, "python -m bench --list printed no measurements"

    output = tmp_path / "latest.json"
    completed = _run_bench("--smoke", "--output", str(output), timeout=540)
    report = f"stdout:\n{completed.stdout[-4000:]}\nstderr:\n{completed.stderr[-4000:]}"
    assert completed.returncode == 0, report
    document = json.loads(output.read_text(encoding="utf-8"))
    assert document["errors"] == {}, report
    assert sorted(document["measurements"]) == sorted(names), report
    for name, measurement in document["measurements"].items():
        assert measurement["comparisons"] or measurement["counts"], f"{name} recorded nothing"
        for comparison in measurement["comparisons"]:
            assert comparison["subject"], f"{name}: {comparison['name']} has no router samples"
            assert comparison["baseline"], f"{name}: {comparison['name']} has no baseline samples"
