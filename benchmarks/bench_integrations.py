"""Training-step cost of putting group attention into models built elsewhere, against the unmodified models.

One process times, in interleaved rounds (see ``_timing.py``), a training step (forward, cross-entropy, backward,
SGD step) of each model as built by its package and of its conversions:

- torchvision ``resnet50``: CGA after each of the 16 bottlenecks (``add_attention(model, "cga", after=Bottleneck)``);
- segmentation_models_pytorch ``Unet`` with a ResNet-34 encoder: CGA after each encoder block, SGAU skips
  (``sgau_skips``), and both;
- MONAI ``BasicUNet`` (2D, its default widths 32..256): SGAU skips, CGA after each ``TwoConv``, and both.

Each family also times timm's ``SEModule`` (squeeze-and-excitation, the attention layer people drop in today) inserted
at CGA's places: a reference for what the lightest channel attention costs on that model, not a target.

Each conversion is reported as the paired ratio (median over rounds of its time over its own unmodified model's
time in the same round). The target of issue 16 is 1.10x or less for CGA and for SGAU skips.

With ``--compile`` every model is also timed ``torch.compile``'d (``<name> (compiled)``, sharing the eager model's
parameters) in the same rounds: its ratio is to the compiled unmodified model, with a second ratio to the eager
unmodified model, and its compile time (the first training step, which compiles) is reported on its own. MONAI's
BasicUNet is compiled with inductor's layout optimization off: with it, its compiled training step fails in torch
2.14 whether or not it was converted (the fake kernel of ATen's ``replication_pad2d_backward`` disagrees with the
real one's strides).

Defaults (CPU): batch 2 at 128x128, 8 rounds; ``--quick``: 64x64, 3 rounds, for the smoke test.

Examples::

    python benchmarks/bench_integrations.py --threads 1 --out benchmarks/results
    python benchmarks/bench_integrations.py --device cuda --size 256 --batch 8 --stem integrations-cuda
    python benchmarks/bench_integrations.py --threads 2 --compile --families monai --stem integrations-cpu-compile
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import sys
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(1, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import _timing as timing  # noqa: E402

from group_attention import add_attention, sgau_skips  # noqa: E402

CLASSES = 2
COMPILED = " (compiled)"


def resnet50_models() -> dict[str, nn.Module]:
    from torchvision.models import resnet50
    from torchvision.models.resnet import Bottleneck

    converted, reference = resnet50(weights=None, num_classes=CLASSES), resnet50(weights=None, num_classes=CLASSES)
    add_attention(converted, "cga", after=Bottleneck, groups=32)
    add_attention(reference, timm_se(), after=Bottleneck)
    return {
        "resnet50": resnet50(weights=None, num_classes=CLASSES),
        "resnet50 + cga": converted,
        "resnet50 + timm se": reference,
    }


def timm_se() -> type:
    """timm's squeeze-and-excitation module (its defaults: reduction 16, ReLU, sigmoid gate)."""
    from timm.layers import SEModule

    return SEModule


def smp_unet_models() -> dict[str, nn.Module]:
    import segmentation_models_pytorch as smp
    from torchvision.models.resnet import BasicBlock

    def build() -> nn.Module:
        return smp.Unet("resnet34", encoder_weights=None, classes=CLASSES)

    cga, skips, both, reference = build(), build(), build(), build()
    add_attention(cga.encoder, "cga", after=BasicBlock, groups=32)
    sgau_skips(skips, groups=32)
    add_attention(both.encoder, "cga", after=BasicBlock, groups=32)
    sgau_skips(both, groups=32)
    add_attention(reference.encoder, timm_se(), after=BasicBlock)
    return {
        "smp unet-r34": build(),
        "smp unet-r34 + cga": cga,
        "smp unet-r34 + sgau skips": skips,
        "smp unet-r34 + cga + sgau skips": both,
        "smp unet-r34 + timm se": reference,
    }


def monai_basic_unet_models(groups: int = 32, reference: bool = True) -> dict[str, nn.Module]:
    """MONAI's BasicUNet as built, and with CGA after every ``TwoConv`` and/or SGAU skips of ``groups`` groups
    (32, the paper's, is one channel per group on its 32-channel maps); with ``reference``, also with timm's SE after
    every ``TwoConv``."""
    from monai.networks.nets import BasicUNet
    from monai.networks.nets.basic_unet import TwoConv

    def build() -> nn.Module:
        return BasicUNet(spatial_dims=2, in_channels=3, out_channels=CLASSES)

    skips, cga, both = build(), build(), build()
    sgau_skips(skips, groups=groups)
    add_attention(cga, "cga", after=TwoConv, groups=groups)
    add_attention(both, "cga", after=TwoConv, groups=groups)
    sgau_skips(both, groups=groups)
    tag = "" if groups == 32 else f" (groups={groups})"
    models = {
        "monai basicunet": build(),
        f"monai basicunet + sgau skips{tag}": skips,
        f"monai basicunet + cga{tag}": cga,
        f"monai basicunet + cga + sgau skips{tag}": both,
    }
    if reference:
        models["monai basicunet + timm se"] = build()
        add_attention(models["monai basicunet + timm se"], timm_se(), after=TwoConv)
    return models


