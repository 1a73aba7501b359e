"""The experiment of the paper on a data source: every (variant, lesion, fold) run, resumable, then Table 1 and
pictures. The data come from a :class:`~group_attention.fundus.data.SegmentationSource` (IDRiD, its synthetic
look-alike, or any other source)."""

from __future__ import annotations

import contextlib
import math
import os
import time
from pathlib import Path
from typing import Any

import torch

from ..data import SegmentationSource
from ..devices import resolve_device
from ..pictures import save_png
from ..safety import check_writable_folder, lock_output_folder
from .arrays import LesionArrays, load_class_arrays
from .config import ExperimentConfig
from .distributed import Context, init_distributed, shutdown_distributed
from .evaluate import evaluate, predict_batches
from .io import read_json, write_json
from .results import write_results
from .train import EpochCallback, RunSpec, Trainer, run_seed
from .visualize import attention_panels, save_overlays


def prepare_source(source: SegmentationSource, context: Context) -> None:
    """Let process 0 make the source's files exist (e.g. write the synthetic tree) while the others wait."""
    if context.is_main:
        source.prepare()
    context.barrier()


def check_class_present(
    arrays: LesionArrays, source: SegmentationSource, lesion: str, split: str, ids: list[str]
) -> None:
    """Raise ``ValueError`` naming where the masks live if no image of ``ids`` shows ``lesion``: Dice and
    sensitivity of an empty class are conventions, not measurements, and training on it teaches nothing."""
    if not bool(arrays.masks[arrays.indices_of(ids)].any()):
        raise ValueError(
            f"lesion {lesion!r}: no {lesion} mask pixel in any of the {len(ids)} images of the {split!r} split; "
            f"{source.mask_location(lesion, split)} is empty or holds only blank masks. Put the masks there, or "
            "choose other lesions with --lesion"
        )


def load_arrays(
    config: ExperimentConfig, source: SegmentationSource, lesion: str, folds: list[list[list[str]]]
) -> LesionArrays:
    """Every image the ``folds`` use (``[train_ids, test_ids]`` pairs), with ``lesion``'s masks, in one set of
    tensors; a split with no mask pixel of ``lesion`` is an error (the official sets each, or every image)."""
    ids = list(dict.fromkeys(image_id for train_ids, test_ids in folds for image_id in train_ids + test_ids))
    arrays = load_class_arrays(source, lesion, ids, config.size, config.cache_dir, config.workers)
    if config.protocol == "official":
        for split, split_ids in zip(("train", "test"), folds[0]):
            check_class_present(arrays, source, lesion, split, split_ids)
    else:
        check_class_present(arrays, source, lesion, "all", ids)
    return arrays


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


def finish_run(
    trainer: Trainer, arrays: LesionArrays, config: ExperimentConfig, run_dir: Path, device: torch.device
) -> dict[str, Any]:
    """Test the best checkpoint on the fold's test images; write overlays, the attention figure, metrics.json."""
    spec = trainer.spec
    best_epoch = trainer.load_best()
    test_indices = arrays.indices_of(spec.test_ids)
    metrics = evaluate(trainer.model, arrays, test_indices, config.batch_size, device, config.amp, exact_aupr=True)
    wanted = len(test_indices) if config.overlays < 0 else min(config.overlays, len(test_indices))
    if wanted:
        for chunk, images, probabilities, masks in predict_batches(
            trainer.model, arrays, test_indices[:wanted], config.batch_size, device, config.amp
        ):
            save_overlays(
                run_dir / "overlays", [arrays.ids[i] for i in chunk.tolist()], images, probabilities >= 0.5, masks
            )
            if chunk[0] == test_indices[0]:
                figure = attention_panels(trainer.model, images[0], masks[0])
                if figure is not None:
                    save_png(run_dir / "attention.png", figure)
    result = {
        "variant": spec.variant,
        "lesion": spec.lesion,
        "fold": spec.fold,
        "parameters": sum(p.numel() for p in trainer.model.parameters()),
        "best_epoch": best_epoch,
        "train_images": len(spec.train_ids),
        "val_images": len(spec.val_ids),
        "test_images": len(spec.test_ids),
        "test_ids": spec.test_ids,
        "test": metrics,
        "fingerprint": config.fingerprint(),
        "spec": vars(spec),
    }
    write_json(run_dir / "metrics.json", result)
    return result


