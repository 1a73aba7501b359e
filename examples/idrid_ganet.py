#!/usr/bin/env python
"""Reproduce the IDRiD experiment of GANet (Ye et al., SPIE Medical Imaging 2020), Table 1 and Figs 4-5.

    python examples/idrid_ganet.py                          # quick demo on generated synthetic data (CPU, minutes)
    python examples/idrid_ganet.py --data-root /data/IDRiD  # the paper's protocol on IDRiD (GPU, hours)
    torchrun --nproc_per_node 2 examples/idrid_ganet.py ... # data parallel over 2 processes or GPUs
    python examples/idrid_ganet.py --images DIR --masks DIR [--classes EX HE] --dry-run   # your own images

Your own images: --images (a folder of JPEG/PNG/TIFF) and --masks (a sub-folder per class, or with --mask-suffix one
folder of <stem>_<CLASS> files) replace --data-root; the paper's defaults apply (see docs/data.md, "Your own images").

With ``--data-root`` the defaults are the paper's: EX and HE segmented separately, all six Table 1 variants,
generalized Dice loss, Adam lr 1e-4, 300 epochs, batch 8, 512x384 after cropping the background, random flips and
rotations, 3-fold cross-validation over all images. Rerunning the same command resumes where it stopped.
Outputs (in --out): results.md, results.json, runs/<variant>/<lesion>/fold<k>/{log.csv, curves.png,
checkpoint_best.pt, metrics.json, overlays/*.png, attention.png} (checkpoint_last.pt while a run trains; see
--keep-checkpoints). A joint model's folder is runs/<variant>/<L1+L2>/fold<k>.

Beyond the paper: --lesion EX HE --joint trains one model for both lesions; --scale 0.5 --patch 256 256 trains on
patches at half the native resolution and tests with the sliding window over every pixel of the original image
(docs/beyond_the_paper.md).
A mistake in the options or the data ends with one line naming it and exit code 2; --debug (or GA_DEBUG=1) shows
the traceback instead.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path

from group_attention.fundus.data import PairedFolderSource
from group_attention.fundus.data.decode import DEFAULT_MAX_PIXELS, MAX_PIXELS_ENV
from group_attention.fundus.engine import (
    PROTOCOLS,
    ExperimentConfig,
    quick_synthetic_config,
    resolve_device,
    run_experiment,
)
from group_attention.fundus.engine.config import ACTIVATIONS, KEEP_CHECKPOINTS, LOSSES, PATCH_BN_WINDOWS
from group_attention.fundus.engine.experiment import has_work, validate_experiment
from group_attention.fundus.engine.loss import DICE_OVER
from group_attention.fundus.safety import finite_float
from group_attention.models import VARIANTS

# Mistakes a person can make (options, data files, the output folder): one line and exit code 2, no traceback.
USER_ERRORS = (ValueError, TypeError, OSError, MemoryError)
# The setting a message of ExperimentConfig or the engine starts with -> the option that sets it.
OPTION_OF = {
    "folds": "--folds",
    "only_folds": "--only-folds",
    "size": "--size",
    "epochs": "--epochs",
    "batch_size": "--batch-size",
    "lr": "--lr",
    "activation": "--activation",
    "loss": "--loss",
    "seed": "--seed",
    "device": "--device",
    "lesion": "--lesion",
    "lesions": "--lesion",
    "variant": "--variants",
    "variants": "--variants",
    "protocol": "--protocol",
    "val_fraction": "--val-fraction",
    "checkpoint_seconds": "--checkpoint-seconds",
    "workers": "--workers",
    "keep_checkpoints": "--keep-checkpoints",
    "joint": "--joint",
    "scale": "--scale",
    "patch": "--patch",
    "patches_per_image": "--patches-per-image",
    "lesion_share": "--lesion-share",
    "dice_over": "--dice-over",
    "bn_windows": "--bn-windows",
    "time_budget": "--time-budget",
    "tensorboard": "--tensorboard",
}


def parse_arguments(argv: "list[str] | None" = None) -> argparse.Namespace:
    """The options; ``--help`` shows the defaults of the mode in use (the synthetic demo, or with ``--data-root``
    the paper's protocol)."""
    peek = argparse.ArgumentParser(add_help=False)
    peek.add_argument("--data-root")
    peek.add_argument("--images")
    peeked = peek.parse_known_args(argv)[0]
    real_data = peeked.data_root is not None or peeked.images is not None
    defaults = ExperimentConfig() if real_data else quick_synthetic_config()
    mode = (
        "the paper's protocol (--data-root given)"
        if real_data
        else "the synthetic demo; add --data-root to see the paper's"
    )
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"Defaults shown are those of {mode}.",
    )
    add = parser.add_argument
    add("--data-root", help="IDRiD folder holding 'A. Segmentation'; without it, synthetic data are generated")
    add("--images", help="your own images: a folder of JPEG/PNG/TIFF images (with --masks; instead of --data-root)")
    add("--masks", help="with --images: a sub-folder of binary masks per class (masks/EX/<stem>.png)")
    add("--classes", nargs="+", metavar="NAME", help="with --images: the classes to read (default: the sub-folders)")
    add("--mask-suffix", action="store_true", help="with --images: masks are files <stem>_<CLASS>.* in --masks")
    add("--no-crop", action="store_true", help="with --images: no field-of-view crop (images that are not fundi)")
    add("--missing-mask", choices=("error", "empty"), help="with --images: image without mask (default error)")
    add(
        "--split-file",
        action="append",
        metavar="SPLIT=PATH",
        help="with --images: train=PATH and test=PATH, files of ids (one per line) for --protocol official",
    )
    add("--dry-run", action="store_true", help="check the data and print its summary, then exit without training")
    add(
        "--lesion",
        nargs="+",
        metavar="CODE",
        help=f"lesions, each its own model: EX HE (paper) or MA SE OD (default: {' '.join(defaults.lesions)})",
    )
    add(
        "--variants",
        nargs="+",
        metavar="NAME",
        help=f"Table 1 rows, or 'all': {', '.join(VARIANTS)} (default: {' '.join(defaults.variants)})",
    )
    add(
        "--protocol",
        choices=PROTOCOLS,
        help=f"cv: k-fold over all images (paper); official: train/test sets (default: {defaults.protocol})",
    )
    add("--folds", type=int, help=f"cross-validation folds (default: {defaults.folds}; paper: 3)")
    add("--only-folds", type=int, nargs="+", metavar="K", help="run only these folds (1-based; default: all)")
    add("--epochs", type=int, help=f"training epochs (default: {defaults.epochs}; paper: 300)")
    add("--batch-size", type=int, help=f"batch size (default: {defaults.batch_size}; paper: 8)")
    add("--lr", type=finite_float, help=f"Adam learning rate (default: {defaults.lr:g}; paper: 1e-4)")
    add(
        "--activation",
        choices=tuple(ACTIVATIONS),
        help=f"softmax: background and lesion logits (paper); sigmoid: a lesion logit (default: {defaults.activation})",
    )
    add(
        "--loss",
        choices=tuple(LOSSES),
        help=f"generalized_dice (paper) or dice: plain soft Dice (default: {defaults.loss})",
    )
    add(
        "--size",
        type=int,
        nargs=2,
        metavar=("H", "W"),
        help=f"image size after cropping (default: {defaults.size[0]} {defaults.size[1]}; paper: 384 512)",
    )
    add(
        "--val-fraction",
        type=finite_float,
        help=f"share of each training fold used to pick the best checkpoint (default: {defaults.val_fraction:g})",
    )
    add(
        "--seed", type=int, help=f"seed of folds, initialisation, shuffling and augmentation (default: {defaults.seed})"
    )
    add("--device", help="auto (default), cpu, cuda, cuda:1 ...")
    add("--amp", action="store_true", default=None, help="mixed precision (fp16 on CUDA, bf16 on CPU)")
    add("--workers", type=int, help=f"processes decoding images into the cache (default: {defaults.workers})")
    add("--overlays", type=int, help=f"overlay pictures per fold (-1: every test image; default: {defaults.overlays})")
    add(
        "--checkpoint-seconds",
        type=finite_float,
        help=f"write the last checkpoint at most this often (0: every epoch; default: {defaults.checkpoint_seconds:g})",
    )
    add(
        "--keep-checkpoints",
        choices=KEEP_CHECKPOINTS,
        help="what a finished run keeps: best (the best weights), all (also the last checkpoint with the optimizer "
        f"state, to train on) or none (default: {defaults.keep_checkpoints})",
    )
    add(
        "--max-pixels",
        type=int,
        help=f"refuse images of more pixels, before decoding (default {DEFAULT_MAX_PIXELS:,})",
    )
    add(
        "--joint",
        action="store_true",
        default=None,
        help="one model for all --lesion (one sigmoid output per lesion) instead of one model per lesion (paper)",
    )
    add(
        "--scale",
        type=float,
        help="train on patches of the field of view at this share of the native resolution (1.0, 0.5, 0.25; with "
        "--patch) and test with the sliding window at the original resolution (default: the paper's whole image)",
    )
    add("--patch", type=int, nargs=2, metavar=("H", "W"), help="with --scale: patch size, multiples of 16")
    add(
        "--patches-per-image",
        type=int,
        help=f"with --scale: patches per training image and epoch (default: {defaults.patches_per_image})",
    )
    add(
        "--lesion-share",
        type=float,
        help=f"with --scale: share of patches centred on a lesion pixel (default: {defaults.lesion_share:g})",
    )
    add(
        "--dice-over",
        choices=DICE_OVER,
        help="the training loss's Dice per image (the paper's) or over the batch's pixels pooled (default: batch "
        "with --scale, image otherwise)",
    )
    add(
        "--bn-windows",
        type=int,
        metavar="N",
        help=f"with --scale: estimate batch norm's statistics, before validating and testing, from N windows of the "
        f"training crops as the sliding window cuts them (default: {PATCH_BN_WINDOWS}; 0 keeps training's running "
        "averages, which follow its lesion-centred patches)",
    )
    add(
        "--time-budget",
        type=float,
        metavar="MIN",
        help="stop each run's training after this many minutes and test its best checkpoint (default: none)",
    )
    add(
        "--tensorboard",
        action="store_true",
        default=None,
        help='also log scalars and overlays for TensorBoard (pip install "group-attention[tensorboard]")',
    )
    add("--cache-dir", help="preprocessed image cache (default $GA_CACHE_DIR or ~/.cache/group-attention)")
    add("--out", type=Path, help="output folder (default runs/idrid-ganet or runs/idrid-ganet-synthetic)")
    add("--resume", action="store_true", help="require an earlier run in --out to continue (rerunning resumes anyway)")
    add("--no-progress", action="store_true", help="no progress bars or per-epoch lines")
    add("--debug", action="store_true", help="show the traceback of an error (also: environment GA_DEBUG=1)")
    return parser.parse_args(argv)