class Family(NamedTuple):
    """A model family: its models' builder, the unmodified model's name, whether the output is a segmentation map,
    and the inductor options it is compiled with (``--compile``)."""

    build: Callable[[], dict[str, nn.Module]]
    reference: str
    dense: bool
    compile_options: "dict[str, Any] | None" = None


# BasicUNet's compiled training step needs inductor's layout optimization off (see the module docstring).
MONAI_COMPILE_OPTIONS = {"layout_optimization": False}
# A family's models run the same code objects (MONAI's UpCat.forward breaks the graph, and the function resuming
# after the break is compiled for each level of each model): with dynamo's default limit of 8 compilations per code
# object the later models would run partly eager, so --compile raises it, and a run that still hits it fails.
RECOMPILE_LIMIT = 64

FAMILIES: dict[str, Family] = {
    "resnet50": Family(resnet50_models, "resnet50", False),
    "smp": Family(smp_unet_models, "smp unet-r34", True),
    "monai": Family(monai_basic_unet_models, "monai basicunet", True, MONAI_COMPILE_OPTIONS),
    "monai-groups8": Family(
        functools.partial(monai_basic_unet_models, groups=8, reference=False),
        "monai basicunet",
        True,
        MONAI_COMPILE_OPTIONS,
    ),
}


def parse_args(argv: "list[str] | None") -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--size", type=int, default=None, help="input height = width (default 128; 64 with --quick)")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=None, help="timed rounds (default 8; 3 with --quick)")
    parser.add_argument("--families", default=",".join(FAMILIES), help=f"comma-separated, from {list(FAMILIES)}")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: unchanged)")
    parser.add_argument("--max-seconds", type=float, default=None, help="wall-clock budget per family's rounds")
    parser.add_argument(
        "--compile", action="store_true", help="also time every model torch.compile'd (inductor), in the same rounds"
    )
    parser.add_argument("--quick", action="store_true", help="small and short: for the smoke test")
    parser.add_argument("--out", default=None, help="write <stem>.md and <stem>.json into this folder")
    parser.add_argument("--stem", default="integrations-cpu")
    parser.add_argument("--note", action="append", default=[], help="a line for the report's notes (repeatable)")
    args = parser.parse_args(argv)
    args.size = args.size or (64 if args.quick else 128)
    args.rounds = args.rounds or (3 if args.quick else 8)
    families = [name.strip() for name in args.families.split(",") if name.strip()]
    unknown = [name for name in families if name not in FAMILIES]
    if unknown or not families:
        raise SystemExit(f"--families: expected names from {list(FAMILIES)}, got {args.families!r}")
    args.families = families
    if args.size < 32 or args.size % 32:
        raise SystemExit(f"--size must be a multiple of 32 (the U-Nets halve it five times), got {args.size}")
    return args


def compiled_steps(
    models: dict[str, nn.Module], spec: Family, x: torch.Tensor, target: torch.Tensor, device: torch.device
) -> dict[str, tuple[Callable[[], None], float]]:
    """``<name> (compiled)`` -> its training step (``torch.compile`` of the eager model, the same parameters) and the
    wall time in seconds of its first step, which compiles."""
    compiled = {}
    for name, model in models.items():
        step = timing.sgd_training_step(torch.compile(model, options=spec.compile_options), x, target)
        begin = time.perf_counter()
        step()
        timing.synchronize(device)
        compiled[name + COMPILED] = (step, time.perf_counter() - begin)
    return compiled


def recompile_limit_name() -> str:
    """The name of dynamo's limit of compilations per code object: ``recompile_limit``, ``cache_size_limit`` in older
    torch (2.2)."""
    return "recompile_limit" if hasattr(torch._dynamo.config, "recompile_limit") else "cache_size_limit"


def recompile_limit_hits() -> int:
    """How many times in this process dynamo has given up compiling a frame for hitting its recompile limit (the
    frame then runs eagerly): counted by dynamo as "recompile limit exceeded", "cache_size_limit reached" in torch
    2.2."""
    from torch._dynamo.utils import counters

    signs = ("recompile limit", "cache_size_limit")
    return sum(count for reason, count in counters["unimplemented"].items() if any(s in reason.lower() for s in signs))


