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
from PIL import Image

from ..data import SegmentationSource
from ..devices import resolve_device
from ..pictures import save_png
from ..safety import check_writable_folder, lock_output_folder
from .arrays import LesionArrays, load_class_arrays
from .config import ExperimentConfig
from .curves import TrainingMonitor
from .distributed import Context, init_distributed, shutdown_distributed
from .evaluate import predict_batches
from .io import read_json, write_json
from .patches import ScaledArrays, check_patch_fits_headers, load_scaled_arrays
from .results import write_results
from .train import EpochCallback, RunSpec, Trainer, run_seed
from .visualize import attention_panels, save_overlays
from .windows import window_probabilities


def prepare_source(source: SegmentationSource, context: Context) -> None:
    """Let process 0 make the source's files exist (e.g. write the synthetic tree) while the others wait."""
    if context.is_main:
        source.prepare()
    context.barrier()


def check_class_present(
    arrays: "LesionArrays | ScaledArrays",
    source: SegmentationSource,
    lesion: str,
    split: str,
    ids: list[str],
    channel: int = 0,
) -> None:
    """Raise ``ValueError`` naming where the masks live if no image of ``ids`` shows ``lesion`` (mask channel
    ``channel``): Dice and sensitivity of an empty class are conventions, not measurements, and training on it
    teaches nothing."""
    indices = arrays.indices_of(ids)
    if isinstance(arrays, ScaledArrays):
        present = any(bool(arrays.masks[int(i)][channel].any()) for i in indices)
    else:
        present = bool(arrays.masks[indices, channel].any())
    if not present:
        raise ValueError(
            f"lesion {lesion!r}: no {lesion} mask pixel in any of the {len(ids)} images of the {split!r} split; "
            f"{source.mask_location(lesion, split)} is empty or holds only blank masks. Put the masks there, or "
            "choose other lesions with --lesion"
        )


def load_arrays(
    config: ExperimentConfig,
    source: SegmentationSource,
    lesion: "str | tuple[str, ...]",
    folds: list[list[list[str]]],
) -> "LesionArrays | ScaledArrays":
    """Every image the ``folds`` use (``[train_ids, test_ids]`` pairs), with the masks of ``lesion`` (a model's
    lesions: one channel each): the whole crops resized to ``config.size``, or in patch mode the crops at
    ``config.scale``. A split with no mask pixel of a lesion is an error (the official sets each, or every image),
    and so is a patch larger than a scaled crop."""
    lesions = (lesion,) if isinstance(lesion, str) else tuple(lesion)
    ids = list(dict.fromkeys(image_id for train_ids, test_ids in folds for image_id in train_ids + test_ids))
    if config.patch_mode:
        arrays = load_scaled_arrays(source, lesions, ids, config.scale, config.cache_dir, config.workers)
        arrays.check_patch_fits(config.patch)
    else:
        arrays = load_class_arrays(source, list(lesions), ids, config.size, config.cache_dir, config.workers)
    for channel, name in enumerate(lesions):
        if config.protocol == "official":
            for split, split_ids in zip(("train", "test"), folds[0]):
                check_class_present(arrays, source, name, split, split_ids, channel)
        else:
            check_class_present(arrays, source, name, "all", ids, channel)
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


def run_directory(out_dir: "str | Path", variant: str, model: str, fold: int) -> Path:
    """The folder of one run under an experiment's ``out_dir``: ``runs/<variant>/<model>/fold<k>``, ``model`` a
    lesion or a joint model's ``EX+HE``, ``fold`` counted from 0 (``k`` from 1)."""
    return Path(out_dir) / "runs" / variant / model / f"fold{fold + 1}"


def run_specs(config: ExperimentConfig, folds: list[list[str]], lesion: "str | tuple[str, ...]") -> list[RunSpec]:
    """The runs of one model's lesions (one lesion, or a joint model's), variant by variant, fold by fold."""
    lesions = (lesion,) if isinstance(lesion, str) else tuple(lesion)
    specs = []
    for variant in config.variants:
        for fold, (train_ids, test_ids) in enumerate(folds):
            if config.only_folds is not None and fold not in config.only_folds:
                continue
            fit_ids, val_ids = split_validation(train_ids, config.val_fraction, run_seed(config.seed, fold, 99))
            specs.append(RunSpec(variant, "+".join(lesions), fold, fit_ids, val_ids, list(test_ids), lesions))
    return specs


