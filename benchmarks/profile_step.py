"""Profile one model's training step: the GPU (or CPU) time of every kernel, largest first.

Shows where a variant's extra time over the Baseline goes, e.g. which of the layers' kernels are far from their
memory-traffic floor::

    python benchmarks/profile_step.py --device cuda --model ganet --rows 30
    python benchmarks/profile_step.py --device cpu --model ganet   # batch 2 at 192x256, as bench_models on CPU

The device defaults to CUDA where there is one, else the CPU; batch and size default to bench_models's for it.
"""

from __future__ import annotations

import argparse
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from group_attention import VARIANTS, build_variant  # noqa: E402
from group_attention.layers import kernels  # noqa: E402


def main(argv: "list[str] | None" = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda if available")
    parser.add_argument("--model", choices=list(VARIANTS), default="ganet")
    parser.add_argument("--batch", type=int, default=None, help="default 8 on CUDA, 2 on CPU")
    parser.add_argument("--size", default=None, help="H,W (default 384,512 on CUDA, 192,256 on CPU)")
    parser.add_argument("--steps", type=int, default=3, help="profiled steps (after 3 warm-up steps)")
    parser.add_argument("--rows", type=int, default=30, help="kernels to list")
    parser.add_argument("--kernels", choices=["auto", "torch", "triton"], default="auto")
    args = parser.parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device here (torch.cuda.is_available() is False); use --device cpu")
    on_cuda = device.type == "cuda"
    args.batch = args.batch or (8 if on_cuda else 2)
    height, width = (int(v) for v in (args.size or ("384,512" if on_cuda else "192,256")).split(","))
    torch.manual_seed(0)
    model = build_variant(args.model, in_channels=3, num_classes=2).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    images = torch.randn(args.batch, 3, height, width, device=device)
    labels = torch.randint(0, 2, (args.batch, height, width), device=device)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with kernels(args.kernels):
            loss = F.cross_entropy(model(images), labels)
        loss.backward()
        optimizer.step()

    for _ in range(3):
        step()
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
        torch.cuda.synchronize()
    with torch.profiler.profile(activities=activities) as profiler:
        for _ in range(args.steps):
            step()
        if device.type == "cuda":
            torch.cuda.synchronize()
    sort_by = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    print(f"{args.model}, batch {args.batch} at {height}x{width}, {args.steps} steps, kernels={args.kernels}")
    print(profiler.key_averages().table(sort_by=sort_by, row_limit=args.rows, max_name_column_width=60))


if __name__ == "__main__":
    main()
