"""Benchmarks that run yicrouter and the direct path to its peers side by side.

Run `python -m bench --help`. Each measurement starts its own peers and router
on loopback ports, times the path through the router and its baseline in the
same run, and reports medians and ratios. The suite reuses the test harness in
tests/harness, so importing this package puts tests/ on sys.path.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPOSITORY_ROOT = Path(__file__).resolve().parent.parent
TESTS_DIR = REPOSITORY_ROOT / "tests"

if str(TESTS_DIR) not in sys.path:
    sys.path.insert(0, str(TESTS_DIR))
