"""Facts about the machine and the software versions behind a benchmark run."""

from __future__ import annotations

import os
import platform
import re
import subprocess
from pathlib import Path

import pydicom
import pynetdicom

import bench  # noqa: F401  (puts tests/ on sys.path for the harness imports)
from harness.dcmtk import dcmtk_tool
from harness.orthanc import ORTHANC_EXECUTABLE


def _first_line(args: list[str]) -> str:
    try:
        completed = subprocess.run(args, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"unknown ({error})"
    lines = (completed.stdout + completed.stderr).strip().splitlines()
    return lines[0].strip() if lines else "unknown"


def _cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return platform.processor() or "unknown"
    match = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
    return match.group(1).strip() if match else "unknown"


def _memory_gib() -> str:
    try:
        text = Path("/proc/meminfo").read_text(encoding="utf-8")
    except OSError:
        return "unknown"
    match = re.search(r"^MemTotal:\s*(\d+) kB", text, re.MULTILINE)
    return f"{int(match.group(1)) / 2**20:.1f} GiB" if match else "unknown"


def machine_facts() -> dict[str, str]:
    """Return the CPU, memory, kernel and tool versions as display strings."""
    return {
        "nproc": str(os.cpu_count()),
        "cpu": _cpu_model(),
        "memory": _memory_gib(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "pynetdicom": pynetdicom.__version__,
        "pydicom": pydicom.__version__,
        "dcmtk": _first_line([dcmtk_tool("storescu"), "--version"]),
        "orthanc": _first_line([ORTHANC_EXECUTABLE, "--version"]),
    }
