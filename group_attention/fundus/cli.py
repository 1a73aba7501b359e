"""The ``group-attention`` command line (also ``python -m group_attention``).

``group-attention predict --checkpoint CKPT [--checkpoint CKPT2 ...] INPUTS... --out DIR`` applies trained models
to fundus photographs at their original resolution; see :func:`group_attention.fundus.predict` and the docs'
"Applying a trained model" page. Exit status: 0 when every image was predicted (or skipped as done), 1 when some
could not be read, 2 for a bad command line, an unusable or busy --out or a checkpoint that cannot be loaded, 130
when interrupted (Ctrl-C; a rerun resumes).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from .data.decode import DEFAULT_MAX_PIXELS, MAX_PIXELS_ENV
from .safety import check_writable_folder, finite_float, lock_output_folder

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="group-attention", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    predict = commands.add_parser(
        "predict",
        help="apply trained models to fundus photographs at full resolution",
        description="Apply trained models (one per lesion) to fundus photographs: the field-of-view crop of "
        "training, the model at its training scale (default) or a sliding window at full resolution "
        "(--tile), then per image and lesion a 0/255 mask and a 16-bit probability map at the original "
        "size, an overlay, and summary.csv/summary.json for the run.",
    )
    add = predict.add_argument
    add("inputs", nargs="+", help="image files (JPEG, PNG, TIFF) and folders of them")
    add(
        "--checkpoint",
        action="append",
        required=True,
        metavar="CKPT",
        help="a checkpoint of the experiment (checkpoint_best.pt); repeat for several lesions",
    )
    add("--out", required=True, help="output folder (a rerun skips the images already done with the same settings)")
    add(
        "--tile",
        action="store_true",
        help="sliding-window inference on the full-resolution crop (a checkpoint trained on patches always runs the "
        "sliding window at its own scale)",
    )
    add(
        "--tile-size",
        type=int,
        nargs=2,
        metavar=("H", "W"),
        help="tile size (default: the training size, or the training patch)",
    )
    add("--overlap", type=finite_float, default=0.25, help="share of a tile overlapping the next (default 0.25)")
    add("--batch-size", type=int, default=4, help="tiles per forward pass in --tile mode (default 4)")
    add("--device", default="auto", help="auto (CUDA if available), cpu, cuda, cuda:1... (default auto)")
    add("--amp", action="store_true", help="mixed precision (bf16 on CPU, fp16 on CUDA)")
    add(
        "--masks",
        help="ground truth: an IDRiD root, or a folder of <stem>_<LESION>.<ext> masks; adds the "
        "paper's metrics and AUPR at full resolution and Fig. 5 overlays",
    )
    add("--threshold", type=finite_float, help="decision threshold (default: the checkpoint's, 0.5)")
    add(
        "--max-pixels",
        type=int,
        help=f"refuse photographs of more pixels, before decoding (default {DEFAULT_MAX_PIXELS:,})",
    )
    add("--quiet", action="store_true", help="no progress bar")
    return parser


def run_predict(arguments: argparse.Namespace) -> int:
    from .checkpoint import load_model
    from .devices import resolve_device
    from .predict import predict

    if arguments.batch_size < 1:
        raise ValueError(f"--batch-size must be a positive int, got {arguments.batch_size}")
    if arguments.max_pixels is not None and arguments.max_pixels < 1:
        raise ValueError(f"--max-pixels must be a positive number of pixels, got {arguments.max_pixels}")
    check_writable_folder(arguments.out)  # before any model is loaded or image read
    device = resolve_device(arguments.device)
    models, identities = [], []
    for checkpoint in arguments.checkpoint:
        models.append(load_model(checkpoint, device=device, threshold=arguments.threshold))
        stat = os.stat(checkpoint)
        identities.append([str(Path(checkpoint).resolve()), stat.st_size, stat.st_mtime_ns])
    Path(arguments.out).mkdir(parents=True, exist_ok=True)
    with lock_output_folder(arguments.out, "group-attention predict"), pixel_limit(arguments.max_pixels):
        report = predict(
            models,
            arguments.inputs,
            arguments.out,
            tile=arguments.tile,
            tile_size=arguments.tile_size,
            overlap=arguments.overlap,
            batch_size=arguments.batch_size,
            amp=arguments.amp,
            masks=arguments.masks,
            progress=not arguments.quiet,
            settings={"checkpoints": identities},
        )
    print(
        f"{report.predicted} predicted, {report.skipped} done earlier, {len(report.failures)} failed; "
        f"summary: {report.summary_csv}"
    )
    for failure in report.failures:
        print(f"failed: {failure['error']}", file=sys.stderr)
    return 0 if report.ok else 1


@contextlib.contextmanager
def pixel_limit(limit: "int | None") -> Iterator[None]:
    """``$GA_MAX_PIXELS`` set to ``limit`` (when given) while the block runs."""
    previous = os.environ.get(MAX_PIXELS_ENV)
    if limit is not None:
        os.environ[MAX_PIXELS_ENV] = str(limit)
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(MAX_PIXELS_ENV, None)
        else:
            os.environ[MAX_PIXELS_ENV] = previous


def interrupted_message(out: "str | os.PathLike") -> str:
    """What Ctrl-C left in ``out``: the images whose outputs are complete (their records), and how to go on."""
    records = Path(out) / "records"
    done = len(list(records.glob("*.json"))) if records.is_dir() else 0
    return (
        f"interrupted: {done} image(s) in {out} are finished and kept; "
        "rerun the same command to resume (finished images are skipped)"
    )


def main(argv: "Sequence[str] | None" = None) -> int:
    """Run the command line; returns the exit status."""
    parser = build_parser()
    arguments = parser.parse_args(argv)
    try:
        if arguments.command == "predict":
            return run_predict(arguments)
    except KeyboardInterrupt:
        print(f"\ngroup-attention {arguments.command}: {interrupted_message(arguments.out)}", file=sys.stderr)
        return 130
    except (ValueError, TypeError, FileNotFoundError) as err:
        print(f"group-attention {arguments.command}: error: {err}", file=sys.stderr)
        return 2
    parser.error(f"unknown command {arguments.command!r}")
    return 2
