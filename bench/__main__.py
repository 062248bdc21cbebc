"""Run the benchmark suite: `python -m bench [--smoke] [--repeat N] [--only NAME]`.

Each registered measurement times yicrouter and its baseline in the same run
and reports medians and ratios. Targets are checked on the medians and printed,
but they never change the exit status. The exit status is 1 only when a
measurement fails to run, so --smoke in CI checks that the suite works
whatever the speed of the machine.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

from bench.concurrency import measure_concurrency
from bench.ceiling import measure_ceiling
from bench.context import BenchContext, Measurement
from bench.fanout import measure_fanout
from bench.machine import machine_facts
from bench.memory import measure_memory
from bench.relay import measure_relay
from bench.results import LATEST, format_table, write_json
from bench.stats import MeasurementResult

# Measurement name -> function, in the order they run.
MEASUREMENTS: dict[str, Measurement] = {
    "fanout": measure_fanout,
    "concurrency": measure_concurrency,
    "relay": measure_relay,
    "memory": measure_memory,
    "ceiling": measure_ceiling,
}

DEFAULT_REPEAT = 5


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true",
                        help="tiny data and one repetition (unless --repeat is given), for CI")
    parser.add_argument("--repeat", type=int, default=None,
                        help=f"timed repetitions per side of each comparison "
                             f"(default {DEFAULT_REPEAT}, or 1 with --smoke)")
    parser.add_argument("--only", action="append", choices=sorted(MEASUREMENTS), metavar="NAME",
                        help=f"run only this measurement; may be repeated ({', '.join(MEASUREMENTS)})")
    parser.add_argument("--list", action="store_true", help="print the measurement names and exit")
    parser.add_argument("--keep", action="store_true",
                        help="keep the work folders with peer and router logs after the run")
    parser.add_argument("--output", type=Path, default=LATEST,
                        help=f"JSON results file (default {LATEST})")
    args = parser.parse_args(argv)
    if args.repeat is None:
        args.repeat = 1 if args.smoke else DEFAULT_REPEAT
    if args.repeat < 1:
        parser.error(f"--repeat must be at least 1, got {args.repeat}")
    return args


def _run_one(name: str, measurement: Measurement, args: argparse.Namespace,
             work_root: Path) -> MeasurementResult:
    context = BenchContext(smoke=args.smoke, repeat=args.repeat, work_dir=work_root / name)
    context.work_dir.mkdir(parents=True)
    started = time.monotonic()
    print(f"running {name} ...", flush=True)
    result = measurement(context)
    print(f"  {name} took {time.monotonic() - started:.1f} s", flush=True)
    return result


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    if args.list:
        print("\n".join(MEASUREMENTS))
        return 0
    machine = machine_facts()
    for key, value in machine.items():
        print(f"{key:>10}: {value}")
    print(f"{'mode':>10}: {'smoke' if args.smoke else 'full'}, repeat {args.repeat}", flush=True)

    work_root = Path(tempfile.mkdtemp(prefix="yicrouter-bench-"))
    results: list[MeasurementResult] = []
    errors: dict[str, str] = {}
    for name in args.only or list(MEASUREMENTS):
        try:
            results.append(_run_one(name, MEASUREMENTS[name], args, work_root))
        except Exception as error:  # noqa: BLE001 -- one failed measurement must not stop the rest
            traceback.print_exc()
            errors[name] = f"{type(error).__name__}: {error}"

    print()
    print(format_table(results))
    settings = {"smoke": args.smoke, "repeat": args.repeat, "measurements": args.only or list(MEASUREMENTS)}
    path = write_json(results, errors, settings, machine, args.output)
    print(f"\nresults written to {path}")
    if errors or args.keep:
        print(f"work folders with peer and router logs: {work_root}")
    else:
        shutil.rmtree(work_root, ignore_errors=True)
    for name, message in errors.items():
        print(f"FAILED {name}: {message}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
