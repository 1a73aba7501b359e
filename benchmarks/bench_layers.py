"""Forward and forward+backward time of CGA, SE, SGE and SGAU next to what people would use instead.

For every encoder stage of GANet at 512x384 (batch 8 by default) and any ``--shape`` given, one process times, in
interleaved rounds (see ``_timing.py``):

- ``CGA``, ``SE`` and ``SGE`` from this library;
- ``timm SE``: timm's ``SEModule`` (the usual squeeze-and-excitation);
- ``SGE (materializing)``: SGE as its authors' code computes it, materializing ``x * mean(x)``;
- the memory-traffic floor of each layer: the bytes it must read and write (see :func:`floor_bytes`) over the copy
  bandwidth measured at the same tensor size;
- on CUDA, each layer also with PyTorch operations instead of its Triton kernels (``CGA (torch ops)`` and so on,
  ``group_attention.layers.kernels("torch")``): the before/after of the kernels, in the same rounds.

For every decoder level it times ``SGAU`` next to ``ConcatSkip`` (U-Net's plain skip, which SGAU extends), and
compares the difference with the floor of SGAU's attention.

Examples::

    python benchmarks/bench_layers.py --quick                       # smoke test, seconds
    python benchmarks/bench_layers.py --out benchmarks/results      # GANet's shapes and (4, 64, 96, 128)
    python benchmarks/bench_layers.py --device cuda --dtype bf16 --channels-last --out results
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(1, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import _timing as timing  # noqa: E402

from group_attention import CGA, SE, SGAU, SGE  # noqa: E402
from group_attention.layers import ConcatSkip, kernels  # noqa: E402

GANET_WIDTHS = (32, 64, 128, 256, 512)
GROUPS = 32
DEFAULT_SHAPE = (4, 64, 96, 128)
MODES = ("fwd", "fwd+bwd")
ENCODER_CONTENDERS = ("timm SE", "SE", "CGA", "SGE", "SGE (materializing)")
SKIP_CONTENDERS = ("ConcatSkip", "SGAU")
COMPILED = " (compiled)"
TORCH_OPS = " (torch ops)"
KERNEL_LAYERS = ("SE", "CGA", "SGE", "SGAU")  # the layers with Triton kernels on CUDA
MAP_BYTES = 4  # the group maps are float32 statistics whatever the features' dtype


class MaterializingSGE(nn.Module):
    """SGE as its authors' code (github.com/implus/PytorchInsight) computes it: ``x * avg_pool(x)`` is
    materialized, summed over each group's channels and standardized; the reference the fused SGE must beat."""

    def __init__(self, channels: int, groups: int = GROUPS) -> None:
        super().__init__()
        self.groups = groups
        self.weight = nn.Parameter(torch.zeros(1, groups, 1, 1))
        self.bias = nn.Parameter(torch.ones(1, groups, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        grouped = x.reshape(batch * self.groups, -1, height, width)
        similarity = (grouped * grouped.mean((2, 3), keepdim=True)).sum(1, keepdim=True)
        flat = similarity.view(batch * self.groups, -1)
        flat = flat - flat.mean(1, keepdim=True)
        flat = flat / (flat.std(1, keepdim=True) + 1e-5)
        gate = flat.view(batch, self.groups, height, width) * self.weight + self.bias
        return (grouped * torch.sigmoid(gate.view(batch * self.groups, 1, height, width))).view_as(x)


class TorchOps(nn.Module):
    """Run ``layer`` with PyTorch operations instead of its Triton kernels (each layer picks its implementation in
    forward, so backward follows)."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        with kernels("torch"):
            return self.layer(*inputs)


def with_torch_ops(modules: dict[str, nn.Module], settings: "Settings") -> dict[str, nn.Module]:
    """On CUDA (eager), add ``<layer> (torch ops)`` beside every layer that has Triton kernels."""
    if settings.device.type != "cuda":
        return modules
    extra = {name + TORCH_OPS: TorchOps(module) for name, module in modules.items() if name in KERNEL_LAYERS}
    return {**modules, **extra}


def timm_se(channels: int) -> nn.Module:
    from timm.layers import SEModule

    return SEModule(channels)


ENCODER_FACTORIES: dict[str, Callable[[int], nn.Module]] = {
    "timm SE": timm_se,
    "SE": lambda channels: SE(channels),
    "CGA": lambda channels: CGA(channels, GROUPS),
    "SGE": lambda channels: SGE(channels, GROUPS),
    "SGE (materializing)": lambda channels: MaterializingSGE(channels, GROUPS),
}


# -- the memory-traffic floor ----------------------------------------------------------------------------------------
def floor_bytes(
    layer: str, mode: str, features: int, maps: int, element_size: int, *, low: int = 0, high: int = 0
) -> "int | None":
    """Bytes a layer must read and write, with every pass fused as far as its data dependencies allow.

    ``features`` is the element count of the input ``x`` (``N``, ``e`` bytes each), ``maps`` that of its ``m``
    group maps (``M = N m / C``, float32: 4 bytes), ``element_size`` is ``e``. A pass cannot start before a global
    reduction it depends on has finished; everything else is assumed fused. Group maps are either kept (written
    once, read where needed) or recomputed from ``x`` in a pass that reads ``x`` anyway, or by reading ``x`` once
    more: the floor takes the cheaper, so it never charges more than re-reading ``x`` (with one channel per group the
    maps are ``x`` itself).

    - SE: forward reads ``x`` for the channel means, then reads ``x`` and writes ``y``: ``3Ne``. Backward reads the
      output gradient ``g`` and ``x`` for the per-channel sums of ``g x``, then reads ``g`` again and writes ``dx``:
      ``4Ne``.
    - CGA: forward reads ``x`` for the group sums and their statistics, needs the maps again to pool their
      standardized sigmoid (kept: ``8M``; or ``x`` re-read: ``Ne``), then reads ``x`` and writes ``y``:
      ``3Ne + min(8M, Ne)``. Backward reads ``g`` and ``x`` (per-channel sums; the maps are sums of the ``x`` it
      reads), then reads ``g``, the maps (``4M`` kept, or ``Ne``) and writes ``dx``. Forward+backward:
      ``min(7Ne + 12M, 9Ne)``.
    - SGE: forward reads ``x`` for the channel means, ``x`` for the dot-product maps' statistics, then ``x`` (the
      maps are recomputed from the channels it reads) and writes ``y``: ``4Ne``. Backward reads ``g`` and ``x``
      (the gate's gradient per position; the per-channel sums that feed ``dx`` are accumulated in the same pass),
      then reads ``g`` and writes ``dx``, which needs per position the map and the gate's gradient again (kept:
      write and read both, ``16M``; or ``x`` re-read: ``Ne``). Forward+backward: ``8Ne + min(16M, Ne)``.
    - SGAU's attention, the cost of SGAU over ConcatSkip, which already reads ``low`` and writes it into the
      concatenation (``low``: ``L`` elements; ``high``: ``H`` elements, ``M`` maps at the high level): forward
      reads ``high`` twice (channel means, maps and their statistics) and the maps once more where the attention
      is applied (kept: ``8M``; or ``high`` re-read: ``He``): ``2He + min(8M, He)``. Backward (ConcatSkip's is
      free: its input gradients are views) reads ``g`` and ``low`` once, writing ``d low``, then reads ``high``
      once and writes ``d high``, with the maps' gradient kept in between: ``(3L + 2H)e + 8M``.
    """
    n, e, kept = features, element_size, maps * MAP_BYTES
    if layer == "SGAU attention":
        forward = 2 * high * e + min(2 * kept, high * e)
        total = forward + (3 * low + 2 * high) * e + 2 * kept
    elif layer in ("SE", "timm SE"):
        forward, total = 3 * n * e, 7 * n * e
    elif layer == "CGA":
        forward = 3 * n * e + min(2 * kept, n * e)
        total = min(7 * n * e + 3 * kept, 9 * n * e)
    elif layer in ("SGE", "SGE (materializing)"):
        forward, total = 4 * n * e, 8 * n * e + min(4 * kept, n * e)
    else:
        return None
    return forward if mode == "fwd" else total


def add_floors(case: dict[str, Any], bandwidth: float) -> None:
    """Each contender's floor (bytes, and ms at ``bandwidth`` bytes/s) and its time and GPU kernel time over it; for
    SGAU, the attention's: SGAU's time minus ConcatSkip's."""
    case["bandwidth_GBps"] = bandwidth / 1e9
    element_size = case["element_size"]
    for mode, by_name in case["results"].items():
        if case["kind"] == "skip":
            sgau, concat = by_name["SGAU"], by_name["ConcatSkip"]
            bytes_needed = floor_bytes(
                "SGAU attention",
                mode,
                0,
                case["maps"],
                element_size,
                low=case["features"],
                high=math.prod(case["high_shape"]),
            )
            floor_ms = 1000 * bytes_needed / bandwidth
            overhead = sgau["median_ms"] - concat["median_ms"]
            kernels_ms = None
            if sgau.get("kernel_ms") and concat.get("kernel_ms"):
                kernels_ms = sgau["kernel_ms"] - concat["kernel_ms"]
            sgau.update(
                attention_ms=overhead,
                floor_bytes=bytes_needed,
                floor_ms=floor_ms,
                vs_floor=overhead / floor_ms,
                attention_kernel_ms=kernels_ms,
                kernels_vs_floor=kernels_ms / floor_ms if kernels_ms else None,
            )
            continue
        for name, summary in by_name.items():
            bytes_needed = floor_bytes(name.removesuffix(TORCH_OPS), mode, case["features"], case["maps"], element_size)
            floor_ms = 1000 * bytes_needed / bandwidth if bytes_needed else None
            kernels_ms = summary.get("kernel_ms")
            summary.update(
                floor_bytes=bytes_needed,
                floor_ms=floor_ms,
                vs_floor=summary["median_ms"] / floor_ms if floor_ms else None,
                kernels_vs_floor=kernels_ms / floor_ms if floor_ms and kernels_ms else None,
            )


# -- cases -----------------------------------------------------------------------------------------------------------
@dataclass
class Settings:
    device: torch.device
    dtype: str
    channels_last: bool
    compile: bool
    rounds: int
    warmup: int
    max_seconds: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "device": self.device.type,
            "dtype": self.dtype,
            "channels_last": self.channels_last,
            "compile": self.compile,
            "rounds": self.rounds,
            "warmup": self.warmup,
            "max_seconds_per_mode": self.max_seconds,
        }


