"""Does the patch loader keep up with training at the photograph's own scale? Images per second of both, on CPU.

For each scale (a share of IDRiD's native 4288 x 2848), one synthetic fundus photograph at that resolution is
preprocessed once as the experiment does (field-of-view crop resized by the scale, masks area-resized; the time per
image is reported) and copied to ``--images`` images; then, timed separately:

- the loader: :class:`~group_attention.fundus.engine.patches.PatchSampler` draws a batch of patches (half centred
  on a lesion pixel), cuts them from the uint8 crops and applies the random flips and rotations of training;
- the training step: GANet forward, backward and Adam step on a batch of patches of the same size.

Both are reported in images (patches) per second; the loader keeps up when its rate is well above the step's.

    python benchmarks/bench_patches.py --threads 2 --out benchmarks/results --stem patches-cpu
    python benchmarks/bench_patches.py --quick     # a 712 x 1072 photograph, 64 x 64 patches: seconds
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _timing import machine_info, markdown_table, report, report_header  # noqa: E402

from group_attention import build_variant  # noqa: E402
from group_attention.fundus.data import random_flip_rotate, render_fundus  # noqa: E402
from group_attention.fundus.data.preprocess import find_fov_box, resize_image, resize_mask, scaled_size  # noqa: E402
from group_attention.fundus.engine.loss import LesionLoss  # noqa: E402
from group_attention.fundus.engine.patches import PatchSampler, ScaledArrays  # noqa: E402

IDRID_SIZE = (2848, 4288)


def parse_arguments(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scales", type=float, nargs="+", default=[0.25, 0.5, 1.0])
    parser.add_argument("--patch", type=int, nargs=2, default=[256, 256])
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--images", type=int, default=8, help="images held at each scale (copies of one)")
    parser.add_argument("--steps", type=int, default=3, help="timed training steps per scale")
    parser.add_argument("--loader-batches", type=int, default=20, help="timed loader batches per scale")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="a 712 x 1072 photograph and 64 x 64 patches")
    parser.add_argument("--out", help="folder for <stem>.md and <stem>.json (default: print)")
    parser.add_argument("--stem", default="patches-cpu")
    arguments = parser.parse_args(argv)
    if arguments.quick:
        arguments.patch, arguments.images, arguments.steps, arguments.loader_batches = [64, 64], 2, 1, 4
    return arguments


def scaled_photograph(size: tuple[int, int], scale: float) -> tuple[torch.Tensor, torch.Tensor, float]:
    """A synthetic photograph's crop and EX/HE masks at ``scale``, and the seconds preprocessing took."""
    from PIL import Image

    image, masks = render_fundus(np.random.default_rng(0), size)
    started = time.perf_counter()
    picture = Image.fromarray(image)
    box = find_fov_box(picture)
    target = scaled_size(box, scale)
    crop = resize_image(picture, box, target)
    lesions = np.stack([resize_mask(masks[name], box, target) for name in ("EX", "HE")])
    seconds = time.perf_counter() - started
    return torch.from_numpy(crop.transpose(2, 0, 1).copy()), torch.from_numpy(lesions), seconds


def main(argv=None) -> None:
    arguments = parse_arguments(argv)
    torch.set_num_threads(arguments.threads)
    size = (712, 1072) if arguments.quick else IDRID_SIZE
    patch = tuple(arguments.patch)
    model = build_variant("ganet", in_channels=3, num_classes=2)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    loss = LesionLoss("sigmoid")
    rows, results = [], []
    for scale in arguments.scales:
        crop, masks, preprocess_s = scaled_photograph(size, scale)
        if min(crop.shape[1:]) < max(patch):
            print(f"scale {scale:g}: crop {tuple(crop.shape[1:])} is smaller than the patch; skipped")
            continue
        n = arguments.images
        arrays = ScaledArrays([f"img{k}" for k in range(n)], [crop] * n, [masks] * n, [None] * n, scale)
        sampler = PatchSampler(arrays, torch.arange(n), patch, 0.5)
        generator = torch.Generator().manual_seed(0)

        def load_batch(sampler=sampler, generator=generator) -> tuple[torch.Tensor, torch.Tensor]:
            images, lesion_masks = sampler.batch(sampler.draw(arguments.batch_size, generator))
            return random_flip_rotate(images, lesion_masks, generator=generator)

        load_batch()  # warm-up
        started = time.perf_counter()
        for _ in range(arguments.loader_batches):
            load_batch()
        loader_rate = arguments.loader_batches * arguments.batch_size / (time.perf_counter() - started)

        step_times = []
        images, lesion_masks = load_batch()
        for step in range(arguments.steps + 1):
            started = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            loss(model(images), lesion_masks).backward()
            optimizer.step()
            if step:  # the first step is the warm-up
                step_times.append(time.perf_counter() - started)
        step_rate = arguments.batch_size / statistics.median(step_times)
        memory_mb = arrays.nbytes() / n / 2**20
        results.append(
            {
                "scale": scale,
                "crop": list(crop.shape[1:]),
                "preprocess_s_per_image": preprocess_s,
                "memory_mb_per_image": memory_mb,
                "loader_images_per_s": loader_rate,
                "train_step_images_per_s": step_rate,
            }
        )
        rows.append(
            [
                f"{scale:g}",
                f"{crop.shape[1]} x {crop.shape[2]}",
                f"{preprocess_s:.2f}",
                f"{memory_mb:.1f}",
                f"{loader_rate:.1f}",
                f"{step_rate:.2f}",
                f"{loader_rate / step_rate:.0f}x",
            ]
        )
        print(rows[-1], flush=True)
    machine = machine_info(torch.device("cpu"))
    lines = report_header("Patch loader against the training step (GANet, CPU)", machine)
    lines += [
        f"Photograph {size[1]} x {size[0]} (synthetic), patches {patch[1]} x {patch[0]}, batch {arguments.batch_size}, "
        "half of the patches centred on a lesion pixel, random flips and rotations; GANet with 2 sigmoid outputs, "
        "Adam. Images per second: patches delivered by the loader, patches trained on by the step.",
        "",
        markdown_table(
            [
                "scale",
                "crop (H x W)",
                "preprocess s/image (once)",
                "MB/image in memory",
                "loader images/s",
                "train step images/s",
                "loader / step",
            ],
            rows,
        ),
        "",
    ]
    report(
        arguments.out,
        arguments.stem,
        lines,
        {"machine": machine, "settings": vars(arguments), "results": results},
    )


if __name__ == "__main__":
    main()