def check_fully_compiled(hits_before: int) -> None:
    """Fail if dynamo hit its recompile limit since ``hits_before`` (:func:`recompile_limit_hits`): the compiled rows
    would time partly eager models."""
    if recompile_limit_hits() > hits_before:
        raise RuntimeError(
            f"torch.compile hit dynamo's recompile limit ({getattr(torch._dynamo.config, recompile_limit_name())} per "
            "code object), "
            "so some compiled models ran partly eager; raise RECOMPILE_LIMIT or time fewer families at once"
        )


def time_family(
    family: str, args: argparse.Namespace, x: torch.Tensor, device: torch.device
) -> tuple[list[list[str]], list[dict[str, Any]]]:
    """Time one family's models (and with ``--compile`` their compiled copies) in interleaved rounds: its table rows
    and result records."""
    rows, results = [], []
    spec = FAMILIES[family]
    models = {name: model.to(device).train() for name, model in spec.build().items()}
    target_shape = (args.batch, args.size, args.size) if spec.dense else (args.batch,)
    target = torch.randint(0, CLASSES, target_shape, device=device)
    steps = {name: timing.sgd_training_step(model, x, target) for name, model in models.items()}
    hits_before = recompile_limit_hits()
    compiled = compiled_steps(models, spec, x, target, device) if args.compile else {}
    steps.update({name: step for name, (step, _) in compiled.items()})
    samples = timing.time_interleaved(
        steps,
        device,
        warmup=2,
        rounds=args.rounds,
        min_sample_s=0.0,
        max_seconds=args.max_seconds,
        progress=lambda message, f=family: print(f"{f}: {message}", flush=True),
    )
    if args.compile:
        check_fully_compiled(hits_before)
    parameters = {name: sum(p.numel() for p in model.parameters()) for name, model in models.items()}
    for name, sample in samples.items():
        eager_name = name.removesuffix(COMPILED)
        reference = spec.reference + (COMPILED if name.endswith(COMPILED) else "")
        ratio = 1.0 if name == reference else timing.paired_ratio(samples, name, reference)
        vs_eager = timing.paired_ratio(samples, name, spec.reference) if name.endswith(COMPILED) else None
        seconds = compiled[name][1] if name in compiled else None
        results.append(
            {
                "family": family,
                "model": name,
                "reference": reference,
                "ratio": ratio,
                "ratio_to_eager_reference": vs_eager,
                "compile_s": seconds,
                "parameters": parameters[eager_name],
                **sample.summary(),
            }
        )
        rows.append(
            [
                name,
                f"{parameters[eager_name]:,}",
                timing.format_ms(sample.median),
                f"{timing.format_ms(sample.percentile(0.25))}-{timing.format_ms(sample.percentile(0.75))}",
                "reference" if name == reference else timing.format_ratio(ratio),
            ]
            + ([timing.format_ratio(vs_eager), "" if seconds is None else f"{seconds:.0f}"] if args.compile else [])
        )
    return rows, results


def main(argv: "list[str] | None" = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = timing.resolve_device(args.device)
    machine = timing.machine_info(device)
    torch.manual_seed(0)
    x = torch.randn(args.batch, 3, args.size, args.size, device=device)
    rows, results = [], []
    limit = recompile_limit_name()
    recompiles = (
        torch._dynamo.config.patch(**{limit: max(getattr(torch._dynamo.config, limit), RECOMPILE_LIMIT)})
        if args.compile
        else contextlib.nullcontext()
    )
    with recompiles:
        for family in args.families:
            family_rows, family_results = time_family(family, args, x, device)
            rows += family_rows
            results += family_results
    settings = (
        f"{args.device}, batch {args.batch}, {args.size}x{args.size}, fp32, {args.rounds} rounds, "
        f"SGD training step (forward, cross-entropy, backward, step)"
        + (
            "; every model also torch.compile'd (inductor, default mode; MONAI's without layout optimization), "
            "compared with the compiled unmodified model and, in `vs unmodified eager`, with the eager one; "
            "`compile s` is its first training step, which compiles (not in the step times)"
            if args.compile
            else ""
        )
    )
    lines = timing.report_header("Integrations benchmark: training step of converted models", machine)
    lines += [
        f"Settings: {settings}.",
        "",
        timing.markdown_table(
            ["model", "parameters", "step median (ms)", "p25-p75 (ms)", "vs unmodified (paired)"]
            + (["vs unmodified eager (paired)", "compile s"] if args.compile else []),
            rows,
        ),
        "",
    ]
    lines += timing.notes_section(args.note)
    payload = {"benchmark": "integrations", "machine": machine, "settings": vars(args), "results": results}
    timing.report(args.out, args.stem, lines, payload)
    return payload


if __name__ == "__main__":
    main()