def feature_dtype(settings: Settings) -> torch.dtype:
    """Under autocast the layers see the convolutions' bf16/fp16 outputs, so the features come in that dtype."""
    return timing.DTYPES[settings.dtype] or torch.float32


def make_features(shape: tuple[int, ...], settings: Settings, generator: torch.Generator) -> torch.Tensor:
    x = torch.randn(shape, generator=generator).to(settings.device, feature_dtype(settings))
    if settings.channels_last and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x.requires_grad_()


def prepare(module: nn.Module, settings: Settings) -> nn.Module:
    module = module.to(settings.device)
    if settings.channels_last:
        module = module.to(memory_format=torch.channels_last)
    return module


def with_compiled(modules: dict[str, nn.Module], settings: "Settings") -> dict[str, nn.Module]:
    """With ``--compile``, add ``<contender> (compiled)`` (``torch.compile``, inductor's default mode, the same
    parameters) beside every contender: eager and compiled in the same rounds."""
    if not settings.compile:
        return modules
    return {**modules, **{name + COMPILED: torch.compile(module) for name, module in modules.items()}}


def workloads(
    module: nn.Module,
    inputs: tuple[torch.Tensor, ...],
    settings: Settings,
) -> dict[str, Callable[[], Any]]:
    """``fwd`` (no autograd graph) and ``fwd+bwd`` (gradients of every input and parameter, not accumulated,
    as a layer inside a network gets them) of ``module(*inputs)``."""
    params = tuple(p for p in module.parameters() if p.requires_grad)
    with torch.no_grad(), timing.autocast_context(settings.device, settings.dtype):
        grad_output = torch.randn_like(module(*inputs))

    def forward() -> None:
        with torch.no_grad(), timing.autocast_context(settings.device, settings.dtype):
            module(*inputs)

    def forward_backward() -> None:
        with timing.autocast_context(settings.device, settings.dtype):
            out = module(*inputs)
        torch.autograd.grad(out, inputs + params, grad_output)

    return {"fwd": forward, "fwd+bwd": forward_backward}


