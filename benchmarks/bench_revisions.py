#!/usr/bin/env python
"""Before and after in one process: the layers of an earlier commit against the working tree's, forward and backward.

The package at ``--before`` (a git commit) is extracted into a temporary folder under another name and imported beside
the working tree's ``group_attention`` (the package imports itself only relatively), so both run in the same process
in interleaved rounds and their ratio is not a comparison of two machines' moods. Cases are CGA with 32 groups and
the gated skip of a converted U-Net (``SkipAttention``) at MONAI BasicUNet's feature sizes (batch 2, 128x128 input)
or, with ``--ganet-shapes``, CGA and SGAU at GANet's (batch 2, 192x256), and, with ``--models``, that BasicUNet's
whole training step with CGA after each ``TwoConv`` or with SGAU skips; ``--variants ganet,baseline+cga`` adds
Table 1 variants' training steps (batch 2 at 192x256). With ``--compile`` every layer and model of both revisions
runs ``torch.compile``'d (inductor's default mode; the warm-up calls compile, outside the timed rounds).

    python benchmarks/bench_revisions.py --before 4fe76d2 --threads 1 --models --out benchmarks/results \\
        --stem revisions-cpu
"""

from __future__ import annotations

import argparse
import importlib
import os
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _timing import (  # noqa: E402
    format_ms,
    format_ratio,
    machine_info,
    markdown_table,
    notes_section,
    paired_ratio,
    report,
    report_header,
    sgd_training_step,
    time_interleaved,
)

import group_attention as after  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
# (B, C, H, W) of the features after BasicUNet's TwoConv blocks at a 2x3x128x128 input; skips as (low, high).
CGA_SHAPES = [(2, 32, 128, 128), (2, 32, 64, 64), (2, 64, 32, 32), (2, 128, 16, 16), (2, 256, 8, 8)]
SKIP_SHAPES = [
    ((2, 32, 128, 128), (2, 32, 64, 64)),
    ((2, 32, 64, 64), (2, 64, 32, 32)),
    ((2, 64, 32, 32), (2, 128, 16, 16)),
]
# GANet's at batch 2, 192x256 (--ganet-shapes): CGA after each encoder stage; SGAU's (low, high) per decoder level.
GANET_CGA_SHAPES = [(2, 32 << level, 192 >> level, 256 >> level) for level in range(5)]
GANET_SGAU_SHAPES = [
    ((2, 32 << level, 192 >> level, 256 >> level), (2, 64 << level, 96 >> level, 128 >> level)) for level in range(4)
]