def finish_run(
    trainer: Trainer,
    arrays: "LesionArrays | ScaledArrays",
    config: ExperimentConfig,
    run_dir: Path,
    device: torch.device,
) -> list[dict[str, Any]]:
    """Test the best checkpoint on the fold's test images; write overlays (one per lesion of a joint model), the
    attention figure and ``metrics.json``; returns one result per lesion of the model."""
    spec = trainer.spec
    best_epoch = trainer.load_best()
    test_indices = arrays.indices_of(spec.test_ids)
    per_lesion = trainer.evaluate(test_indices, test=True)
    wanted = len(test_indices) if config.overlays < 0 else min(config.overlays, len(test_indices))
    logging = trainer.monitor is not None and trainer.monitor.writer is not None
    pictures = write_test_pictures(trainer, arrays, test_indices[:wanted], run_dir, logging) if wanted else []
    if trainer.monitor is not None:
        trainer.monitor.add_pictures("test overlays", pictures[:4], best_epoch)
    joint = len(spec.lesions) > 1
    common = {
        "variant": spec.variant,
        "fold": spec.fold,
        "parameters": sum(p.numel() for p in trainer.model.parameters()),
        "best_epoch": best_epoch,
        "epochs_trained": len(trainer.history),
        "train_seconds": round(trainer.trained_seconds, 1),
        "train_images": len(spec.train_ids),
        "val_images": len(spec.val_ids),
        "test_images": len(spec.test_ids),
        "test_ids": spec.test_ids,
        "fingerprint": config.fingerprint(),
        "spec": vars(spec),
    }
    if config.patch_mode:
        common["evaluation"] = f"sliding window at scale {config.scale:g}, metrics at the original resolution"
    results = [
        {**common, "lesion": lesion, "model": spec.lesion if joint else lesion, "joint": joint, "test": metrics}
        for lesion, metrics in zip(spec.lesions, per_lesion)
    ]
    record = results[0] if not joint else {**common, "model": spec.lesion, "joint": True, "results": results}
    write_json(run_dir / "metrics.json", record)
    return results


def recorded_results(record: dict[str, Any]) -> list[dict[str, Any]]:
    """The per-lesion results of a ``metrics.json`` (a joint model's holds one per lesion)."""
    return list(record["results"]) if record.get("joint") and "results" in record else [record]


def write_test_pictures(
    trainer: Trainer,
    arrays: "LesionArrays | ScaledArrays",
    indices: torch.Tensor,
    run_dir: Path,
    keep_pictures: bool = False,
) -> list:
    """Fig. 5 overlays of ``indices`` (``overlays/<id>.png``, or ``<id>_<lesion>.png`` per lesion of a joint
    model; on the training grid) and the Fig. 4 attention figure of the first; returns the overlay pictures with
    ``keep_pictures`` (else an empty list)."""
    config, spec = trainer.config, trainer.spec
    joint = len(spec.lesions) > 1
    pictures = []

    def save(image_ids: list[str], images: torch.Tensor, probabilities: torch.Tensor, masks: torch.Tensor) -> None:
        for k, lesion in enumerate(spec.lesions):
            names = [f"{i}_{lesion}" if joint else i for i in image_ids]
            paths = save_overlays(run_dir / "overlays", names, images, probabilities[:, k] >= 0.5, masks[:, k])
            if keep_pictures:
                for path in paths:
                    with Image.open(path) as picture:
                        pictures.append(picture.convert("RGB"))

    first_image = first_truth = None
    if isinstance(arrays, ScaledArrays):
        for index, probability, truth in window_probabilities(
            trainer.model,
            arrays,
            indices,
            config.patch,
            trainer.lesion_channels,
            config.activation,
            batch_size=config.batch_size,
            amp=config.amp,
        ):
            image = arrays.images[index]
            save([arrays.ids[index]], image[None], probability[None].cpu(), truth[None].cpu())
            if first_image is None:
                first_image, first_truth = centre_patch(image, truth, config.patch)
        if first_image is not None:
            first_image = first_image.float().div(255)
    else:
        for chunk, images, probabilities, masks in predict_batches(
            trainer.model,
            arrays,
            indices,
            config.batch_size,
            trainer.device,
            config.amp,
            trainer.lesion_channels,
            config.activation,
        ):
            save([arrays.ids[i] for i in chunk.tolist()], images, probabilities, masks)
            if first_image is None:
                first_image, first_truth = images[0], masks[0, :1]
    if first_image is not None:
        figure = attention_panels(trainer.model, first_image.to(trainer.device), first_truth[:1].to(trainer.device))
        if figure is not None:
            save_png(run_dir / "attention.png", figure)
    return pictures