def saved_bytes(module: nn.Module, inputs: tuple[torch.Tensor, ...], settings: Settings) -> int:
    """Activation bytes kept for backward, not counting the inputs (which the previous layer keeps anyway)."""
    input_storages = {t.untyped_storage().data_ptr() for t in inputs}

    def run():
        with timing.autocast_context(settings.device, settings.dtype):
            return module(*inputs)

    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        pointer = tensor.untyped_storage().data_ptr()
        if pointer not in input_storages:
            storages[pointer] = tensor.untyped_storage().nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        out = run()
    del out
    return sum(storages.values())


def time_case(
    modules: dict[str, nn.Module], inputs: tuple[torch.Tensor, ...], settings: Settings, log: Callable[[str], None]
) -> dict[str, dict[str, dict[str, Any]]]:
    """Time every module in both modes; returns mode -> contender -> summary (with ``saved_bytes``)."""
    results: dict[str, dict[str, dict[str, Any]]] = {}
    for mode in MODES:
        contenders = {name: workloads(module, inputs, settings)[mode] for name, module in modules.items()}
        samples = timing.time_interleaved(
            contenders,
            settings.device,
            warmup=settings.warmup,
            rounds=settings.rounds,
            max_seconds=settings.max_seconds,
        )
        results[mode] = {name: {**samples[name].summary(), "samples": samples} for name in modules}
        log(f"  {mode}: " + ", ".join(f"{name} {timing.format_ms(s.median)} ms" for name, s in samples.items()))
    for name, module in modules.items():
        results["fwd+bwd"][name]["saved_bytes"] = saved_bytes(module, inputs, settings)
        for mode in MODES:  # CUDA only: the kernels' own time, without launch gaps
            if not name.endswith(TORCH_OPS):
                results[mode][name]["kernel_ms"] = timing.kernel_ms(
                    workloads(module, inputs, settings)[mode], settings.device, calls=3
                )
    return results


