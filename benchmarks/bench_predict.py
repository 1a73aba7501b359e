"""Time and peak memory of ``group-attention predict`` on one full-size fundus photograph, at both modes.

Each mode runs in a fresh process, so its peak resident memory (``VmHWM``) is its own: the model at its training
scale (the field of view resized to the training size and the probabilities resized back), and the sliding window at
full resolution (``--tile``) for each ``--batch-size``. Time per image is end to end (decode, field of view, model,
resize or blend, connected components, the PNGs written), median of ``--repeats`` runs after one untimed warm-up.
The model is GANet with random weights: inference time does not depend on the weights.

    python benchmarks/bench_predict.py --threads 2 --out benchmarks/results --stem predict-cpu
    python benchmarks/bench_predict.py --quick        # a 712 x 1072 image, a few seconds
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _timing import machine_info, machine_line, markdown_table, report_header, write_results  # noqa: E402

IDRID_SIZE = (2848, 4288)


def make_image(path: Path, size: tuple[int, int]) -> None:
    import numpy as np
    from PIL import Image

    from group_attention.fundus.data import render_fundus

    image, _ = render_fundus(np.random.default_rng(0), size)
    Image.fromarray(image).save(path, quality=95)


def memory_mb(field: str) -> float:
    """``VmHWM`` (peak) or ``VmRSS`` (now) of this process in MB from ``/proc/self/status``: unlike ``ru_maxrss``,
    which a process started by ``fork`` + ``exec`` inherits from its parent, the peak starts afresh at ``exec``."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # elsewhere: the peak since the fork


def worker(arguments: argparse.Namespace) -> None:
    """One mode in this process; prints a JSON line with the times and the peak memory."""
    import torch

    from group_attention import build_variant
    from group_attention.fundus import inference_metadata, load_model, predict
    from group_attention.inference import save_model

    torch.set_num_threads(arguments.threads)
    folder = Path(arguments.work)
    checkpoint = folder / f"{arguments.variant}.pt"
    if not checkpoint.exists():
        save_model(
            checkpoint,
            build_variant(arguments.variant),
            inference_metadata(arguments.variant, "EX", tuple(arguments.size)),
        )
    model = load_model(checkpoint, device=arguments.device)
    baseline_mb = memory_mb("VmRSS")
    times = []
    for repeat in range(arguments.repeats + 1):
        started = time.perf_counter()
        report = predict(
            [model],
            [arguments.image],
            folder / f"out-{arguments.mode}-{repeat}",
            tile=arguments.mode == "tile",
            batch_size=arguments.batch_size,
            overlap=arguments.overlap,
            amp=arguments.amp,
            progress=False,
        )
        if arguments.device.startswith("cuda"):
            torch.cuda.synchronize()
        assert report.ok, report.failures
        if repeat or arguments.repeats == 0:  # the first run warms up (allocator, thread pools, cuDNN)
            times.append(time.perf_counter() - started)
    peak_mb = memory_mb("VmHWM")
    cuda_peak = torch.cuda.max_memory_allocated() / 2**20 if arguments.device.startswith("cuda") else None
    print(
        json.dumps(
            {
                "seconds": times,
                "median_s": statistics.median(times),
                "peak_rss_mb": peak_mb,
                "rss_before_mb": baseline_mb,
                "cuda_peak_mb": cuda_peak,
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--image", help="a photograph to predict (default: a synthetic fundus of IDRiD's 4288 x 2848)")
    add("--variant", default="ganet")
    add("--size", type=int, nargs=2, default=(384, 512), help="training size H W (default 384 512)")
    add("--batch-sizes", default="1,4", help="tile batch sizes to measure (default 1,4)")
    add("--overlap", type=float, default=0.25)
    add("--repeats", type=int, default=1, help="timed runs per mode after a warm-up (0: the one run is timed)")
    add("--threads", type=int, default=2)
    add("--device", default="cpu")
    add("--amp", action="store_true")
    add("--quick", action="store_true", help="a 712 x 1072 image at 96 x 128, one run per mode")
    add("--out", help="folder for <stem>.md and <stem>.json")
    add("--stem", default="predict-cpu")
    add("--mode", choices=("scale", "tile"), help=argparse.SUPPRESS)
    add("--batch-size", type=int, default=4, help=argparse.SUPPRESS)
    add("--work", help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.mode is not None:
        worker(arguments)
        return
    import torch

    work = Path(tempfile.mkdtemp(prefix="bench-predict-"))
    size = (712, 1072) if arguments.quick else IDRID_SIZE
    if arguments.quick:
        arguments.size, arguments.repeats = (96, 128), 0
    image = Path(arguments.image) if arguments.image else work / "fundus.jpg"
    if not arguments.image:
        make_image(image, size)
    cases = [("scale", 1)] + [("tile", int(b)) for b in arguments.batch_sizes.split(",")]
    rows, results = [], []
    for mode, batch in cases:
        command = [
            sys.executable,
            __file__,
            "--mode",
            mode,
            "--batch-size",
            str(batch),
            "--work",
            str(work),
            "--image",
            str(image),
            "--variant",
            arguments.variant,
            "--size",
            *map(str, arguments.size),
            "--overlap",
            str(arguments.overlap),
            "--repeats",
            str(arguments.repeats),
            "--threads",
            str(arguments.threads),
            "--device",
            arguments.device,
        ] + (["--amp"] if arguments.amp else [])
        finished = subprocess.run(command, capture_output=True, text=True, check=True)
        measured = json.loads(finished.stdout.strip().splitlines()[-1])
        label = "training scale" if mode == "scale" else f"--tile, batch {batch}"
        results.append({"mode": mode, "batch_size": batch, **measured})
        rows.append(
            [
                label,
                f"{measured['median_s']:.1f}",
                f"{measured['peak_rss_mb']:.0f}",
                f"{measured['rss_before_mb']:.0f}",
                "-" if measured["cuda_peak_mb"] is None else f"{measured['cuda_peak_mb']:.0f}",
            ]
        )
        print(f"{label}: {measured['median_s']:.1f} s per image, peak RSS {measured['peak_rss_mb']:.0f} MB", flush=True)
    from PIL import Image

    with Image.open(image) as opened:
        width, height = opened.size
    info = machine_info(torch.device(arguments.device))
    lines = report_header("Prediction time and memory per image", info) + [
        f"{arguments.variant} (random weights) trained size {arguments.size[0]}x{arguments.size[1]}, image "
        f"{width}x{height}, overlap {arguments.overlap}, {arguments.threads} threads, amp {arguments.amp}, "
        + (f"median of {arguments.repeats} runs after a warm-up" if arguments.repeats else "one run without warm-up")
        + "; end to end (decode, model, PNGs); peak RSS of the process (VmHWM).",
        "",
        markdown_table(["mode", "s / image", "peak RSS (MB)", "RSS with model loaded (MB)", "CUDA peak (MB)"], rows),
        "",
    ]
    print("\n".join(lines))
    if arguments.out:
        payload = {
            "machine": info,
            "machine_line": machine_line(info),
            "image_size": [width, height],
            "settings": {k: v for k, v in vars(arguments).items() if k not in ("mode", "work")},
            "results": results,
        }
        write_results(arguments.out, arguments.stem, "\n".join(lines), payload)


if __name__ == "__main__":
    main()