def centre_patch(image: torch.Tensor, truth: torch.Tensor, patch: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``patch`` at the centre of a scaled crop and its masks (the attention figure's input)."""
    height, width = image.shape[1:]
    top, left = max(0, (height - patch[0]) // 2), max(0, (width - patch[1]) // 2)
    window = (slice(None), slice(top, top + patch[0]), slice(left, left + patch[1]))
    return image[window], truth[window]


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
    if config.tensorboard:
        check_tensorboard()
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
    if config.patch_mode:
        check_patch_size(config, source)


def check_tensorboard() -> None:
    """Raise ``ValueError`` naming the extra to install if TensorBoard's writer cannot be imported (a setting the
    environment cannot honour, refused before anything is written)."""
    try:
        import torch.utils.tensorboard  # noqa: F401
    except ImportError as error:
        raise ValueError(
            f'tensorboard logging needs the tensorboard package: pip install "group-attention[tensorboard]" ({error})'
        ) from error


def check_patch_size(config: ExperimentConfig, source: SegmentationSource) -> None:
    """Raise ``ValueError`` if ``config.patch`` is larger than an image at ``config.scale``: from the files' headers,
    or for a synthetic source not written yet from the size it will generate."""
    if source.synthetic and config.synthetic_data:
        height, width = config.synthetic["size"]
        scaled = (max(1, round(height * config.scale)), max(1, round(width * config.scale)))
        if config.patch[0] > scaled[0] or config.patch[1] > scaled[1]:
            raise ValueError(
                f"patch {config.patch[0]} {config.patch[1]} is larger than the synthetic images at scale "
                f"{config.scale:g} ({scaled[0]} x {scaled[1]}); give a smaller --patch or a larger --scale"
            )
        return
    ids = source.ids("all")
    check_patch_fits_headers(source, config.lesions, ids, config.scale, tuple(config.patch))


def check_resumable(out_dir: "str | Path", config: ExperimentConfig) -> None:
    """Raise ``ValueError`` if ``out_dir`` holds runs made with settings other than ``config``'s (writes nothing).

    A folder with a ``config.json`` but no finished run or checkpoint (a command stopped before training) binds
    nothing: its settings are replaced when the next command starts training.
    """
    path = Path(out_dir) / "config.json"
    if path.exists() and has_work(out_dir):
        previous = read_json(path)
        if previous.get("fingerprint") != config.fingerprint():
            differences = config.differences_from(previous.get("config") or {})
            shown = differences[:4] + ([f"{len(differences) - 4} more"] if len(differences) > 4 else [])
            named = f" ({'; '.join(shown)})" if shown else ""
            raise ValueError(
                f"{out_dir} holds runs made with other settings{named}, {path}; give those settings, use another "
                "--out, or delete the folder to start again. Only device, workers, overlays, cache_dir, "
                "checkpoint_seconds, tensorboard, variants, lesions and the folds to run may change between resumed "
                "runs."
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
        runs_per_model = len(config.variants) * (
            len(config.only_folds) if config.only_folds is not None else config.num_folds
        )
        clock = ProgressClock(config.epochs, runs_per_model * len(config.model_lesions))
        settings_recorded = False
        for lesions in config.model_lesions:
            arrays = load_arrays(config, source, lesions, folds).to(device)
            for spec in run_specs(config, folds, lesions):
                run_dir = run_directory(out_dir, spec.variant, spec.lesion, spec.fold)
                done = run_dir / "metrics.json"
                clock.start_run(spec)
                context.barrier()
                if done.exists() and read_json(done).get("fingerprint") == config.fingerprint():
                    recorded = read_json(done)
                    spec.check_same_images(recorded.get("spec", {"test_ids": recorded.get("test_ids")}), str(done))
                    if context.is_main and progress:
                        print(f"[{spec.name}] finished earlier: {done}", flush=True)
                    finished.extend(recorded_results(recorded))
                    clock.skip_run()
                    continue
                if context.is_main and not settings_recorded:
                    record_settings(out_dir, config)  # only now: a refused or failed command binds no settings
                    settings_recorded = True
                trainer = Trainer(spec, arrays, config, run_dir, device, context, progress)
                trainer.status = clock.status
                if context.is_main:
                    trainer.monitor = TrainingMonitor(run_dir, config.tensorboard)
                if trainer.resume() and context.is_main and progress:
                    print(f"[{spec.name}] resuming after epoch {trainer.start_epoch}", flush=True)
                clock.resume_at(trainer.start_epoch)
                if context.is_main and progress:
                    print(clock.run_line(), flush=True)
                trainer.fit(chain_callbacks(clock.epoch_done, on_epoch_end))
                if context.is_main:
                    finished.extend(finish_run(trainer, arrays, config, run_dir, device))
                    remove_checkpoints(trainer, config.keep_checkpoints)
                    trainer.monitor.close()
        if not context.is_main:
            return None
        expected = len(config.lesions) * runs_per_model  # one result per lesion, joint or not
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