def add_compiled_ratios(results: dict[str, dict[str, dict[str, Any]]]) -> None:
    """Store, per mode, each compiled contender's time over its eager twin's as ``vs_eager``."""
    for by_name in results.values():
        for name in list(by_name):
            if name.endswith(COMPILED) and name.removesuffix(COMPILED) in by_name:
                by_name[name]["vs_eager"] = ratio_fields(by_name, name, name.removesuffix(COMPILED))


def add_kernel_speedups(results: dict[str, dict[str, dict[str, Any]]]) -> None:
    """Store, per mode, each layer's PyTorch-operations time over its kernels' time as ``kernel_speedup``."""
    for by_name in results.values():
        for name in KERNEL_LAYERS:
            if name in by_name and name + TORCH_OPS in by_name:
                by_name[name]["kernel_speedup"] = ratio_fields(by_name, name + TORCH_OPS, name)


def ratio_fields(mode_results: dict[str, dict[str, Any]], name: str, reference: str) -> "float | None":
    if name not in mode_results or reference not in mode_results:
        return None
    samples = mode_results[name]["samples"]
    return timing.paired_ratio(samples, name, reference)


def encoder_case(
    label: str,
    shape: tuple[int, ...],
    settings: Settings,
    bandwidth: float,
    log: Callable[[str], None],
    only: "set[str] | None" = None,
) -> dict[str, Any]:
    generator = torch.Generator().manual_seed(0)
    x = make_features(shape, settings, generator)
    channels = shape[1]
    modules = {}
    notes = []
    for name in ENCODER_CONTENDERS:
        if only is not None and name not in only:
            continue
        if name in ("CGA", "SGE", "SGE (materializing)") and channels % GROUPS:
            notes.append(f"{name} skipped: {channels} channels are not divisible by {GROUPS} groups")
            continue
        if name == "SGE (materializing)" and len(shape) != 4:
            notes.append("SGE (materializing) is written for 2D maps only")
            continue
        try:
            modules[name] = prepare(ENCODER_FACTORIES[name](channels), settings)
        except ImportError as error:
            notes.append(f"{name} skipped: {error}")
    modules = with_torch_ops(with_compiled(modules, settings), settings)
    log(f"{label} {tuple(shape)}: {', '.join(modules)}")
    results = time_case(modules, (x,), settings, log)
    add_kernel_speedups(results)
    add_compiled_ratios(results)
    for by_name in results.values():
        for name, summary in by_name.items():
            summary["vs_timm_se"] = ratio_fields(by_name, name, "timm SE")
            summary["vs_materializing_sge"] = ratio_fields(by_name, name, "SGE (materializing)")
    case = {
        "case": label,
        "kind": "encoder",
        "shape": list(shape),
        "features": x.numel(),
        "maps": x.numel() // channels * GROUPS,
        "element_size": x.element_size(),
        "results": results,
        "notes": notes,
    }
    add_floors(case, bandwidth)
    return case


