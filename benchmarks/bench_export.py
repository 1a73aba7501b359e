#!/usr/bin/env python
"""Inference of GANet exported to ONNX and run by onnxruntime on the CPU, against eager PyTorch, in one run.

    python benchmarks/bench_export.py --threads 1 --out benchmarks/results --stem export-cpu

Each contender runs one forward pass of the same random-weight GANet (batch 1, 384x512 by default, the paper's
size) in rounds with a rotated order (``_timing.time_interleaved``); the table gives medians, quartiles and the median
of the per-round ratios to eager PyTorch. The exported graph is checked first: its outputs at the export size and at
another size (which the U-Net must pad) against eager, as a relative error.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _timing import (  # noqa: E402
    machine_info,
    markdown_table,
    notes_section,
    paired_ratio,
    parse_ints,
    report_header,
    time_interleaved,
    write_results,
)

from group_attention import build_variant  # noqa: E402


def export_onnx(model: torch.nn.Module, example: torch.Tensor, path: str, dynamo: bool) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            dims = {0: torch.export.Dim.DYNAMIC, 2: torch.export.Dim.DYNAMIC, 3: torch.export.Dim.DYNAMIC}
            torch.onnx.export(model, (example,), path, dynamo=True, dynamic_shapes=({**dims},), input_names=["x"])
        else:
            torch.onnx.export(
                model,
                (example,),
                path,
                dynamo=False,
                input_names=["x"],
                dynamic_axes={"x": {0: "batch", 2: "height", 3: "width"}},
            )


def relative_error(actual: np.ndarray, expected: torch.Tensor) -> float:
    expected = expected.numpy()
    return float(np.abs(actual - expected).max() / max(np.abs(expected).max(), 1e-12))


def main(argv: "list[str] | None" = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", default="ganet")
    parser.add_argument("--size", default="384,512", help="H,W of the timed input (default: the paper's 384,512)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1, help="threads of both PyTorch and onnxruntime")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--exporter", choices=("dynamo", "legacy"), default="dynamo")
    parser.add_argument("--out", default=None)
    parser.add_argument("--stem", default="export-cpu")
    args = parser.parse_args(argv)
    import onnxruntime

    height, width = parse_ints(args.size, 2, "--size")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build_variant(args.variant).eval()
    x = torch.randn(args.batch, 3, height, width)
    other = torch.randn(args.batch, 3, height // 2 + 7, width // 2 + 3)
    notes = [
        f"{args.variant}, random weights, batch {args.batch} at {height}x{width}, {args.threads} thread(s) each",
        f"exported with torch.onnx.export(dynamo={args.exporter == 'dynamo'}) and dynamic batch and spatial axes",
    ]
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "model.onnx")
        begin = time.perf_counter()
        export_onnx(model, x, path, args.exporter == "dynamo")
        sizes = {name: os.path.getsize(os.path.join(folder, name)) / 2**20 for name in sorted(os.listdir(folder))}
        notes.append(
            f"export took {time.perf_counter() - begin:.1f} s; files written: "
            + ", ".join(f"{name} {size:.1f} MiB" for name, size in sizes.items())
        )
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = args.threads
        options.inter_op_num_threads = 1
        session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        with torch.no_grad():
            errors = {
                f"{tuple(t.shape[2:])}": relative_error(session.run(None, {"x": t.numpy()})[0], model(t))
                for t in (x, other)
            }
        notes.append(
            "largest relative difference from eager PyTorch: "
            + ", ".join(f"{size}: {error:.1e}" for size, error in errors.items())
        )

        def eager() -> None:
            with torch.inference_mode():
                model(x)

        feed = {"x": x.numpy()}
        samples = time_interleaved(
            {"PyTorch eager": eager, "onnxruntime": lambda: session.run(None, feed)},
            torch.device("cpu"),
            warmup=2,
            rounds=args.rounds,
            min_sample_s=0.0,
        )
    rows = [
        [
            name,
            f"{s.median:.1f}",
            f"{s.percentile(0.25):.1f}-{s.percentile(0.75):.1f}",
            f"{paired_ratio(samples, name, 'PyTorch eager'):.2f}x",
        ]
        for name, s in samples.items()
    ]
    machine = machine_info(torch.device("cpu"))
    markdown = "\n".join(
        report_header(f"Exported {args.variant}: onnxruntime against eager PyTorch (CPU)", machine)
        + [markdown_table(["contender", "median ms", "p25-p75 ms", "time / eager"], rows), ""]
        + notes_section(notes)
    )
    print(markdown)
    if args.out:
        payload = {
            "machine": machine,
            "args": vars(args),
            "errors": errors,
            "notes": notes,
            "samples": {name: s.summary() for name, s in samples.items()},
        }
        print("wrote", *write_results(args.out, args.stem, markdown, payload))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