def record_settings(out_dir: Path, config: ExperimentConfig) -> None:
    """Write ``config.json``, the settings later commands in ``out_dir`` must match; called when training starts."""
    check_resumable(out_dir, config)
    write_json(out_dir / "config.json", {"fingerprint": config.fingerprint(), "config": config.to_dict()})


def has_work(out_dir: "str | Path") -> bool:
    """Whether ``out_dir`` holds a finished run or a checkpoint: only then are its settings binding."""
    runs = Path(out_dir) / "runs"
    return runs.is_dir() and any(
        next(runs.rglob(name), None) is not None
        for name in ("metrics.json", "checkpoint_last.pt", "checkpoint_best.pt")
    )


def count_images(config: ExperimentConfig, source: SegmentationSource) -> "dict[str, int]":
    """Images of the training and testing sets that ``config`` reads (the generated ones of a synthetic source
    that is not written yet)."""
    if source.synthetic and config.synthetic_data:
        return {"train": config.synthetic["n_train"], "test": config.synthetic["n_test"]}
    if config.protocol == "cv":
        return {"all": len(source.ids("all"))}
    return {split: len(source.ids(split)) for split in ("train", "test")}


def validate_experiment(config: ExperimentConfig, out_dir: "str | Path", source: SegmentationSource) -> None:
    """Every check that can refuse ``config`` before anything is written: the output folder (writable, and no
    runs of other settings in it), the number of folds against the number of images, and the mask files of the
    classes asked for (the source's :meth:`~group_attention.fundus.data.source.SegmentationSource.check_masks`).

    Raises:
        ValueError: naming the setting or file at fault and what would be valid.
    """
    check_writable_folder(out_dir)
    check_resumable(out_dir, config)
    source.check_classes(config.lesions)
    counts = count_images(config, source)
    if config.protocol == "cv":
        total = sum(counts.values())
        if config.folds > total:
            raise ValueError(f"folds must be at most the number of images ({total}), got {config.folds}")
    else:
        empty = [split for split, count in counts.items() if count == 0]
        if empty:
            raise ValueError(f"the official protocol needs training and testing images; none in {empty}")
    if not (source.synthetic and config.synthetic_data):
        source.check_masks(config.lesions)


def check_resumable(out_dir: "str | Path", config: ExperimentConfig) -> None:
    """Raise ``ValueError`` if ``out_dir`` holds runs made with settings other than ``config``'s (writes nothing).

    A folder with a ``config.json`` but no finished run or checkpoint (a command stopped before training) binds
    nothing: its settings are replaced when the next command starts training.
    """
    path = Path(out_dir) / "config.json"
    if path.exists() and has_work(out_dir):
        previous = read_json(path)
        if previous.get("fingerprint") != config.fingerprint():
            raise ValueError(
                f"{out_dir} holds runs made with other settings ({path}); use another --out, or delete the folder "
                "to start again. Only device, workers, overlays, cache_dir, checkpoint_seconds, variants, lesions "
                "and the folds to run may change between resumed runs."
            )


