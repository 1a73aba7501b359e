"""Training-step and inference throughput and peak memory of the six Table 1 variants and other U-Nets.

One process times, in interleaved rounds (see ``_timing.py``), a training step (forward, cross-entropy, backward,
Adam step) and an inference forward pass of:

- the six rows of Table 1: ``unet``, ``baseline``, ``baseline+sgau``, ``baseline+se``, ``baseline+cga``, ``ganet``;
- when installed (the ``bench`` extra), MONAI's ``AttentionUnet`` and ``BasicUNet`` with the same 32..512 widths,
  and segmentation_models_pytorch's ``Unet`` with a ResNet-18 encoder (64..512 widths);
- on CUDA, ``ganet (torch ops)``: GANet with PyTorch operations instead of its layers' Triton kernels, the kernels'
  before/after in the same rounds;
- with ``--compile``, every model twice, eager and ``torch.compile``'d (``<name> (compiled)``, a second copy with the
  same parameters) in the same rounds; the compiled rows' ratios are to the compiled Baseline and to their own eager
  model, and the compile time (the first training step and the first inference pass, which compile) is reported on
  its own, not in the step time.

Memory: the activations autograd keeps for backward, and the peak memory allocated during a training step above
what was allocated before it (``torch.cuda.max_memory_allocated`` on CUDA; on CPU the same count taken by
``_timing.PeakMemory``, which follows every storage the step allocates).

Defaults: 512x384 (``--size 384,512``) with batch 8 on CUDA; on CPU batch 2 at 256x192, where one step of batch 8 at
512x384 takes most of a minute per model.

Examples::

    python benchmarks/bench_models.py --quick
    python benchmarks/bench_models.py --threads 1 --out benchmarks/results
    python benchmarks/bench_models.py --device cuda --dtype bf16 --out results
    python benchmarks/bench_models.py --threads 1 --compile --models baseline,ganet --out benchmarks/results
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(1, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import _timing as timing  # noqa: E402

from group_attention import VARIANTS, build_variant  # noqa: E402
from group_attention.layers import get_kernels, kernels  # noqa: E402

IN_CHANNELS, NUM_CLASSES = 3, 2
WIDTHS = (32, 64, 128, 256, 512)
REFERENCE = "baseline"
MODES = ("train", "infer")


def monai_attention_unet() -> nn.Module:
    from monai.networks.nets import AttentionUnet

    return AttentionUnet(
        spatial_dims=2, in_channels=IN_CHANNELS, out_channels=NUM_CLASSES, channels=WIDTHS, strides=(2, 2, 2, 2)
    )


def monai_basic_unet() -> nn.Module:
    from monai.networks.nets import BasicUNet

    return BasicUNet(spatial_dims=2, in_channels=IN_CHANNELS, out_channels=NUM_CLASSES, features=(*WIDTHS, 32))


def smp_unet() -> nn.Module:
    import segmentation_models_pytorch as smp

    return smp.Unet("resnet18", encoder_weights=None, in_channels=IN_CHANNELS, classes=NUM_CLASSES)


def variant_factory(name: str) -> Callable[[], nn.Module]:
    return lambda: build_variant(name, in_channels=IN_CHANNELS, num_classes=NUM_CLASSES)


FACTORIES: dict[str, Callable[[], nn.Module]] = {
    **{name: variant_factory(name) for name in VARIANTS},
    "MONAI AttentionUnet": monai_attention_unet,
    "MONAI BasicUNet": monai_basic_unet,
    "smp Unet (resnet18)": smp_unet,
    # GANet with PyTorch operations instead of the layers' Triton kernels: the kernels' before/after (CUDA)
    "ganet (torch ops)": variant_factory("ganet"),
}
TORCH_OPS = " (torch ops)"
COMPILED = " (compiled)"
OPTIONAL = {
    "MONAI AttentionUnet": "monai",
    "MONAI BasicUNet": "monai",
    "smp Unet (resnet18)": "segmentation_models_pytorch",
}


# -- one model -------------------------------------------------------------------------------------------------------
class Bench:
    """A model with its optimizer and a fixed batch: the training step and the inference pass to time."""

    def __init__(
        self, name: str, args: argparse.Namespace, device: torch.device, dtype: str, compiled: bool = False
    ) -> None:
        torch.manual_seed(0)
        self.name = name + (COMPILED if compiled else "")
        self.device = device
        self.dtype = dtype
        model = FACTORIES[name]().to(device)
        if args.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.parameters = sum(p.numel() for p in model.parameters())
        self.model = model
        self.optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
        height, width = args.size_hw
        generator = torch.Generator().manual_seed(0)
        images = torch.randn(args.batch, IN_CHANNELS, height, width, generator=generator)
        self.images = images.to(
            device, memory_format=torch.channels_last if args.channels_last else torch.contiguous_format
        )
        self.labels = torch.randint(0, NUM_CLASSES, (args.batch, height, width), generator=generator).to(device)
        self.forward = torch.compile(model) if compiled else model
        # Each layer picks its implementation in forward (backward follows), so only forward needs the choice.
        self.kernels = "torch" if name.endswith(TORCH_OPS) else get_kernels()
        self.compile_s = self.compile() if compiled else None

    def compile(self) -> float:
        """Run one training step and one inference pass (each compiles its graphs); their wall time in seconds."""
        start = time.perf_counter()
        self.train_step()
        self.infer()
        timing.synchronize(self.device)
        return time.perf_counter() - start

    def loss(self) -> torch.Tensor:
        with timing.autocast_context(self.device, self.dtype), kernels(self.kernels):
            logits = self.forward(self.images)
        return F.cross_entropy(logits.float(), self.labels)

    def train_step(self) -> None:
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        self.loss().backward()
        self.optimizer.step()

    def infer(self) -> None:
        self.model.eval()
        with torch.no_grad(), timing.autocast_context(self.device, self.dtype), kernels(self.kernels):
            self.forward(self.images)

    def saved_activation_bytes(self) -> int:
        self.model.train()
        bytes_kept, loss = timing.saved_tensor_bytes(self.loss)
        del loss
        return bytes_kept

    def peak_step_bytes(self) -> int:
        """Peak memory allocated during a training step above what was allocated before it (parameters, optimizer
        state): ``torch.cuda.max_memory_allocated`` on CUDA, :class:`~_timing.PeakMemory` elsewhere."""
        self.optimizer.zero_grad(set_to_none=True)
        if self.device.type != "cuda":
            with timing.PeakMemory() as tracker:
                self.train_step()
            return tracker.peak
        torch.cuda.synchronize(self.device)
        before = torch.cuda.memory_allocated(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        self.train_step()
        torch.cuda.synchronize(self.device)
        return torch.cuda.max_memory_allocated(self.device) - before


# -- report ----------------------------------------------------------------------------------------------------------
def mib(value: "int | None") -> str:
    return "n/a" if value is None else f"{value / 2**20:.0f}"


def reference_of(name: str) -> str:
    """The Baseline a model is compared with: the compiled one for compiled models."""
    return REFERENCE + COMPILED if name.endswith(COMPILED) else REFERENCE


def relative(results: dict[str, dict[str, Any]], name: str, key: str) -> "float | None":
    value, reference = results[name].get(key), results.get(reference_of(name), {}).get(key)
    return value / reference if value is not None and reference else None


def compiled_cells(result: dict[str, Any]) -> list[str]:
    """A compiled model's step and inference time as a ratio to its eager model's, and its compile time."""
    compile_s = result.get("compile_s")
    return [
        timing.format_ratio(result["train"].get("vs_eager")),
        timing.format_ratio(result["infer"].get("vs_eager")),
        "" if compile_s is None else f"{compile_s:.0f}",
    ]


def run_report(run: dict[str, Any]) -> list[str]:
    """The Markdown section of one run (one dtype)."""
    settings, results = run["settings"], run["results"]
    headers = [
        "model",
        "params (M)",
        "train step ms",
        "train img/s",
        f"train vs {REFERENCE}",
        "infer ms",
        "infer img/s",
        f"infer vs {REFERENCE}",
        "peak train memory MiB",
        f"vs {REFERENCE}",
        "activations kept MiB",
        f"vs {REFERENCE}",
    ]
    if settings.get("compile"):
        headers += ["train vs eager", "infer vs eager", "compile s"]
    rows = []
    for name, result in results.items():
        train, infer = result["train"], result["infer"]
        rows.append(
            [
                name,
                f"{result['parameters'] / 1e6:.3f}",
                f"{timing.format_ms(train['median_ms'])} ±{train['half_iqr_percent']:.0f}%",
                f"{train['images_per_s']:.3g}",
                timing.format_ratio(train.get(f"vs_{REFERENCE}")),
                f"{timing.format_ms(infer['median_ms'])} ±{infer['half_iqr_percent']:.0f}%",
                f"{infer['images_per_s']:.3g}",
                timing.format_ratio(infer.get(f"vs_{REFERENCE}")),
                mib(result["peak_memory_bytes"]),
                timing.format_ratio(relative(results, name, "peak_memory_bytes")),
                mib(result["saved_activation_bytes"]),
                timing.format_ratio(relative(results, name, "saved_activation_bytes")),
            ]
            + (compiled_cells(result) if settings.get("compile") else [])
        )
    height, width = settings["size"]
    lines = [
        f"## {settings['device']}, {settings['dtype']}{' autocast' if settings['dtype'] != 'fp32' else ''}, "
        f"batch {settings['batch']} at {width}x{height}",
        "",
        timing.markdown_table(headers, rows),
        "",
    ]
    return lines + timing.notes_section(run["notes"])


def report(machine: dict[str, Any], runs: list[dict[str, Any]], command: str) -> str:
    first = runs[0]["settings"]
    lines = timing.report_header("Model benchmark", machine) + [
        f"Command: `{command}`. {'channels_last' if first['channels_last'] else 'Contiguous (NCHW)'}, "
        f"{'eager and torch.compile' if first['compile'] else 'eager'}, Adam, cross-entropy; up to {first['rounds']} "
        f"interleaved rounds after {first['warmup']} warm-up steps. A training step is zero_grad, forward, loss, "
        "backward and the optimizer step. Times are medians with half the interquartile range; ratios to the "
        "Baseline are medians of per-round ratios. Peak train memory: the most memory allocated during a training "
        "step above what was allocated before it (parameters and optimizer state); activations kept: the storages "
        "autograd holds for backward after the forward pass."
        + (
            " Compiled rows (`(compiled)`, inductor, default mode) are compared with the compiled Baseline, and with "
            "their eager model in `vs eager`; `compile s` is the wall time of their first training step and first "
            "inference pass, which compile (not in the step times)."
            if first["compile"]
            else ""
        ),
        "",
    ]
    for run in runs:
        lines += run_report(run)
    return "\n".join(lines)


# -- command line ----------------------------------------------------------------------------------------------------
def parse_args(argv: "list[str] | None" = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument(
        "--dtype", default="fp32", help="fp32, bf16 or fp16 (autocast), or a comma-separated list, one section each"
    )
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument(
        "--compile", action="store_true", help="also time every model torch.compile'd (inductor), in the same rounds"
    )
    parser.add_argument("--quick", action="store_true", help="tiny images, two rounds: a smoke test")
    parser.add_argument("--batch", type=int, default=None, help="default 8 on CUDA, 2 on CPU, 1 with --quick")
    parser.add_argument("--size", default=None, help="H,W; default 384,512 on CUDA, 192,256 on CPU")
    parser.add_argument(
        "--models", default=None, help=f"comma-separated subset of: {', '.join(FACTORIES)} (default all)"
    )
    parser.add_argument("--rounds", type=int, default=None, help="timed rounds (default 7; quick 2)")
    parser.add_argument("--warmup", type=int, default=None, help="warm-up steps (default 2; quick 1)")
    parser.add_argument("--max-seconds", type=float, default=600.0, help="time budget per mode (>= 3 rounds)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    parser.add_argument("--out", default=None, help="folder for <stem>.md and <stem>.json")
    parser.add_argument("--stem", default=None, help="file name stem (default models-<device>[-<dtype>]...)")
    args = parser.parse_args(argv)
    cuda = args.device == "cuda"
    args.batch = args.batch or (1 if args.quick else 8 if cuda else 2)
    default_size = "64,96" if args.quick else "384,512" if cuda else "192,256"
    args.size_hw = timing.parse_ints(args.size or default_size, 2, "--size")
    args.rounds = args.rounds or (2 if args.quick else 7)
    args.warmup = args.warmup or (1 if args.quick else 2)
    return args


def default_stem(args: argparse.Namespace) -> str:
    parts = ["models", args.device]
    parts += [args.dtype.replace(",", "-")] if args.dtype != "fp32" else []
    parts += ["channels-last"] if args.channels_last else []
    parts += ["compile"] if args.compile else []
    parts += ["quick"] if args.quick else []
    return "-".join(parts)


def selected_models(args: argparse.Namespace, notes: list[str]) -> list[str]:
    # "(torch ops)" contenders differ from the others only on CUDA, where the layers have Triton kernels.
    default = [name for name in FACTORIES if args.device == "cuda" or not name.endswith(TORCH_OPS)]
    names = default if not args.models else [name.strip() for name in args.models.split(",")]
    unknown = [name for name in names if name not in FACTORIES]
    if unknown:
        raise SystemExit(f"--models: unknown {unknown}; valid names: {list(FACTORIES)}")
    available = []
    for name in names:
        if name in OPTIONAL:
            try:
                __import__(OPTIONAL[name])
            except ImportError:
                notes.append(f"{name} skipped: {OPTIONAL[name]} is not installed (pip install group-attention[bench])")
                continue
        available.append(name)
    return available


def run_models(
    args: argparse.Namespace,
    dtype: str,
    device: torch.device,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """Time and measure every selected model for one dtype; returns ``{"settings", "results", "notes"}``."""
    notes: list[str] = []
    benches: dict[str, Bench] = {}
    for name in selected_models(args, notes):
        for compiled in (False, True) if args.compile else (False,):
            try:
                bench = Bench(name, args, device, dtype, compiled)
            except Exception as error:  # noqa: BLE001 - a broken optional contender is skipped, not fatal
                notes.append(f"{name}{COMPILED if compiled else ''} skipped: {type(error).__name__}: {error}")
                continue
            benches[bench.name] = bench
            if compiled:
                log(f"  compiled {bench.name} in {bench.compile_s:.0f} s")
    log(f"== {dtype}: {', '.join(benches)}; batch {args.batch} at {args.size_hw}")
    samples: dict[str, dict[str, timing.Samples]] = {}
    for mode in MODES:
        contenders = {name: (bench.train_step if mode == "train" else bench.infer) for name, bench in benches.items()}
        samples[mode] = timing.time_interleaved(
            contenders,
            device,
            warmup=args.warmup,
            rounds=args.rounds,
            min_sample_s=0.0,
            max_seconds=args.max_seconds,
            progress=log,
        )
        log(f"  {mode}: " + ", ".join(f"{n} {timing.format_ms(s.median)} ms" for n, s in samples[mode].items()))
    results: dict[str, dict[str, Any]] = {}
    for name, bench in benches.items():
        result: dict[str, Any] = {"parameters": bench.parameters, "compile_s": bench.compile_s}
        for mode in MODES:
            summary = samples[mode][name].summary()
            summary["half_iqr_percent"] = (summary["p75_ms"] - summary["p25_ms"]) / 2 / summary["median_ms"] * 100
            summary["images_per_s"] = 1000 * args.batch / summary["median_ms"]
            if reference_of(name) in samples[mode]:
                summary[f"vs_{REFERENCE}"] = timing.paired_ratio(samples[mode], name, reference_of(name))
            eager = name.removesuffix(COMPILED)
            if name != eager and eager in samples[mode]:
                summary["vs_eager"] = timing.paired_ratio(samples[mode], name, eager)
            summary["samples_ms"] = samples[mode][name].times_ms
            result[mode] = summary
        result["saved_activation_bytes"] = bench.saved_activation_bytes()
        result["peak_memory_bytes"] = bench.peak_step_bytes()
        result["peak_memory_method"] = (
            "torch.cuda.max_memory_allocated over a training step, above the memory allocated before it"
            if device.type == "cuda"
            else "peak bytes of the storages allocated during a training step (_timing.PeakMemory)"
        )
        results[name] = result
    settings = {
        "device": device.type,
        "dtype": dtype,
        "channels_last": args.channels_last,
        "compile": args.compile,
        "batch": args.batch,
        "size": list(args.size_hw),
        "rounds": args.rounds,
        "warmup": args.warmup,
        "quick": args.quick,
        "optimizer": "Adam(lr=1e-4)",
        "loss": "cross_entropy",
        "cudnn_benchmark": device.type == "cuda",
    }
    return {"settings": settings, "results": results, "notes": notes}


def main(argv: "list[str] | None" = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = timing.resolve_device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input size, as in training
    log = lambda message: print(message, flush=True)  # noqa: E731
    machine = timing.machine_info(device)
    log(f"bench_models: {timing.machine_line(machine)}")
    command = ("python benchmarks/bench_models.py " + " ".join(argv if argv is not None else sys.argv[1:])).strip()
    runs: list[dict[str, Any]] = []
    paths = None
    for dtype in timing.parse_dtypes(args.dtype):
        runs.append(run_models(args, dtype, device, log))
        if args.out:  # after every run, so that a later failure or timeout keeps what was measured
            payload = {"benchmark": "models", "machine": machine, "command": command, "runs": runs}
            paths = timing.write_results(
                args.out, args.stem or default_stem(args), report(machine, runs, command), payload
            )
    print(report(machine, runs, command), flush=True)
    if paths:
        log(f"wrote {paths[0]} and {paths[1]}")
    return {"benchmark": "models", "machine": machine, "command": command, "runs": runs}


if __name__ == "__main__":
    main()
