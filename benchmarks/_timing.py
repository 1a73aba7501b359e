"""Timing and reporting helpers shared by ``bench_layers.py`` and ``bench_models.py``.

How the numbers are taken:

- every contender is warmed up first (which also triggers ``torch.compile``), then timed in *rounds*: one sample of
  every contender per round, in a rotated order, so a burst of load from another process hits all contenders alike;
- a sample is the time of ``number`` back-to-back calls divided by ``number`` (``number`` is calibrated so a sample
  lasts at least ``min_sample_s``); on CUDA it is taken with CUDA events around the calls and a synchronize;
- a contender is reported by the median and the 25th/75th percentiles of its samples, and compared with another by
  the median of the per-round ratios (the *paired ratio*), which cancels slow drifts of the machine's load.

Everything writes through :func:`write_results`, which replaces the files atomically.
"""

from __future__ import annotations

import datetime as _datetime
import json
import math
import os
import platform
import statistics
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from group_attention.atomic import atomic_write_text

DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


# -- the machine -----------------------------------------------------------------------------------------------------
def cpu_model() -> str:
    """The CPU's marketing name from ``/proc/cpuinfo`` (Linux), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: torch.device) -> dict[str, Any]:
    """What a reader needs to reproduce or discount the numbers: CPU, GPU, library versions, threads, date."""
    info: dict[str, Any] = {
        "date": _datetime.datetime.now(_datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "device": device.type,
        "gpu": None,
    }
    if device.type == "cuda":
        properties = torch.cuda.get_device_properties(device)
        info.update(
            gpu=properties.name,
            gpu_memory_gib=round(properties.total_memory / 2**30, 1),
            cuda=torch.version.cuda,
            cudnn=torch.backends.cudnn.version(),
        )
    for name in ("timm", "monai", "segmentation_models_pytorch"):
        try:
            info[name] = __import__(name).__version__
        except Exception:  # noqa: BLE001 - an optional contender that is missing or broken is simply not listed
            info[name] = None
    return info


def machine_line(info: Mapping[str, Any]) -> str:
    """One Markdown line naming the machine, for the head of every table."""
    device = (
        f"GPU {info['gpu']} (CUDA {info.get('cuda')})"
        if info.get("gpu")
        else (f"CPU only, {info['torch_threads']} torch threads")
    )
    return (
        f"{info['date']}; CPU {info['cpu']} ({info['cpu_count']} cores); {device}; torch {info['torch']}; "
        f"Python {info['python']}"
    )


# -- devices ---------------------------------------------------------------------------------------------------------
def resolve_device(name: str) -> torch.device:
    """``cpu`` or ``cuda``; a clear error when CUDA was asked for and is not there."""
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available (torch.cuda.is_available() is False)")
    return torch.device(name)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def parse_dtypes(text: str) -> list[str]:
    """``"fp32,bf16"`` -> ``["fp32", "bf16"]``, with an error listing the valid names."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in DTYPES]
    if unknown or not names:
        raise SystemExit(f"--dtype: expected names from {list(DTYPES)}, got {text!r}")
    return names


def autocast_context(device: torch.device, dtype_name: str):
    """``torch.autocast`` for ``bf16``/``fp16``, a no-op context for ``fp32``."""
    dtype = DTYPES[dtype_name]
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


# -- timing ----------------------------------------------------------------------------------------------------------
@dataclass
class Samples:
    """Per-call times of one contender, in milliseconds, one per round."""

    name: str
    times_ms: list[float] = field(default_factory=list)
    number: int = 1

    @property
    def median(self) -> float:
        return statistics.median(self.times_ms)

    def percentile(self, q: float) -> float:
        ordered = sorted(self.times_ms)
        position = (len(ordered) - 1) * q
        low, high = math.floor(position), math.ceil(position)
        return ordered[low] + (ordered[high] - ordered[low]) * (position - low)

    def summary(self) -> dict[str, Any]:
        return {
            "median_ms": self.median,
            "p25_ms": self.percentile(0.25),
            "p75_ms": self.percentile(0.75),
            "min_ms": min(self.times_ms),
            "rounds": len(self.times_ms),
            "calls_per_sample": self.number,
        }