def run_experiment(
    config: ExperimentConfig,
    out_dir: "str | Path",
    on_epoch_end: "EpochCallback | None" = None,
    progress: bool = True,
    source: "SegmentationSource | None" = None,
) -> "dict[str, Any] | None":
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
    lock = contextlib.ExitStack()
    try:
        if context.is_main:
            validate_experiment(config, out_dir, source)
            out_dir.mkdir(parents=True, exist_ok=True)
            lock.enter_context(lock_output_folder(out_dir, "experiment"))  # one run per folder
            check_resumable(out_dir, config)  # again under the lock: a run that ended just now may have bound it
        context.barrier()
        prepare_source(source, context)
        folds = [
            [list(train_ids), list(test_ids)]
            for train_ids, test_ids in source.folds(config.protocol, n_folds=config.folds, seed=config.seed)
        ]
        finished: list[dict[str, Any]] = []
        runs_per_lesion = len(config.variants) * (
            len(config.only_folds) if config.only_folds is not None else config.num_folds
        )
        clock = ProgressClock(config.epochs, runs_per_lesion * len(config.lesions))
        settings_recorded = False
        for lesion in config.lesions:
            arrays = load_arrays(config, source, lesion, folds).to(device)
            for spec in run_specs(config, folds, lesion):
                run_dir = out_dir / "runs" / spec.variant / spec.lesion / f"fold{spec.fold + 1}"
                done = run_dir / "metrics.json"
                clock.start_run(spec)
                context.barrier()
                if done.exists() and read_json(done).get("fingerprint") == config.fingerprint():
                    recorded = read_json(done)
                    spec.check_same_images(recorded.get("spec", {"test_ids": recorded.get("test_ids")}), str(done))
                    if context.is_main and progress:
                        print(f"[{spec.name}] finished earlier: {done}", flush=True)
                    finished.append(recorded)
                    clock.skip_run()
                    continue
                if context.is_main and not settings_recorded:
                    record_settings(out_dir, config)  # only now: a refused or failed command binds no settings
                    settings_recorded = True
                trainer = Trainer(spec, arrays, config, run_dir, device, context, progress)
                trainer.status = clock.status
                if trainer.resume() and context.is_main and progress:
                    print(f"[{spec.name}] resuming after epoch {trainer.start_epoch}", flush=True)
                clock.resume_at(trainer.start_epoch)
                if context.is_main and progress:
                    print(clock.run_line(), flush=True)
                trainer.fit(chain_callbacks(clock.epoch_done, on_epoch_end))
                if context.is_main:
                    finished.append(finish_run(trainer, arrays, config, run_dir, device))
                    remove_checkpoints(trainer, config.keep_checkpoints)
        if not context.is_main:
            return None
        expected = len(config.lesions) * runs_per_lesion
        write_results(out_dir, finished, config.to_dict(), source.synthetic, complete=len(finished) == expected)
        return read_json(out_dir / "results.json")
    finally:
        lock.close()
        shutdown_distributed(context)


def remove_checkpoints(trainer: Trainer, keep: str) -> None:
    """Free the disk a finished run no longer needs (its ``metrics.json`` marks it done): ``"best"`` keeps the
    best weights, ``"all"`` keeps both checkpoints, ``"none"`` neither."""
    doomed = {"best": [trainer.last_path], "all": [], "none": [trainer.last_path, trainer.best_path]}[keep]
    for path in doomed:
        path.unlink(missing_ok=True)


def chain_callbacks(*callbacks: "EpochCallback | None") -> EpochCallback:
    def call_all(row: dict) -> None:
        for callback in callbacks:
            if callback is not None:
                callback(row)

    return call_all


class ProgressClock:
    """Where the whole experiment stands: ``run k of N (variant, lesion, fold)`` and an estimate of the time left
    from the mean epoch time measured so far (runs still to come are counted with all their epochs)."""

    def __init__(self, epochs: int, total_runs: int) -> None:
        self.epochs, self.total_runs = epochs, total_runs
        self.run_number, self.spec = 0, None
        self.epochs_left_in_run, self.runs_after = epochs, total_runs
        self.seconds, self.epochs_timed = 0.0, 0
        self.epoch_started = time.monotonic()

    def start_run(self, spec: Any) -> None:
        self.run_number += 1
        self.spec, self.epochs_left_in_run = spec, self.epochs
        self.runs_after = self.total_runs - self.run_number

    def skip_run(self) -> None:
        self.epochs_left_in_run = 0

    def resume_at(self, epoch: int) -> None:
        self.epochs_left_in_run = self.epochs - epoch
        self.epoch_started = time.monotonic()

    def epoch_done(self, row: dict) -> None:
        now = time.monotonic()
        self.seconds += now - self.epoch_started
        self.epochs_timed += 1
        self.epoch_started = now
        self.epochs_left_in_run = max(0, self.epochs_left_in_run - 1)

    def time_left(self) -> str:
        if self.epochs_timed == 0:
            return "time left: estimated after the first epoch"
        seconds = self.seconds / self.epochs_timed * (self.epochs_left_in_run + self.runs_after * self.epochs)
        return f"about {format_duration(seconds)} left"

    def status(self) -> str:
        return f"run {self.run_number} of {self.total_runs}, {self.time_left()}"

    def run_line(self) -> str:
        spec = self.spec
        return (
            f"run {self.run_number} of {self.total_runs} ({spec.variant}, {spec.lesion}, fold {spec.fold + 1}); "
            f"{self.time_left()}"
        )


def format_duration(seconds: float) -> str:
    """``42 s``, ``7 min``, ``3 h 05 min``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 120 else f"{minutes // 60} h {minutes % 60:02d} min"
