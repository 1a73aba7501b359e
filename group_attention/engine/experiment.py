"""The experiment of the paper on a data source: every (variant, lesion, fold) run, resumable, then Table 1 and
pictures. The data come from a :class:`~group_attention.data.SegmentationSource` (IDRiD, its synthetic look-alike,
or any other source)."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import torch

from ..data import SegmentationSource
from .arrays import LesionArrays, load_class_arrays
from .config import ExperimentConfig
from .distributed import Context, init_distributed, resolve_device, shutdown_distributed
from .evaluate import evaluate, predict_batches
from .io import read_json, save_png, write_json
from .results import write_results
from .train import EpochCallback, RunSpec, Trainer, run_seed
from .visualize import attention_panels, save_overlays



def prepare_source(source: SegmentationSource, context: Context) -> None:
    """Let process 0 make the source's files exist (e.g. write the synthetic tree) while the others wait."""
    if context.is_main:
        source.prepare()
    context.barrier()


def load_arrays(config: ExperimentConfig, source: SegmentationSource, lesion: str,
                folds: list[list[list[str]]]) -> LesionArrays:
    """Every image the ``folds`` use (``[train_ids, test_ids]`` pairs), with ``lesion``'s masks, in one set of
    tensors."""
    ids = list(dict.fromkeys(image_id for train_ids, test_ids in folds for image_id in train_ids + test_ids))
    return load_class_arrays(source, lesion, ids, config.size, config.cache_dir, config.workers)