def _time_calls(fn: Callable[[], Any], number: int, device: torch.device) -> float:
    """Seconds per call of ``number`` back-to-back calls."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(number):
            fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1000 / number
    begin = time.perf_counter()
    for _ in range(number):
        fn()
    return (time.perf_counter() - begin) / number


def calibrate(fn: Callable[[], Any], device: torch.device, min_sample_s: float) -> int:
    """How many calls make a sample of at least ``min_sample_s`` (one call when a call is long enough)."""
    seconds = _time_calls(fn, 1, device)
    if seconds <= 0:
        return 100
    return max(1, min(1000, math.ceil(min_sample_s / seconds)))


def time_interleaved(
    contenders: Mapping[str, Callable[[], Any]],
    device: torch.device,
    *,
    warmup: int = 3,
    rounds: int = 20,
    min_sample_s: float = 0.005,
    max_seconds: "float | None" = None,
    progress: "Callable[[str], None] | None" = None,
) -> dict[str, Samples]:
    """Time every contender in rounds, one sample of each per round, in a rotated order.

    Args:
        contenders: name -> a callable that runs the work once (and synchronizes nothing itself).
        device: where the work runs; CUDA samples use CUDA events.
        warmup: untimed calls of each contender first (compilation, allocator and cache warm-up).
        rounds: samples per contender (fewer if ``max_seconds`` runs out first, but at least 3).
        min_sample_s: each sample repeats the call until it lasts about this long (CUDA event and timer
            resolution, launch-bound kernels).
        max_seconds: a wall-clock budget for the timed rounds.
        progress: called with a short message after warm-up.

    Returns:
        name -> :class:`Samples`.
    """
    names = list(contenders)
    for name in names:
        for _ in range(warmup):
            contenders[name]()
    synchronize(device)
    numbers = {name: calibrate(contenders[name], device, min_sample_s) for name in names}
    if progress:
        progress(f"warmed up {len(names)} contenders; timing {rounds} rounds")
    samples = {name: Samples(name, number=numbers[name]) for name in names}
    begin = time.perf_counter()
    for round_index in range(rounds):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            synchronize(device)
            samples[name].times_ms.append(1000 * _time_calls(contenders[name], numbers[name], device))
        if max_seconds is not None and round_index >= 2 and time.perf_counter() - begin > max_seconds:
            break
    return samples


def sgd_training_step(model: torch.nn.Module, x: torch.Tensor, target: torch.Tensor) -> Callable[[], None]:
    """One training step of ``model`` as a callable: zero_grad, forward, cross-entropy, backward, SGD step."""
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), target).backward()
        optimizer.step()

    return step


def kernel_ms(fn: Callable[[], Any], device: torch.device, calls: int = 5) -> "float | None":
    """The GPU time of the kernels (and copies) one call of ``fn`` runs, from the profiler: what the device spends
    working, without the gaps between kernels that launch overhead and Python leave. None off CUDA or if the
    profiler fails."""
    if device.type != "cuda":
        return None
    try:
        fn()
        synchronize(device)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as profiler:
            for _ in range(calls):
                fn()
            synchronize(device)
        total_us = sum(
            event.device_time_total for event in profiler.events() if event.device_type != torch.autograd.DeviceType.CPU
        )
    except Exception:  # noqa: BLE001 - an optional measurement must not lose the timings
        return None
    return total_us / 1000 / calls


def paired_ratio(samples: Mapping[str, Samples], name: str, reference: str) -> float:
    """The median over rounds of ``time(name) / time(reference)`` measured in the same round."""
    pairs = zip(samples[name].times_ms, samples[reference].times_ms)
    return statistics.median(a / b for a, b in pairs)


# -- memory ----------------------------------------------------------------------------------------------------------
class PeakMemory(TorchDispatchMode):
    """Peak bytes of the tensor storages allocated while active, on any device (CPU included).

    Every storage an operator returns that none of its inputs already held (not a view, not an in-place result)
    is counted from its creation until Python's weak reference to it dies, which is when the allocator frees it.
    ``peak`` is the CPU counterpart of ``torch.cuda.max_memory_allocated`` minus what was allocated before, without
    the caching allocator's rounding. Storages allocated before entering are not counted, even when freed inside.
    """

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self._tracked: dict[int, int] = {}

    def _release(self, key: int) -> None:
        self.live -= self._tracked.pop(key, 0)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {t.untyped_storage().data_ptr() for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
        for tensor in tree_leaves(out):
            if not isinstance(tensor, torch.Tensor):
                continue
            storage = tensor.untyped_storage()
            key = storage.data_ptr()
            if key in inputs or key in self._tracked or storage.nbytes() == 0:
                continue
            self._tracked[key] = storage.nbytes()
            self.live += storage.nbytes()
            self.peak = max(self.peak, self.live)
            weakref.finalize(storage, self._release, key)
        return out


def saved_tensor_bytes(run: Callable[[], Any]) -> tuple[int, Any]:
    """Bytes of the distinct storages autograd keeps for backward while ``run()`` builds its graph.

    A device-independent measure of activation memory: a storage kept by several nodes (an input saved by a
    convolution and a ReLU) counts once. Returns the bytes and what ``run`` returned (keep it alive until the
    storages have been counted; drop it to free the graph).
    """
    storages: dict[tuple[str, int], int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        storages[(str(tensor.device), storage.data_ptr())] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        result = run()
    return sum(storages.values()), result


def copy_bandwidth(nbytes: int, device: torch.device, *, rounds: int = 10) -> float:
    """Measured copy bandwidth in bytes/s (bytes read plus bytes written) for a buffer of ``nbytes``.

    Measured at the size of the layer's tensor so that it includes the same cache effects as the layer. On CUDA from
    the copy kernel's own GPU time (the profiler's, as the layers' kernel times): timed from the host, a copy of a
    few MB is bound by its launch, which would make the floor too high (and the layers look closer to it).
    """
    source = torch.empty(max(1, nbytes // 4), dtype=torch.float32, device=device).uniform_()
    target = torch.empty_like(source)
    moved = 2 * source.numel() * source.element_size()
    if device.type == "cuda":
        kernel_times = [kernel_ms(lambda: target.copy_(source), device, calls=20) for _ in range(3)]
        measured = [t for t in kernel_times if t]
        if measured:
            return moved / (min(measured) / 1000)
    samples = time_interleaved({"copy": lambda: target.copy_(source)}, device, warmup=3, rounds=rounds)
    return moved / (min(samples["copy"].times_ms) / 1000)


# -- output ----------------------------------------------------------------------------------------------------------
def format_ms(value: "float | None") -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{value:.3g}" if value < 100 else f"{value:.0f}"


def format_ratio(value: "float | None") -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.2f}x"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub/MyST pipe table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def write_results(out_dir: str, stem: str, markdown: str, payload: Mapping[str, Any]) -> tuple[str, str]:
    """Write ``<stem>.md`` and ``<stem>.json`` into ``out_dir`` atomically; returns both paths."""
    md_path = os.path.join(out_dir, f"{stem}.md")
    json_path = os.path.join(out_dir, f"{stem}.json")
    atomic_write_text(json_path, json.dumps(payload, indent=2, sort_keys=False, default=str) + "\n")
    atomic_write_text(md_path, markdown.rstrip() + "\n")
    return md_path, json_path


def report(out_dir: "str | None", stem: str, lines: Sequence[str], payload: Mapping[str, Any]) -> None:
    """Write the report (:func:`write_results`) when ``out_dir`` is given, naming the files; else print it."""
    if out_dir:
        for path in write_results(out_dir, stem, "\n".join(lines), payload):
            print(f"wrote {path}")
    else:
        print("\n".join(lines))


def parse_ints(text: str, count: "int | None" = None, name: str = "value") -> tuple[int, ...]:
    """``"4,64,96,128"`` -> ``(4, 64, 96, 128)``, with an error naming the option."""
    try:
        values = tuple(int(part) for part in text.replace("x", ",").split(",") if part.strip())
    except ValueError:
        raise SystemExit(f"{name}: expected comma-separated integers, got {text!r}") from None
    if (count is not None and len(values) != count) or not values or min(values) < 1:
        expected = f"{count} positive integers" if count else "positive integers"
        raise SystemExit(f"{name}: expected {expected}, got {text!r}")
    return values


def report_header(title: str, machine: dict) -> list[str]:
    """The first lines of a Markdown report: its title and the machine it ran on."""
    return [f"# {title}", "", f"Machine: {machine_line(machine)}.", ""]


def notes_section(notes: list[str]) -> list[str]:
    """A Markdown list of a run's notes (skipped contenders, settings), or nothing."""
    return ["Notes:", ""] + [f"- {note}" for note in notes] + [""] if notes else []