FOLDER_OPTIONS = ("masks", "classes", "mask_suffix", "no_crop", "missing_mask", "split_file")


def build_source(arguments: argparse.Namespace) -> "PairedFolderSource | None":
    """The folder source of --images/--masks, or None without --images (then the config's source is used)."""
    if arguments.images is None:
        given = [
            f"--{name.replace('_', '-')}" for name in FOLDER_OPTIONS if getattr(arguments, name) not in (None, False)
        ]
        if given:
            raise ValueError(f"{', '.join(given)} only apply with --images")
        return None
    if arguments.data_root is not None:
        raise ValueError("--images and --data-root exclude each other: give one data set")
    if arguments.masks is None:
        raise ValueError("--images needs --masks (the mask folder)")
    splits = None
    if arguments.split_file:
        splits = {}
        for entry in arguments.split_file:
            name, _, path = entry.partition("=")
            if name not in ("train", "test") or not path or name in splits:
                raise ValueError(f"--split-file takes train=PATH and test=PATH once each; got {entry!r}")
            splits[name] = path
    return PairedFolderSource(
        arguments.images,
        arguments.masks,
        classes=arguments.classes,
        mask_suffixes=True if arguments.mask_suffix else None,
        crop_fov=not arguments.no_crop,
        missing_mask=arguments.missing_mask or "error",
        splits=splits,
    )


