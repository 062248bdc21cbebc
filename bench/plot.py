"""Plot relay throughput and the router's peak RSS from a results file.

Run `python -m bench.plot [RESULTS_JSON] [--output PNG]`. It reads the "relay",
"memory" and "ceiling" measurements written by `python -m bench` (default
bench/results/latest.json) and writes docs/benchmarks.png.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # Files only, so no display is needed.
import matplotlib.pyplot as plt  # noqa: E402

from bench.memory import MAX_PEAK_RSS_MB  # noqa: E402
from bench.results import LATEST  # noqa: E402

DEFAULT_OUTPUT = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.png"


def _measurement_data(document: dict[str, Any], name: str) -> dict[str, Any]:
    data: dict[str, Any] = document.get("measurements", {}).get(name, {}).get("data", {})
    return data


def _plot_throughput(axes: Any, document: dict[str, Any]) -> None:
    """Bar chart of router and direct MB/s per retrieve path and socket mode."""
    rows = _measurement_data(document, "relay").get("throughput", [])
    labels = [f"{row['path'].replace(' from ', chr(10))}\n{row['mode']}" for row in rows]
    positions = range(len(rows))
    width = 0.4
    axes.bar([p - width / 2 for p in positions], [row["direct_mb_per_s"] for row in rows],
             width, label="direct")
    axes.bar([p + width / 2 for p in positions], [row["router_mb_per_s"] for row in rows],
             width, label="through yicrouter")
    limits = _measurement_data(document, "ceiling")
    if limits.get("ceiling_mb_per_s"):
        axes.axhline(limits["ceiling_mb_per_s"], color="grey", linestyle="--",
                     label="storescu to storescp, TCP_NODELAY=1")
    if limits.get("pynetdicom_serial_mb_per_s"):
        axes.axhline(limits["pynetdicom_serial_mb_per_s"], color="tab:red", linestyle=":",
                     label="pynetdicom alone, receive then send")
    axes.set_xticks(list(positions), labels, fontsize=7)
    axes.set_ylabel("MB/s")
    megabytes = rows[0]["megabytes"] if rows else 0
    axes.set_title(f"Relay throughput, CT study of {megabytes:.0f} MB")
    axes.legend(fontsize=7)


def _plot_memory(axes: Any, document: dict[str, Any]) -> None:
    """Peak RSS and throughput of the router for each study, against study size."""
    studies = sorted(_measurement_data(document, "memory").get("studies", []),
                     key=lambda study: study["megabytes"])
    sizes = [study["megabytes"] for study in studies]
    axes.plot(sizes, [study["peak_rss_mb"] for study in studies], marker="o", label="peak RSS (VmHWM)")
    axes.plot(sizes, [study["idle_rss_mb"] for study in studies], marker=".", linestyle=":",
              label="RSS after start-up")
    axes.axhline(MAX_PEAK_RSS_MB, color="red", linestyle="--", linewidth=0.8, label="peak RSS target")
    for study in studies:
        axes.annotate(study["label"], (study["megabytes"], study["peak_rss_mb"]), fontsize=7,
                      textcoords="offset points", xytext=(4, 6))
    axes.set_xlabel("study size (MB)")
    axes.set_ylabel("router RSS (MB)")
    axes.set_ylim(bottom=0)
    axes.set_title("Router memory per relayed study")
    rates = axes.twinx()
    rates.plot(sizes, [study["router_mb_per_s"] for study in studies], color="tab:green", marker="s",
               linestyle="--", label="router MB/s")
    rates.set_ylabel("router MB/s")
    rates.set_ylim(bottom=0)
    handles, labels = axes.get_legend_handles_labels()
    more_handles, more_labels = rates.get_legend_handles_labels()
    axes.legend(handles + more_handles, labels + more_labels, fontsize=7, loc="lower right")


def plot(results_path: Path, output_path: Path) -> Path:
    document = json.loads(results_path.read_text(encoding="utf-8"))
    figure, (left, right) = plt.subplots(1, 2, figsize=(13, 5))
    _plot_throughput(left, document)
    _plot_memory(right, document)
    machine = document.get("machine", {})
    figure.suptitle(f"yicrouter benchmarks, {document.get('finished_at', '')}, "
                    f"{machine.get('cpu', '')}", fontsize=9)
    figure.tight_layout()
    output_path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(output_path, dpi=120)
    plt.close(figure)
    return output_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.plot", description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, nargs="?", default=LATEST,
                        help=f"JSON results file (default {LATEST})")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT,
                        help=f"PNG file to write (default {DEFAULT_OUTPUT})")
    args = parser.parse_args(argv)
    if not args.results.is_file():
        parser.error(f"results file not found: {args.results}. Run `python -m bench` first.")
    print(f"plot written to {plot(args.results, args.output)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