def skip_case(
    label: str,
    low_shape: tuple[int, ...],
    settings: Settings,
    bandwidth: float,
    log: Callable[[str], None],
    only: "set[str] | None" = None,
) -> dict[str, Any]:
    generator = torch.Generator().manual_seed(0)
    batch, low_channels, *size = low_shape
    high_shape = (batch, 2 * low_channels, *(s // 2 for s in size))
    low, high = make_features(low_shape, settings, generator), make_features(high_shape, settings, generator)
    # SGAU's attention is measured against ConcatSkip, so the two always run together.
    modules = {
        "ConcatSkip": prepare(ConcatSkip(low_channels, 2 * low_channels, spatial_dims=len(size)), settings),
        "SGAU": prepare(SGAU(low_channels, 2 * low_channels, GROUPS, spatial_dims=len(size)), settings),
    }
    modules = with_torch_ops(with_compiled(modules, settings), settings)
    log(f"{label} low {tuple(low_shape)}, high {tuple(high_shape)}: {', '.join(modules)}")
    results = time_case(modules, (low, high), settings, log)
    add_kernel_speedups(results)
    add_compiled_ratios(results)
    for by_name in results.values():
        by_name["SGAU"]["vs_concat_skip"] = ratio_fields(by_name, "SGAU", "ConcatSkip")
    case = {
        "case": label,
        "kind": "skip",
        "shape": list(low_shape),
        "high_shape": list(high_shape),
        "features": low.numel(),
        "maps": high.numel() // high.shape[1] * GROUPS,
        "element_size": low.element_size(),
        "results": results,
        "notes": [],
    }
    add_floors(case, bandwidth)
    return case


# -- report ----------------------------------------------------------------------------------------------------------
def spread(summary: dict[str, Any]) -> str:
    """``median ±half-IQR%``."""
    half_iqr = (summary["p75_ms"] - summary["p25_ms"]) / 2 / summary["median_ms"] * 100
    return f"{timing.format_ms(summary['median_ms'])} ±{half_iqr:.0f}%"


def encoder_table(cases: list[dict[str, Any]], mode: str) -> str:
    headers = [
        "case",
        "shape",
        *[f"{name} ms" for name in ENCODER_CONTENDERS],
        "SE / timm SE",
        "CGA / timm SE",
        "materializing / SGE",
        "SE / floor",
        "CGA / floor",
        "SGE / floor",
        "floor ms (SE, CGA)",
    ]
    rows = []
    for case in cases:
        results = case["results"][mode]
        cell = lambda name, key, results=results: results[name].get(key) if name in results else None  # noqa: E731
        rows.append(
            [
                case["case"],
                "x".join(map(str, case["shape"])),
                *[spread(results[name]) if name in results else "n/a" for name in ENCODER_CONTENDERS],
                timing.format_ratio(cell("SE", "vs_timm_se")),
                timing.format_ratio(cell("CGA", "vs_timm_se")),
                timing.format_ratio(
                    1 / cell("SGE", "vs_materializing_sge") if cell("SGE", "vs_materializing_sge") else None
                ),
                timing.format_ratio(cell("SE", "vs_floor")),
                timing.format_ratio(cell("CGA", "vs_floor")),
                timing.format_ratio(cell("SGE", "vs_floor")),
                f"{timing.format_ms(cell('SE', 'floor_ms'))}, {timing.format_ms(cell('CGA', 'floor_ms'))}",
            ]
        )
    return timing.markdown_table(headers, rows)


def skip_table(cases: list[dict[str, Any]], mode: str) -> str:
    headers = [
        "case",
        "low / high shape",
        "ConcatSkip ms",
        "SGAU ms",
        "SGAU / ConcatSkip",
        "attention ms",
        "attention floor ms",
        "attention / floor",
    ]
    rows = []
    for case in cases:
        results = case["results"][mode]
        sgau = results["SGAU"]
        rows.append(
            [
                case["case"],
                f"{'x'.join(map(str, case['shape']))} / {'x'.join(map(str, case['high_shape']))}",
                spread(results["ConcatSkip"]),
                spread(sgau),
                timing.format_ratio(sgau["vs_concat_skip"]),
                timing.format_ms(sgau["attention_ms"]),
                timing.format_ms(sgau["floor_ms"]),
                timing.format_ratio(sgau["vs_floor"]),
            ]
        )
    return timing.markdown_table(headers, rows)


def compiled_table(cases: list[dict[str, Any]]) -> "str | None":
    """Each contender eager and ``torch.compile``'d, forward and forward+backward (``--compile``)."""
    rows = []
    for case in cases:
        shape = "x".join(map(str, case["shape"]))
        names = [name for name in case["results"]["fwd"] if name + COMPILED in case["results"]["fwd"]]
        for name in names:
            cells = []
            for mode in MODES:
                results = case["results"][mode]
                cells += [
                    spread(results[name]),
                    spread(results[name + COMPILED]),
                    timing.format_ratio(results[name + COMPILED].get("vs_eager")),
                ]
            rows.append([case["case"], shape, name, *cells])
    if not rows:
        return None
    headers = ["case", "shape", "layer", "fwd eager ms", "fwd compiled ms", "fwd compiled / eager"]
    headers += ["fwd+bwd eager ms", "fwd+bwd compiled ms", "fwd+bwd compiled / eager"]
    return timing.markdown_table(headers, rows)


def kernels_table(cases: list[dict[str, Any]]) -> "str | None":
    """Each layer with PyTorch operations against its Triton kernels, forward and forward+backward (CUDA)."""
    rows = []
    for case in cases:
        shape = "x".join(map(str, case["shape"]))
        for name in KERNEL_LAYERS:
            cells = []
            for mode in MODES:
                results = case["results"][mode]
                if name not in results or name + TORCH_OPS not in results:
                    break
                cells += [
                    spread(results[name + TORCH_OPS]),
                    spread(results[name]),
                    timing.format_ratio(results[name].get("kernel_speedup")),
                ]
            if len(cells) == 2 * 3:
                rows.append([case["case"], shape, name, *cells])
    if not rows:
        return None
    headers = [
        "case",
        "shape",
        "layer",
        "fwd torch ops ms",
        "fwd kernels ms",
        "fwd speed-up",
        "fwd+bwd torch ops ms",
        "fwd+bwd kernels ms",
        "fwd+bwd speed-up",
    ]
    return timing.markdown_table(headers, rows)


def kernel_floor_table(cases: list[dict[str, Any]], mode: str) -> "str | None":
    """Each layer's time and its kernels' GPU time (profiler) against its floor (CUDA)."""
    rows = []
    for case in cases:
        results = case["results"][mode]
        shape = "x".join(map(str, case["shape"]))
        if case["kind"] == "skip":
            sgau = results["SGAU"]
            if sgau.get("attention_kernel_ms"):
                rows.append(
                    [
                        case["case"],
                        shape,
                        "SGAU attention (minus ConcatSkip)",
                        timing.format_ms(sgau["attention_ms"]),
                        timing.format_ms(sgau["attention_kernel_ms"]),
                        timing.format_ms(sgau["floor_ms"]),
                        timing.format_ratio(sgau["vs_floor"]),
                        timing.format_ratio(sgau["kernels_vs_floor"]),
                    ]
                )
            continue
        for name in ("timm SE", "SE", "CGA", "SGE"):
            summary = results.get(name)
            if summary and summary.get("kernel_ms") and summary.get("floor_ms"):
                rows.append(
                    [
                        case["case"],
                        shape,
                        name,
                        spread(summary),
                        timing.format_ms(summary["kernel_ms"]),
                        timing.format_ms(summary["floor_ms"]),
                        timing.format_ratio(summary["vs_floor"]),
                        timing.format_ratio(summary["kernels_vs_floor"]),
                    ]
                )
    if not rows:
        return None
    headers = [
        "case",
        "shape",
        "layer",
        "time ms",
        "GPU kernel time ms",
        "floor ms",
        "time / floor",
        "kernel time / floor",
    ]
    return timing.markdown_table(headers, rows)


def settings_title(settings: dict[str, Any]) -> str:
    return (
        f"{settings['device']}, {settings['dtype']}{' autocast' if settings['dtype'] != 'fp32' else ''}, "
        f"{'channels_last' if settings['channels_last'] else 'contiguous (NCHW)'}, "
        f"{'eager and torch.compile' if settings['compile'] else 'eager'}"
    )


def run_report(run: dict[str, Any]) -> list[str]:
    """The Markdown section of one run (one dtype)."""
    settings, cases = run["settings"], run["cases"]
    encoder = [case for case in cases if case["kind"] == "encoder"]
    skip = [case for case in cases if case["kind"] == "skip"]
    lines = [f"## {settings_title(settings)}", ""]
    for mode in MODES:
        title = "forward" if mode == "fwd" else "forward + backward"
        if encoder:
            lines += [f"### Encoder attention, {title}", "", encoder_table(encoder, mode), ""]
        if skip:
            lines += [f"### SGAU skip connection, {title}", "", skip_table(skip, mode), ""]
    if encoder:
        rows = [
            [
                case["case"],
                *[
                    f"{case['results']['fwd+bwd'][name]['saved_bytes'] / 2**20:.1f}"
                    if name in case["results"]["fwd+bwd"]
                    else "n/a"
                    for name in ENCODER_CONTENDERS
                ],
            ]
            for case in encoder
        ]
        lines += [
            "### Activation memory kept for backward (MiB, not counting the input)",
            "",
            timing.markdown_table(["case", *ENCODER_CONTENDERS], rows),
            "",
        ]
    for mode in MODES:
        table = kernel_floor_table(cases, mode)
        if table:
            title = "forward" if mode == "fwd" else "forward + backward"
            lines += [
                f"### GPU kernel time against the floor, {title}",
                "",
                "Time: as above (launch overhead and Python included); GPU kernel time: the profiler's sum of "
                "the kernels one call runs, without the gaps between them.",
                "",
                table,
                "",
            ]
    compiled = compiled_table(cases)
    if compiled:
        lines += [
            "### torch.compile against eager (same rounds)",
            "",
            "Compiled: `torch.compile(layer)`, inductor's default mode; the ratio is the median of per-round ratios "
            "of the compiled layer's time to the eager layer's.",
            "",
            compiled,
            "",
        ]
    comparison = kernels_table(cases)
    if comparison:
        lines += [
            "### Triton kernels against the same layers in PyTorch operations (before/after, same rounds)",
            "",
            "Speed-up: the PyTorch operations' time over the kernels' (median of per-round ratios).",
            "",
            comparison,
            "",
        ]
    return lines + timing.notes_section(run["notes"])


def report(machine: dict[str, Any], runs: list[dict[str, Any]], command: str) -> str:
    first = runs[0]["settings"]
    lines = timing.report_header("Layer benchmark", machine) + [
        f"Command: `{command}`. Up to {first['rounds']} interleaved rounds after {first['warmup']} warm-up calls. "
        "Times are medians in ms with half the interquartile range; ratios are medians of per-round ratios. The "
        "floor is the bytes the layer must move (docs/benchmarks.md) over the copy bandwidth measured at the same "
        "size; for SGAU, the attention's floor is compared with SGAU's time minus ConcatSkip's.",
        "",
    ]
    for run in runs:
        lines += run_report(run)
    return "\n".join(lines)


def strip_samples(case: dict[str, Any]) -> dict[str, Any]:
    """The case with each contender's raw samples as a list of milliseconds (JSON-ready)."""
    for by_name in case["results"].values():
        for name, summary in by_name.items():
            summary["samples_ms"] = summary.pop("samples")[name].times_ms
    return case


# -- command line ----------------------------------------------------------------------------------------------------
def parse_args(argv: "list[str] | None" = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument(
        "--dtype",
        default="fp32",
        help="fp32, bf16 or fp16 (autocast; the features then come in that dtype), or a "
        "comma-separated list, one section each (default fp32)",
    )
    parser.add_argument(
        "--contenders",
        default=None,
        help=f"comma-separated subset of {', '.join(ENCODER_CONTENDERS)} (SGAU and ConcatSkip always run together)",
    )
    parser.add_argument("--channels-last", action="store_true", help="channels_last features and modules")
    parser.add_argument(
        "--compile", action="store_true", help="also time every contender torch.compile'd (inductor), same rounds"
    )
    parser.add_argument("--quick", action="store_true", help="small shapes, few rounds: a smoke test")
    parser.add_argument(
        "--shape",
        action="append",
        default=None,
        help="an extra encoder shape B,C,H,W (repeatable; default 4,64,96,128)",
    )
    parser.add_argument(
        "--skip-shape",
        action="append",
        default=None,
        help="an extra SGAU case, its low-level shape B,C,H,W (high: 2C channels at half the size; repeatable)",
    )
    parser.add_argument("--batch", type=int, default=8, help="batch of GANet's shapes (default 8)")
    parser.add_argument("--size", default="384,512", help="GANet's input size H,W (default 384,512)")
    parser.add_argument("--no-ganet-shapes", action="store_true", help="time only the --shape cases")
    parser.add_argument("--no-skip", action="store_true", help="leave out the SGAU cases")
    parser.add_argument("--rounds", type=int, default=None, help="timed rounds per mode (default 15; quick 3)")
    parser.add_argument("--warmup", type=int, default=None, help="warm-up calls (default 3; quick 1)")
    parser.add_argument(
        "--max-seconds",
        type=float,
        default=60.0,
        help="stop a case's rounds after this many seconds (at least 3 rounds)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    parser.add_argument("--out", default=None, help="folder for <stem>.md and <stem>.json")
    parser.add_argument("--stem", default=None, help="file name stem (default layers-<device>[-<dtype>]...)")
    return parser.parse_args(argv)


def default_stem(args: argparse.Namespace) -> str:
    parts = ["layers", args.device]
    if args.dtype != "fp32":
        parts.append(args.dtype.replace(",", "-"))
    if args.channels_last:
        parts.append("channels-last")
    if args.compile:
        parts.append("compile")
    if args.quick:
        parts.append("quick")
    return "-".join(parts)


def ganet_shapes(batch: int, size: tuple[int, int]) -> list[tuple[str, tuple[int, ...]]]:
    """GANet's encoder feature shapes, stage 1 (full resolution) to stage 5."""
    height, width = size
    return [
        (f"encoder stage {index + 1}", (batch, channels, height >> index, width >> index))
        for index, channels in enumerate(GANET_WIDTHS)
    ]


def case_shapes(args: argparse.Namespace) -> list[tuple[str, str, tuple[int, ...]]]:
    """(kind, label, shape) of every case: GANet's encoder stages and decoder levels, then the user shapes."""
    user = [
        ("encoder", "user shape", timing.parse_ints(s, 4, "--shape"))
        for s in (args.shape or (["2,64,24,32"] if args.quick else [",".join(map(str, DEFAULT_SHAPE))]))
    ]
    user_skips = [("skip", "user skip", timing.parse_ints(s, 4, "--skip-shape")) for s in args.skip_shape or []]
    if args.quick:
        return user + ([] if args.no_skip else [("skip", "decoder level (quick)", (2, 32, 48, 64))])
    if args.no_ganet_shapes:
        return user + user_skips
    stages = ganet_shapes(args.batch, timing.parse_ints(args.size, 2, "--size"))
    skips = (
        []
        if args.no_skip
        else [("skip", f"decoder level {index + 1}", shape) for index, (_, shape) in enumerate(stages[:-1])]
    )
    return [("encoder", label, shape) for label, shape in stages] + user + skips + user_skips


def run_cases(
    settings: Settings,
    shapes: list[tuple[str, str, tuple[int, ...]]],
    contenders: "set[str] | None",
    log: Callable[[str], None],
    on_case: Callable[[dict[str, Any]], None],
) -> dict[str, Any]:
    """Every case for one settings (dtype); returns ``{"settings", "cases", "notes"}``, after calling ``on_case``
    with the run so far after each case (to save partial results)."""
    bandwidths: dict[int, float] = {}
    cases: list[dict[str, Any]] = []
    notes: list[str] = []
    run = {"settings": settings.as_dict(), "cases": cases, "notes": notes}
    element_size = torch.empty((), dtype=feature_dtype(settings)).element_size()
    log(f"== {settings.dtype}{' autocast' if settings.dtype != 'fp32' else ''}")
    for kind, label, shape in shapes:
        wanted = ENCODER_CONTENDERS if kind == "encoder" else SKIP_CONTENDERS
        if contenders is not None and not contenders & set(wanted):
            continue  # --contenders selects none of this case's layers
        nbytes = element_size * math.prod(shape)
        if nbytes not in bandwidths:
            bandwidths[nbytes] = timing.copy_bandwidth(nbytes, settings.device)
        run_case = encoder_case if kind == "encoder" else skip_case
        try:
            case = run_case(label, shape, settings, bandwidths[nbytes], log, contenders)
        except Exception as error:  # noqa: BLE001 - one failing case must not lose the others
            notes.append(f"{label} {shape}: failed with {type(error).__name__}: {error}")
            log(notes[-1])
            continue
        notes += [f"{label}: {note}" for note in case.pop("notes")]
        cases.append(strip_samples(case))
        on_case(run)
    return run


def main(argv: "list[str] | None" = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = timing.resolve_device(args.device)
    log = lambda message: print(message, flush=True)  # noqa: E731
    contenders = None
    if args.contenders:
        contenders = {name.strip() for name in args.contenders.split(",")}
        unknown = contenders - set(ENCODER_CONTENDERS) - set(SKIP_CONTENDERS)
        if unknown:
            raise SystemExit(
                f"--contenders: unknown {sorted(unknown)}; valid: {list(ENCODER_CONTENDERS) + list(SKIP_CONTENDERS)}"
            )
    shapes = case_shapes(args)
    machine = timing.machine_info(device)
    log(f"bench_layers: {timing.machine_line(machine)}")
    command = ("python benchmarks/bench_layers.py " + " ".join(argv if argv is not None else sys.argv[1:])).strip()
    runs: list[dict[str, Any]] = []

    def save(current: "dict[str, Any] | None" = None) -> "tuple[str, str] | None":
        """Write everything measured so far (the files are replaced atomically after every case)."""
        if not args.out:
            return None
        finished = runs + ([current] if current is not None else [])
        payload = {"benchmark": "layers", "machine": machine, "command": command, "runs": finished}
        return timing.write_results(
            args.out, args.stem or default_stem(args), report(machine, finished, command), payload
        )

    for dtype in timing.parse_dtypes(args.dtype):
        settings = Settings(
            device=device,
            dtype=dtype,
            channels_last=args.channels_last,
            compile=args.compile,
            rounds=args.rounds or (3 if args.quick else 15),
            warmup=args.warmup or (1 if args.quick else 3),
            max_seconds=min(args.max_seconds, 5.0) if args.quick else args.max_seconds,
        )
        extra = {"quick": args.quick, "batch": args.batch, "size": args.size, "groups": GROUPS}

        def checkpoint(run: dict[str, Any], extra: dict[str, Any] = extra) -> None:
            run["settings"].update(extra)
            save(run)

        runs.append(run_cases(settings, shapes, contenders, log, checkpoint))
        runs[-1]["settings"].update(extra)
    print(report(machine, runs, command), flush=True)
    paths = save()
    if paths:
        log(f"wrote {paths[0]} and {paths[1]}")
    return {"benchmark": "layers", "machine": machine, "command": command, "runs": runs}


if __name__ == "__main__":
    main()
