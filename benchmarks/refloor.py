"""Recompute the memory-traffic floors of a stored layer benchmark with the current floor model, in place.

``bench_layers.py`` writes every contender's times, GPU kernel times and the copy bandwidth of each case into its
JSON; the floor is derived from those. When the floor model changes (``bench_layers.floor_bytes``), this script
recomputes the floors, the ratios to them and the Markdown report from the stored measurements, without timing
anything again, and records what it did in the run's notes.

``--bandwidth-at-least-largest`` is for CUDA runs taken before the copy bandwidth came from the copy kernel's own
GPU time: timed from the host, the copies of a few MB were bound by their launch. It raises each case's bandwidth
to the one measured for the run's largest tensor (not launch-bound). Where a tensor fits in the GPU's L2 cache a
copy is faster still, so the floors stay too high there and the ratios to them are lower bounds.

Example::

    python benchmarks/refloor.py benchmarks/results/layers-cuda.json --bandwidth-at-least-largest
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _timing as timing  # noqa: E402
import bench_layers  # noqa: E402

NOTE = "floors recomputed from the stored measurements by benchmarks/refloor.py (floor model of {date})"
BANDWIDTH_NOTE = (
    "copy bandwidth raised to the largest tensor's ({bandwidth:.0f} GB/s) where the stored one was "
    "lower (launch-bound copies timed from the host): floors are upper bounds where the data fits in "
    "L2, and the ratios to them lower bounds"
)


def refloor(payload: dict[str, Any], *, bandwidth_at_least_largest: bool, date: str) -> dict[str, Any]:
    for run in payload["runs"]:
        cases = run["cases"]
        largest = max(cases, key=lambda case: case["features"] * case["element_size"])["bandwidth_GBps"]
        notes = [note for note in run["notes"] if not note.startswith(("floors recomputed", "copy bandwidth raised"))]
        for case in cases:
            bandwidth = case["bandwidth_GBps"]
            if bandwidth_at_least_largest:
                case.setdefault("measured_bandwidth_GBps", bandwidth)
                bandwidth = max(case["measured_bandwidth_GBps"], largest)
            bench_layers.add_floors(case, bandwidth * 1e9)
        notes.append(NOTE.format(date=date))
        if bandwidth_at_least_largest:
            notes.append(BANDWIDTH_NOTE.format(bandwidth=largest))
        run["notes"] = notes
    return payload


def main(argv: "list[str] | None" = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("json", help="a bench_layers.py JSON; it and the Markdown beside it are rewritten")
    parser.add_argument("--bandwidth-at-least-largest", action="store_true")
    parser.add_argument("--date", default="2026-11-26", help="the floor model's date, for the note")
    args = parser.parse_args(argv)
    with open(args.json) as stream:
        payload = json.load(stream)
    refloor(payload, bandwidth_at_least_largest=args.bandwidth_at_least_largest, date=args.date)
    out_dir, name = os.path.split(os.path.abspath(args.json))
    markdown = bench_layers.report(payload["machine"], payload["runs"], payload["command"])
    for path in timing.write_results(out_dir, name.removesuffix(".json"), markdown, payload):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
