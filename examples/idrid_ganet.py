#!/usr/bin/env python
"""Reproduce the IDRiD experiment of GANet (Ye et al., SPIE Medical Imaging 2020), Table 1 and Figs 4-5.

    python examples/idrid_ganet.py                          # quick demo on generated synthetic data (CPU, minutes)
    python examples/idrid_ganet.py --data-root /data/IDRiD  # the paper's protocol on IDRiD (GPU, hours)
    torchrun --nproc_per_node 2 examples/idrid_ganet.py ... # data parallel over 2 processes or GPUs

With ``--data-root`` the defaults are the paper's: EX and HE segmented separately, all six Table 1 variants,
generalized Dice loss, Adam lr 1e-4, 300 epochs, batch 8, 512x384 after cropping the background, random flips and
rotations, 3-fold cross-validation over all images. Rerunning the same command resumes where it stopped.
Outputs (in --out): results.md, results.json, runs/<variant>/<lesion>/fold<k>/{log.csv, checkpoint_last.pt,
checkpoint_best.pt, metrics.json, overlays/*.png, attention.png}.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from group_attention.engine import (PROTOCOLS, ExperimentConfig, check_resumable, quick_synthetic_config,
                                    resolve_device, run_experiment)
from group_attention.models import VARIANTS


def parse_arguments(argv: "list[str] | None" = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--data-root", help="IDRiD folder holding 'A. Segmentation'; without it, synthetic data are generated")
    add("--lesion", nargs="+", metavar="CODE", help="lesions, each its own model: EX HE (paper) or MA SE OD")
    add("--variants", nargs="+", metavar="NAME", help=f"Table 1 rows, or 'all': {', '.join(VARIANTS)}")
    add("--protocol", choices=PROTOCOLS, help="cv: k-fold over all images (paper); official: train/test sets")
    add("--folds", type=int, help="cross-validation folds (paper: 3)")
    add("--only-folds", type=int, nargs="+", metavar="K", help="run only these folds (1-based)")
    add("--epochs", type=int, help="training epochs (paper: 300)")
    add("--batch-size", type=int, help="batch size (paper: 8)")
    add("--lr", type=float, help="Adam learning rate (paper: 1e-4)")
    add("--size", type=int, nargs=2, metavar=("H", "W"), help="image size after cropping (paper: 384 512)")
    add("--val-fraction", type=float, help="share of each training fold used to pick the best checkpoint")
    add("--seed", type=int, help="seed of folds, initialisation, shuffling and augmentation")
    add("--device", help="auto (default), cpu, cuda, cuda:1 ...")
    add("--amp", action="store_true", default=None, help="mixed precision (fp16 on CUDA, bf16 on CPU)")
    add("--workers", type=int, help="processes decoding images into the cache")
    add("--overlays", type=int, help="overlay pictures per fold (-1: every test image)")
    add("--checkpoint-seconds", type=float, help="write the last checkpoint at most this often (default 30; 0: "
                                                 "every epoch)")
    add("--cache-dir", help="preprocessed image cache (default $GA_CACHE_DIR or ~/.cache/group-attention)")
    add("--out", type=Path, help="output folder (default runs/idrid-ganet or runs/idrid-ganet-synthetic)")
    add("--resume", action="store_true", help="require an earlier run in --out to continue (rerunning resumes anyway)")
    add("--no-progress", action="store_true", help="no progress bars or per-epoch lines")
    return parser.parse_args(argv)


def build_config(arguments: argparse.Namespace) -> ExperimentConfig:
    """The paper's protocol with --data-root, the quick synthetic demo without; given options override both."""
    overrides = {
        "data_root": arguments.data_root, "lesions": arguments.lesion, "protocol": arguments.protocol,
        "folds": arguments.folds, "epochs": arguments.epochs, "batch_size": arguments.batch_size,
        "lr": arguments.lr, "size": arguments.size, "val_fraction": arguments.val_fraction,
        "seed": arguments.seed, "device": arguments.device, "amp": arguments.amp, "workers": arguments.workers,
        "overlays": arguments.overlays, "cache_dir": arguments.cache_dir,
        "checkpoint_seconds": arguments.checkpoint_seconds,
        "variants": list(VARIANTS) if arguments.variants in (["all"], ["ALL"]) else arguments.variants,
    }
    overrides = {key: value for key, value in overrides.items() if value is not None}
    config = quick_synthetic_config(**overrides) if arguments.data_root is None else ExperimentConfig(**overrides)
    if arguments.only_folds is not None:  # 1-based on the command line
        bad = [k for k in arguments.only_folds if not 1 <= k <= config.num_folds]
        if bad:
            raise ValueError(f"--only-folds takes folds 1..{config.num_folds}, got {bad}")
        config = dataclasses.replace(config, only_folds=[k - 1 for k in arguments.only_folds])
    return config


def main(argv: "list[str] | None" = None) -> int:
    arguments = parse_arguments(argv)
    try:
        config = build_config(arguments)
        out = arguments.out or Path("runs") / ("idrid-ganet-synthetic" if config.synthetic_data else "idrid-ganet")
        source = config.data_source(out)  # a wrong root fails here, clearly
        source.check_classes(config.lesions)
        if not source.synthetic:
            print(source.summary(), flush=True)
        if arguments.resume and not (out / "config.json").exists():
            raise ValueError(f"--resume given but {out} holds no earlier run")
        resolve_device(config.device)  # e.g. cuda asked for where there is none
        check_resumable(out, config)  # runs of other settings in --out
    except (TypeError, ValueError, FileNotFoundError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if config.synthetic_data:
        print("NOTE: no --data-root given: running the quick demo on SYNTHETIC data generated under "
              f"{out / 'synthetic-idrid'}; its numbers say nothing about IDRiD.", flush=True)
    results = run_experiment(config, out, progress=not arguments.no_progress, source=source)
    if results is not None:
        print((out / "results.md").read_text())
        print(f"Results, logs, checkpoints and pictures: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