def split_validation(train_ids: list[str], fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Hold out ``ceil(fraction * n)`` training images (seeded) to pick the best checkpoint."""
    if fraction == 0 or len(train_ids) < 2:
        return list(train_ids), []
    count = min(len(train_ids) - 1, max(1, math.ceil(fraction * len(train_ids))))
    generator = torch.Generator().manual_seed(seed)
    shuffled = [train_ids[i] for i in torch.randperm(len(train_ids), generator=generator).tolist()]
    held_out = set(shuffled[:count])
    return [i for i in train_ids if i not in held_out], [i for i in train_ids if i in held_out]


def run_specs(config: ExperimentConfig, folds: list[list[str]], lesion: str) -> list[RunSpec]:
    """The runs for one lesion, variant by variant, fold by fold."""
    specs = []
    for variant in config.variants:
        for fold, (train_ids, test_ids) in enumerate(folds):
            if config.only_folds is not None and fold not in config.only_folds:
                continue
            fit_ids, val_ids = split_validation(train_ids, config.val_fraction, run_seed(config.seed, fold, 99))
            specs.append(RunSpec(variant, lesion, fold, fit_ids, val_ids, list(test_ids)))
    return specs


def finish_run(trainer: Trainer, arrays: LesionArrays, config: ExperimentConfig, run_dir: Path,
               device: torch.device) -> dict[str, Any]:
    """Test the best checkpoint on the fold's test images; write overlays, the attention figure, metrics.json."""
    spec = trainer.spec
    best_epoch = trainer.load_best()
    test_indices = arrays.indices_of(spec.test_ids)
    metrics = evaluate(trainer.model, arrays, test_indices, config.batch_size, device, config.amp)
    wanted = len(test_indices) if config.overlays < 0 else min(config.overlays, len(test_indices))
    if wanted:
        for chunk, images, probabilities, masks in predict_batches(trainer.model, arrays, test_indices[:wanted],
                                                                   config.batch_size, device, config.amp):
            save_overlays(run_dir / "overlays", [arrays.ids[i] for i in chunk.tolist()], images,
                          probabilities >= 0.5, masks)
            if chunk[0] == test_indices[0]:
                figure = attention_panels(trainer.model, images[0], masks[0])
                if figure is not None:
                    save_png(run_dir / "attention.png", figure)
    result = {
        "variant": spec.variant, "lesion": spec.lesion, "fold": spec.fold,
        "parameters": sum(p.numel() for p in trainer.model.parameters()),
        "best_epoch": best_epoch,
        "train_images": len(spec.train_ids), "val_images": len(spec.val_ids), "test_images": len(spec.test_ids),
        "test_ids": spec.test_ids, "test": metrics, "fingerprint": config.fingerprint(), "spec": vars(spec),
    }
    write_json(run_dir / "metrics.json", result)
    return result


def check_output_folder(out_dir: Path, config: ExperimentConfig) -> None:
    """Refuse to mix runs of different settings in one folder; record the settings of a new one."""
    check_resumable(out_dir, config)
    write_json(out_dir / "config.json", {"fingerprint": config.fingerprint(), "config": config.to_dict()})


def check_resumable(out_dir: "str | Path", config: ExperimentConfig) -> None:
    """Raise ``ValueError`` if ``out_dir`` holds runs made with settings other than ``config``'s (writes nothing)."""
    path = Path(out_dir) / "config.json"
    if path.exists():
        previous = read_json(path)
        if previous.get("fingerprint") != config.fingerprint():
            raise ValueError(
                f"{out_dir} holds runs made with other settings ({path}); use another --out, or delete the folder "
                "to start again. Only device, workers, overlays, cache_dir, checkpoint_seconds, variants, lesions "
                "and the folds to run may change between resumed runs."
            )


def run_experiment(config: ExperimentConfig, out_dir: "str | Path", on_epoch_end: "EpochCallback | None" = None,
                   progress: bool = True, source: "SegmentationSource | None" = None) -> "dict[str, Any] | None":
    """Run (or resume) every run of ``config`` into ``out_dir`` and write the results table.

    Finished runs (a ``metrics.json`` with the same settings) are skipped; an interrupted run continues from its
    ``checkpoint_last.pt``. Under ``torchrun`` every process trains and process 0 writes.

    Args:
        source: where the images, masks, ids and folds come from; default ``config.data_source(out_dir)`` (IDRiD at
            ``config.data_root``, or the synthetic look-alike). ``config.lesions`` must be among its classes.

    Returns:
        The content of ``results.json`` (None on processes other than 0).

    Raises:
        ValueError: a lesion that is not a class of the source, or ``out_dir`` holding runs of other settings
            (both before anything is written).
    """
    out_dir = Path(out_dir)
    if source is None:
        source = config.data_source(out_dir)
    source.check_classes(config.lesions)
    device = resolve_device(config.device, int(os.environ.get("LOCAL_RANK", "0")))
    context = init_distributed(device)
    try:
        if context.is_main:
            out_dir.mkdir(parents=True, exist_ok=True)
            check_output_folder(out_dir, config)
        context.barrier()
        prepare_source(source, context)
        folds = [[list(train_ids), list(test_ids)]
                 for train_ids, test_ids in source.folds(config.protocol, n_folds=config.folds, seed=config.seed)]
        finished: list[dict[str, Any]] = []
        for lesion in config.lesions:
            arrays = load_arrays(config, source, lesion, folds).to(device)
            for spec in run_specs(config, folds, lesion):
                run_dir = out_dir / "runs" / spec.variant / spec.lesion / f"fold{spec.fold + 1}"
                done = run_dir / "metrics.json"
                context.barrier()
                if done.exists() and read_json(done).get("fingerprint") == config.fingerprint():
                    recorded = read_json(done)
                    spec.check_same_images(recorded.get("spec", {"test_ids": recorded.get("test_ids")}), str(done))
                    if context.is_main and progress:
                        print(f"[{spec.name}] finished earlier: {done}", flush=True)
                    finished.append(recorded)
                    continue
                trainer = Trainer(spec, arrays, config, run_dir, device, context, progress)
                if trainer.resume() and context.is_main and progress:
                    print(f"[{spec.name}] resuming after epoch {trainer.start_epoch}", flush=True)
                trainer.fit(on_epoch_end)
                if context.is_main:
                    finished.append(finish_run(trainer, arrays, config, run_dir, device))
        if not context.is_main:
            return None
        expected = len(config.variants) * len(config.lesions) * (
            len(config.only_folds) if config.only_folds is not None else config.num_folds)
        write_results(out_dir, finished, config.to_dict(), source.synthetic, complete=len(finished) == expected)
        return read_json(out_dir / "results.json")
    finally:
        shutdown_distributed(context)
