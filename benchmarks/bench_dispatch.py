#!/usr/bin/env python
"""What choosing an implementation costs: each layer's module (its input checks and ``dispatch.use_fused``) against
a direct call of the fused autograd Function it picks, forward and backward, in one run.

    python benchmarks/bench_dispatch.py --threads 1 --out benchmarks/results --stem dispatch-cpu

The layers' readable functional forms run only where a graph is recorded; in eager mode the modules run the same
fused Functions as before the readable-core restructuring, so this ratio is the whole eager-mode cost of it.
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _timing import (  # noqa: E402
    machine_info,
    markdown_table,
    notes_section,
    paired_ratio,
    report_header,
    time_interleaved,
    write_results,
)

from group_attention import CGA, SE, SGAU, SGE  # noqa: E402
from group_attention.layers.fused.cga import fused_channel_group_attention  # noqa: E402
from group_attention.layers.fused.se import fused_squeeze_excite  # noqa: E402
from group_attention.layers.fused.sgau import fused_attention_skip  # noqa: E402
from group_attention.layers.fused.sge import fused_spatial_group_enhance  # noqa: E402


def cases(batch: int, quick: bool):
    """name -> (module call, direct fused call, inputs); GANet's stage-2 and stage-4 widths at 384x512 / 2**k."""
    size = (24, 32) if quick else (96, 128)
    x = torch.randn(batch, 64, *size, requires_grad=True)
    low, high = torch.randn(batch, 64, *size, requires_grad=True), torch.randn(batch, 128, size[0] // 2, size[1] // 2)
    high.requires_grad_()
    cga, se, sge, sgau = CGA(64), SE(64), SGE(64), SGAU(64, 128)
    yield (
        "CGA",
        lambda: cga(x),
        lambda: fused_channel_group_attention(x, cga.fc.weight, cga.fc.bias, 32, cga.eps, True)[0],
        [x],
    )
    yield (
        "SE",
        lambda: se(x),
        lambda: fused_squeeze_excite(x, se.fc1.weight, se.fc1.bias, se.fc2.weight, se.fc2.bias),
        [x],
    )
    yield "SGE", lambda: sge(x), lambda: fused_spatial_group_enhance(x, sge.weight, sge.bias, 32, sge.eps), [x]
    yield (
        "SGAU",
        lambda: sgau(low, high),
        lambda: fused_attention_skip(low, high, sgau.upsample(high, low.shape[2:]), 32, sgau.eps),
        [low, high],
    )


def main(argv: "list[str] | None" = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default=None)
    parser.add_argument("--stem", default="dispatch-cpu")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rows, payload = [], {}
    for name, module_call, direct_call, inputs in cases(args.batch, args.quick):

        def step(call=module_call, inputs=inputs):
            torch.autograd.grad(call().square().sum(), inputs)

        def direct(call=direct_call, inputs=inputs):
            torch.autograd.grad(call().square().sum(), inputs)

        samples = time_interleaved({"module": step, "fused Function": direct}, torch.device("cpu"), rounds=args.rounds)
        ratio = paired_ratio(samples, "module", "fused Function")
        rows.append(
            [name, f"{samples['fused Function'].median:.2f}", f"{samples['module'].median:.2f}", f"{ratio:.3f}x"]
        )
        payload[name] = {key: s.summary() for key, s in samples.items()} | {"ratio": ratio}
    machine = machine_info(torch.device("cpu"))
    size = "24x32" if args.quick else "96x128"
    notes = [
        f"forward + backward, batch {args.batch}, 64 channels at {size} (SGAU: low 64, high 128 at half size)",
        f"{args.threads} thread(s); ratio = median over rounds of module time / fused-Function time",
    ]
    markdown = "\n".join(
        report_header("Layer modules against their fused Functions (CPU)", machine)
        + [markdown_table(["layer", "fused Function ms", "module ms", "module / fused"], rows), ""]
        + notes_section(notes)
    )
    print(markdown)
    if args.out:
        print(
            "wrote",
            *write_results(args.out, args.stem, markdown, {"machine": machine, "results": payload, "args": vars(args)}),
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