def build_config(arguments: argparse.Namespace) -> ExperimentConfig:
    """The paper's protocol with --data-root, the quick synthetic demo without; given options override both."""
    overrides = {
        "data_root": arguments.data_root,
        "lesions": arguments.lesion,
        "protocol": arguments.protocol,
        "folds": arguments.folds,
        "epochs": arguments.epochs,
        "batch_size": arguments.batch_size,
        "lr": arguments.lr,
        "activation": arguments.activation,
        "loss": arguments.loss,
        "size": arguments.size,
        "val_fraction": arguments.val_fraction,
        "seed": arguments.seed,
        "device": arguments.device,
        "amp": arguments.amp,
        "workers": arguments.workers,
        "overlays": arguments.overlays,
        "cache_dir": arguments.cache_dir,
        "checkpoint_seconds": arguments.checkpoint_seconds,
        "keep_checkpoints": arguments.keep_checkpoints,
        "joint": arguments.joint,
        "scale": arguments.scale,
        "patch": arguments.patch,
        "patches_per_image": arguments.patches_per_image,
        "lesion_share": arguments.lesion_share,
        "dice_over": arguments.dice_over,
        "bn_windows": arguments.bn_windows,
        "time_budget": arguments.time_budget,
        "tensorboard": arguments.tensorboard,
        "variants": list(VARIANTS) if arguments.variants in (["all"], ["ALL"]) else arguments.variants,
    }
    overrides = {key: value for key, value in overrides.items() if value is not None}
    if overrides.get("joint") and "activation" not in overrides:
        overrides["activation"] = "sigmoid"  # a joint model's outputs are independent; softmax is refused
    real_data = arguments.data_root is not None or arguments.images is not None
    config = ExperimentConfig(**overrides) if real_data else quick_synthetic_config(**overrides)
    if arguments.only_folds is not None:  # 1-based on the command line
        bad = [k for k in arguments.only_folds if not 1 <= k <= config.num_folds]
        if bad:
            raise ValueError(f"--only-folds takes folds 1..{config.num_folds}, got {bad}")
        config = dataclasses.replace(config, only_folds=[k - 1 for k in arguments.only_folds])
    return config