def import_commit(commit: str, folder: str) -> Any:
    """``group_attention`` as of ``commit``, imported as ``ga_before`` from ``folder``."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", commit, "group_attention"],
        check=True,
        capture_output=True,
    ).stdout
    with tempfile.TemporaryFile() as handle:
        handle.write(archive)
        handle.seek(0)
        with tarfile.open(fileobj=handle) as tar:
            if hasattr(tarfile, "data_filter"):  # Python 3.12, and 3.8.17+ backports
                tar.extractall(folder, filter="data")
            else:
                tar.extractall(folder)  # noqa: S202 (our own repository's archive)
    os.rename(os.path.join(folder, "group_attention"), os.path.join(folder, "ga_before"))
    for name in [name for name in sys.modules if name == "ga_before" or name.startswith("ga_before.")]:
        del sys.modules[name]  # an earlier call's commit
    sys.path.insert(0, folder)
    try:
        return importlib.import_module("ga_before")
    finally:
        sys.path.remove(folder)


def compiled_if(module: torch.nn.Module, compile: bool) -> torch.nn.Module:
    """``torch.compile(module)`` (inductor's default mode) with ``compile``, else ``module``."""
    return torch.compile(module) if compile else module


def layer_step(
    package: Any, make: Callable[[Any], Callable], inputs: list[torch.Tensor], grad: torch.Tensor, compile: bool = False
):
    layer = compiled_if(make(package), compile)

    def step() -> None:
        layer(*inputs).backward(grad)

    return step


def model_step(package: Any, conversion: str, compile: bool = False) -> Callable[[], None]:
    from monai.networks.nets import BasicUNet
    from monai.networks.nets.basic_unet import TwoConv

    torch.manual_seed(0)
    model = BasicUNet(spatial_dims=2, in_channels=3, out_channels=2)
    if conversion == "cga":
        package.add_attention(model, "cga", after=TwoConv, groups=32)
    elif conversion == "sgau skips":
        package.sgau_skips(model, groups=32)
    model = compiled_if(model, compile)
    return sgd_training_step(model, torch.randn(2, 3, 128, 128), torch.randint(0, 2, (2, 128, 128)))


def variant_step(package: Any, variant: str, size: tuple[int, int], compile: bool = False) -> Callable[[], None]:
    """A Table 1 variant's training step (SGD, batch 2 at ``size``) as built by ``package``."""
    torch.manual_seed(0)
    model = compiled_if(package.build_variant(variant, num_classes=2), compile)
    return sgd_training_step(model, torch.randn(2, 3, *size), torch.randint(0, 2, (2, *size)))


def variant_inference(package: Any, variant: str, size: tuple[int, int], compile: bool = False) -> Callable[[], None]:
    """A Table 1 variant's inference (evaluation mode, no gradient, batch 2 at ``size``) as built by ``package``."""
    torch.manual_seed(0)
    model = compiled_if(package.build_variant(variant, num_classes=2).eval(), compile)
    x = torch.randn(2, 3, *size)

    def step() -> None:
        with torch.no_grad():
            model(x)

    return step


def shrink(shape: tuple[int, ...], quick: bool) -> tuple[int, ...]:
    """``shape`` with its spatial sizes divided by 4 (at least 2) for ``--quick``."""
    return shape[:2] + tuple(max(2, size // 4) for size in shape[2:]) if quick else shape


def cases(
    before: Any,
    models: bool,
    quick: bool = False,
    variants: tuple[str, ...] = (),
    compile: bool = False,
    inference: bool = False,
    ganet_shapes: bool = False,
) -> list[tuple[str, dict[str, Callable[[], None]]]]:
    """(case name, {"before": step, "after": step[, "unmodified": step]}) for every case."""
    versions = (("before", before), ("after", after))
    found = []
    for shape in (shrink(shape, quick) for shape in (GANET_CGA_SHAPES if ganet_shapes else CGA_SHAPES)):
        x = torch.randn(shape, requires_grad=True)
        grad = torch.randn(shape)
        steps = {
            tag: layer_step(package, lambda p, c=shape[1]: p.CGA(c, 32), [x], grad, compile)
            for tag, package in versions
        }
        found.append((f"CGA(groups=32) {tuple(shape)}", steps))
    skip_shapes = GANET_SGAU_SHAPES if ganet_shapes else SKIP_SHAPES
    for low_shape, high_shape in ((shrink(low, quick), shrink(high, quick)) for low, high in skip_shapes):
        low, high = torch.randn(low_shape, requires_grad=True), torch.randn(high_shape, requires_grad=True)
        if ganet_shapes:  # SGAU's whole skip: gated low-level half and upsampled high-level half, concatenated
            name, grad = "SGAU(groups=32)", torch.randn(low_shape[0], 2 * low_shape[1], *low_shape[2:])
            make = lambda p, c=low_shape[1], h=high_shape[1]: p.SGAU(c, h, 32)  # noqa: E731
        else:
            name, grad = "SkipAttention(groups=32)", torch.randn(low_shape)
            make = lambda p, c=low_shape[1]: p.integrations.SkipAttention(c, 32)  # noqa: E731
        steps = {tag: layer_step(package, make, [low, high], grad, compile) for tag, package in versions}
        found.append((f"{name} {tuple(low_shape)} <- {tuple(high_shape)}", steps))
    if models:
        for conversion in ("cga", "sgau skips"):
            steps = {tag: model_step(package, conversion, compile) for tag, package in versions}
            steps["unmodified"] = model_step(after, "none", compile)
            found.append((f"MONAI BasicUNet + {conversion}, training step", steps))
    size = (48, 64) if quick else (192, 256)
    for variant in variants:
        steps = {tag: variant_step(package, variant, size, compile) for tag, package in versions}
        found.append((f"{variant}, training step at {size[0]}x{size[1]}", steps))
        if inference:
            steps = {tag: variant_inference(package, variant, size, compile) for tag, package in versions}
            found.append((f"{variant}, inference at {size[0]}x{size[1]}", steps))
    return found


def main(argv: "list[str] | None" = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", required=True, help="the earlier commit (any git revision)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--models", action="store_true", help="also MONAI BasicUNet's training step (needs monai)")
    parser.add_argument(
        "--variants", default="", help="comma-separated Table 1 variants whose training step to time (e.g. ganet)"
    )
    parser.add_argument(
        "--inference", action="store_true", help="also each variant's inference (eval mode, no gradient, forward only)"
    )
    parser.add_argument("--quick", action="store_true", help="spatial sizes / 4, no minimum sample time: smoke test")
    parser.add_argument(
        "--ganet-shapes", action="store_true", help="CGA and SGAU at GANet's sizes instead of MONAI BasicUNet's"
    )
    parser.add_argument(
        "--compile", action="store_true", help="torch.compile every layer and model of both revisions (inductor)"
    )
    parser.add_argument("--out", default=None)
    parser.add_argument("--stem", default="revisions-cpu")
    parser.add_argument("--note", action="append", default=[])
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device("cpu")
    with tempfile.TemporaryDirectory() as folder:
        before = import_commit(args.before, folder)
        rows, results = [], []
        variants = tuple(name.strip() for name in args.variants.split(",") if name.strip())
        for name, steps in cases(
            before, args.models, args.quick, variants, args.compile, args.inference, args.ganet_shapes
        ):
            min_sample_s = 0.0 if args.quick else 0.02
            samples = time_interleaved(steps, device, warmup=3, rounds=args.rounds, min_sample_s=min_sample_s)
            ratio = paired_ratio(samples, "after", "before")
            row = {"case": name, "ratio_after_to_before": ratio, **{k: s.summary() for k, s in samples.items()}}
            overhead = ""
            if "unmodified" in samples:
                row["before_vs_unmodified"] = paired_ratio(samples, "before", "unmodified")
                row["after_vs_unmodified"] = paired_ratio(samples, "after", "unmodified")
                overhead = f"{format_ratio(row['before_vs_unmodified'])} -> {format_ratio(row['after_vs_unmodified'])}"
            results.append(row)
            rows.append(
                [
                    name,
                    format_ms(samples["before"].median),
                    format_ms(samples["after"].median),
                    format_ratio(ratio),
                    overhead,
                ]
            )
            print(" | ".join(rows[-1]), flush=True)
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", args.before], capture_output=True, text=True
    ).stdout.strip()
    lines = report_header(f"Before ({commit}) and after, in one process", machine_info(device))
    lines += [
        f"Settings: cpu, fp32, forward and backward (inference rows: forward, no gradient), "
        f"{'torch.compile (inductor), ' if args.compile else 'eager, '}"
        f"{args.rounds} interleaved rounds.",
        "",
        markdown_table(["case", "before (ms)", "after (ms)", "after / before (paired)", "vs unmodified model"], rows),
        "",
    ]
    lines += notes_section(args.note)
    payload = {"benchmark": "revisions", "before": commit, "settings": vars(args), "results": results}
    report(args.out, args.stem, lines, payload)
    return payload


if __name__ == "__main__":
    main()