def one_line(error: BaseException) -> str:
    """An error as one line, led by the option it concerns where the message starts with a setting's name."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if any(line.startswith("Traceback") or line.startswith("Original Traceback") for line in lines):
        lines = lines[-1:]  # an error re-raised from a worker process: its own message is the last line
    text = " ".join(lines)
    if isinstance(error, MemoryError):
        text = "out of memory" + (f" ({text})" if text else "") + "; try a smaller --size, --batch-size or --workers"
    elif not text:
        text = type(error).__name__
    elif isinstance(error, OSError) and not isinstance(error, FileNotFoundError) and error.filename is None:
        text = f"{type(error).__name__}: {text}"
    option = OPTION_OF.get(text.split(" ", 1)[0].strip(":'\""))
    if option is not None and option not in text:
        text = f"{option}: {text}"
    return text


def debugging(arguments: "argparse.Namespace | None" = None) -> bool:
    return bool(arguments is not None and arguments.debug) or os.environ.get("GA_DEBUG", "") not in ("", "0")


def main(argv: "list[str] | None" = None) -> int:
    arguments = parse_arguments(argv)
    last_epoch: dict = {}
    try:
        if arguments.max_pixels is not None:
            if arguments.max_pixels < 1:
                raise ValueError(f"--max-pixels must be a positive number of pixels, got {arguments.max_pixels}")
            os.environ[MAX_PIXELS_ENV] = str(arguments.max_pixels)  # also for the processes filling the cache
        folders = build_source(arguments)
        config = build_config(arguments)
        if folders is not None and arguments.lesion is None:
            config = dataclasses.replace(config, lesions=folders.classes)  # --classes, or every class of --masks
        default_out = "segmentation" if folders else "idrid-ganet-synthetic" if config.synthetic_data else "idrid-ganet"
        out = arguments.out or Path("runs") / default_out
        source = folders or config.data_source(out)  # a wrong root fails here, clearly
        source.check_classes(config.lesions)
        if not source.synthetic:
            print(source.summary(), flush=True)  # the folder source decodes (and so checks) every file here
        if arguments.dry_run:
            source.check_masks(config.lesions)
            print(f"dry run: the data are readable; would train {list(config.variants)} on {list(config.lesions)}")
            return 0
        if arguments.resume and not has_work(out):
            raise ValueError(f"--resume given but {out} holds no earlier run")
        resolve_device(config.device)  # e.g. cuda asked for where there is none
        validate_experiment(config, out, source)  # writes nothing: a refused command leaves --out as it was
        if config.synthetic_data and folders is None:
            print(
                "NOTE: no --data-root given: running the quick demo on SYNTHETIC data generated under "
                f"{out / 'synthetic-idrid'}; its numbers say nothing about IDRiD.",
                flush=True,
            )
        results = run_experiment(
            config, out, on_epoch_end=last_epoch.update, progress=not arguments.no_progress, source=source
        )
    except KeyboardInterrupt:
        if debugging(arguments):
            raise
        print(f"\n{interrupted_message(last_epoch)}", file=sys.stderr)
        return 130
    except USER_ERRORS as error:
        if debugging(arguments):
            raise
        print(f"error: {one_line(error)}", file=sys.stderr)
        return 2
    if results is not None:
        print((out / "results.md").read_text())
        print(f"Results, logs, checkpoints and pictures: {out}")
    return 0


def interrupted_message(last_epoch: dict) -> str:
    """What was kept when Ctrl-C stopped the experiment, from the last ``on_epoch_end`` row."""
    if not last_epoch:
        return "interrupted before an epoch finished; rerun the same command to resume"
    message = f"interrupted after epoch {last_epoch['epoch']} of {last_epoch['run']}"
    checkpoint = last_epoch.get("checkpoint_epoch")
    if checkpoint is not None and checkpoint != last_epoch["epoch"]:
        message += (
            f" (its last checkpoint holds epoch {checkpoint})" if checkpoint else " (before its first checkpoint)"
        )
    return message + "; rerun the same command to resume"


if __name__ == "__main__":
    sys.exit(main())
