"""Training one (variant, lesion, fold) run: generalized Dice loss, Adam, batched augmentation on the device,
an atomic checkpoint after every epoch and exact resumption from it."""

from __future__ import annotations

import csv
import io
import math
import os
import pickle
import sys
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from ... import _compat
from ...inference.checkpoint import UnsafeCheckpointError
from ...models import build_variant
from ..checkpoint import experiment_metadata
from ..data import random_flip_rotate
from .arrays import LesionArrays
from .config import LOSSES, ExperimentConfig
from .curves import TrainingMonitor
from .distributed import Context
from .evaluate import autocast, evaluate_lesions
from .io import load_checkpoint, save_checkpoint, write_text
from .loss import LesionLoss
from .patches import PatchSampler, ScaledArrays
from .windows import calibrate_batch_norm, evaluate_windows

LOG_FIELDS = ("epoch", "train_loss", "train_dice", "val_dice", "val_aupr", "seconds")
EpochCallback = Callable[[dict], None]


@dataclass
class RunSpec:
    """One cell of the experiment: a Table 1 variant trained on one lesion (or, joint, on several: ``lesion`` is
    then their codes joined by ``+``) and evaluated on one fold."""

    variant: str
    lesion: str
    fold: int
    train_ids: list[str]
    val_ids: list[str]
    test_ids: list[str]
    lesions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self.lesions = tuple(self.lesions) or (self.lesion,)

    @property
    def name(self) -> str:
        return f"{self.variant} {self.lesion} fold {self.fold + 1}"

    def check_same_images(self, recorded: "dict | None", source: str) -> None:
        """Raise ``ValueError`` if ``recorded`` (a saved spec) used other images: the data changed under a resumed
        experiment, whose folds would then overlap or mix training and test images."""
        if recorded is None:
            return
        for field in ("train_ids", "val_ids", "test_ids"):
            if field in recorded and recorded[field] != getattr(self, field):
                raise ValueError(
                    f"[{self.name}] {source} was made with other {field.replace('_', ' ')} "
                    f"({recorded.get(field)}, now {getattr(self, field)}): the images under the data root "
                    "changed since that run; use another --out, or delete the folder to start again"
                )


def run_seed(seed: int, *parts: int) -> int:
    """A seed for one purpose (fold, epoch, step...) derived from the experiment's seed."""
    value = seed
    for part in parts:
        value = (value * 1_000_003 + part + 1) % (2**63 - 1)
    return value


def write_log(path: Path, history: list[dict]) -> None:
    """The per-epoch CSV, rewritten whole (atomically) from the history kept in the checkpoint."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=LOG_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    write_text(path, buffer.getvalue())


def _cpu_copy(state: dict) -> dict:
    return {key: value.detach().to("cpu", copy=True) for key, value in state.items()}


def make_loss(config: ExperimentConfig) -> nn.Module:
    """The training loss the config names, per lesion as in the paper (:class:`~.loss.LesionLoss`): ``(B, K, H, W)``
    logits, ``(B, L, H, W)`` (or ``(B, H, W)``) 0/1 masks."""
    return LesionLoss(config.activation, weight_type=LOSSES[config.loss], dice_over=config.dice_over)


def lesion_channels(config: ExperimentConfig) -> list[int]:
    """The logit channel of each lesion of a model of ``config``: channel 1 of the paper's softmax, the one sigmoid
    logit, or a joint model's one per lesion."""
    if config.joint:
        return list(range(len(config.lesions)))
    return [1] if config.activation == "softmax" else [0]


def batch_dice(logits: torch.Tensor, masks: torch.Tensor, activation: "str | None" = None) -> torch.Tensor:
    """Dice of the predicted lesions on one training batch, for the progress bar (a 0-dim tensor, no sync): the
    argmax of a softmax's logits, a positive logit of each sigmoid (``activation``; default by the channels)."""
    softmax = activation == "softmax" or (activation is None and logits.shape[1] > 1)
    predicted = logits.argmax(1, keepdim=True).bool() if softmax else logits > 0
    truth = masks.bool()
    overlap = (predicted & truth).sum()
    total = predicted.sum() + truth.sum()
    return torch.where(total > 0, 2 * overlap / total.clamp_min(1), torch.ones((), device=logits.device))


# What torch.load raises on a truncated or overwritten file: zip reader errors, a cut pickle stream, bad bytes.
CORRUPT_CHECKPOINT_ERRORS = (
    RuntimeError,
    EOFError,
    pickle.UnpicklingError,
    zipfile.BadZipFile,
    ValueError,
    AttributeError,
    IndexError,
    KeyError,
    UnicodeDecodeError,
)


def warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)


def set_aside_path(path: Path) -> Path:
    """``<name>.corrupt`` next to ``path`` (``.corrupt1``, ``.corrupt2``... if taken)."""
    candidate, number = path.with_name(path.name + ".corrupt"), 0
    while candidate.exists():
        number += 1
        candidate = path.with_name(f"{path.name}.corrupt{number}")
    return candidate


def read_checkpoint_or_set_aside(path: Path) -> "dict | None":
    """The checkpoint at ``path``, or None (with a warning naming it) if it cannot be read, in which case it is
    moved aside to ``<name>.corrupt`` so that no later command trips over it again."""
    try:
        # Read on the CPU: a GPU out of memory must not pass for a corrupt file (load_state_dict copies to the device).
        state = load_checkpoint(path, map_location="cpu")
        if not isinstance(state, dict) or "model" not in state:
            raise ValueError("not a checkpoint of this experiment")
        return state
    except FileNotFoundError:
        return None
    except UnsafeCheckpointError:
        raise  # a crafted file, not a damaged one: refused, neither unpickled nor silently replaced
    except CORRUPT_CHECKPOINT_ERRORS as error:
        aside = set_aside_path(path)
        os.replace(path, aside)
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        warn(f"checkpoint {str(path)!r} cannot be read ({reason}); moved it aside to {str(aside)!r}")
        return None


class Trainer:
    """Trains ``spec`` into ``run_dir``: ``checkpoint_last.pt`` (weights, optimizer, history), ``checkpoint_best.pt``
    (best validation Dice; the last epoch when there is no validation image) and ``log.csv`` (every epoch).

    Checkpoints are written at most every ``config.checkpoint_seconds`` (a 7M-parameter model with Adam is 84 MB,
    too much to write after every 0.3 s epoch on a GPU) and after the last epoch; a run killed in between redoes at
    most that much training, from exactly the state it had (data order and augmentation follow the epoch number).
    """

    def __init__(
        self,
        spec: RunSpec,
        arrays: "LesionArrays | ScaledArrays",
        config: ExperimentConfig,
        run_dir: Path,
        device: torch.device,
        context: Context = Context(),  # noqa: B008 - an immutable default: one process, no group
        progress: bool = True,
    ) -> None:
        self.spec, self.arrays, self.config, self.run_dir = spec, arrays, config, run_dir
        self.device, self.context, self.progress = device, context, progress
        torch.manual_seed(run_seed(config.seed, spec.fold))
        in_channels = arrays.channels  # what the data source gives (3 for RGB photographs)
        self.model = build_variant(spec.variant, in_channels=in_channels, num_classes=config.num_classes).to(device)
        self.parallel_model: nn.Module = self.model
        if context.enabled:
            self.parallel_model = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[device.index] if device.type == "cuda" else None
            )
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.lr)
        self.scaler = _compat.grad_scaler(device.type, enabled=config.amp and device.type == "cuda")
        self.loss = make_loss(config)
        self.lesion_channels = lesion_channels(config)
        self.train_indices = arrays.indices_of(spec.train_ids)
        self.val_indices = arrays.indices_of(spec.val_ids)
        self.sampler = (
            PatchSampler(arrays, self.train_indices, config.patch, config.lesion_share) if config.patch_mode else None
        )
        # The windows batch norm's statistics are estimated from before a validation or a test (scale mode).
        windows_generator = torch.Generator().manual_seed(run_seed(config.seed, spec.fold, 13))
        self.bn_draws = self.sampler.windows(config.bn_windows, windows_generator) if config.bn_windows else []
        self.start_epoch, self.best_dice, self.history = 0, -math.inf, []
        self.trained_seconds = 0.0  # training time over every resume, for config.time_budget
        self.monitor: "TrainingMonitor | None" = None
        self.best_state: "dict | None" = None  # the best weights since the last save, on the CPU
        self.saved_best_epoch: "int | None" = None
        self.saved_epoch = 0  # the epoch checkpoint_last.pt holds
        self.status: "Callable[[], str] | None" = None  # where the whole experiment stands, for the epoch line

    @property
    def last_path(self) -> Path:
        return self.run_dir / "checkpoint_last.pt"

    @property
    def best_path(self) -> Path:
        return self.run_dir / "checkpoint_best.pt"

    def resume(self) -> bool:
        """Continue from ``checkpoint_last.pt`` if a previous run left one; True if it did."""
        if not self.last_path.exists():
            return False
        state = read_checkpoint_or_set_aside(self.last_path)
        if state is not None and state.get("best_epoch") is not None:
            # The best weights are part of the state: without them the run cannot finish as it would have.
            if read_checkpoint_or_set_aside(self.best_path) is None:
                aside = set_aside_path(self.last_path)
                self.last_path.replace(aside)
                warn(
                    f"[{self.spec.name}] {str(self.best_path)!r} is missing or unreadable; the last checkpoint "
                    f"cannot finish this run without it and was moved aside to {str(aside)!r}"
                )
                state = None
        if state is None:
            self.best_path.unlink(missing_ok=True)  # belongs to the discarded run; the restart writes its own
            warn(f"[{self.spec.name}] restarting this run from epoch 0")
            return False
        self.spec.check_same_images(state.get("spec"), str(self.last_path))
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.start_epoch, self.best_dice, self.history = state["epoch"], state["best_dice"], state["history"]
        self.saved_best_epoch = state["best_epoch"]
        self.trained_seconds = float(state.get("trained_seconds", 0.0))
        return True

    def epoch_order(self, epoch: int) -> torch.Tensor:
        """This process's shuffled share of the training images for ``epoch`` (same for every resume)."""
        generator = torch.Generator().manual_seed(run_seed(self.config.seed, self.spec.fold, epoch))
        order = self.train_indices[torch.randperm(len(self.train_indices), generator=generator)]
        world = self.context.world_size
        if world > 1:  # every process must run the same number of steps: wrap around, as DistributedSampler does
            order = torch.cat([order, order[: (-len(order)) % world]])
        return order[self.context.rank :: world]

    def epoch_batches(self, epoch: int) -> list:
        """This process's batches of ``epoch``: index tensors of whole images, or lists of patch draws (the
        training images times ``patches_per_image``, shared out over the processes). Same for every resume."""
        size = self.config.batch_size
        if self.sampler is None:
            order = self.epoch_order(epoch)
            return [order[start : start + size] for start in range(0, len(order), size)]
        world = self.context.world_size
        count = -(-len(self.train_indices) * self.config.patches_per_image // world)
        generator = torch.Generator().manual_seed(
            run_seed(self.config.seed, self.spec.fold, epoch, 11, self.context.rank)
        )
        draws = self.sampler.draw(count, generator)
        return [draws[start : start + size] for start in range(0, len(draws), size)]

    def load_batch(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        if self.sampler is None:
            return self.arrays.batch(batch)
        return self.sampler.batch(batch)

    def train_epoch(self, epoch: int) -> tuple[float, float]:
        self.parallel_model.train()
        augment_generator = torch.Generator().manual_seed(
            run_seed(self.config.seed, self.spec.fold, epoch, 7, self.context.rank)
        )
        batches = self.epoch_batches(epoch)
        bar = tqdm(
            batches,
            desc=f"{self.spec.name} epoch {epoch + 1}/{self.config.epochs}",
            leave=False,
            disable=not (self.progress and self.context.is_main) or None,
            unit="batch",
        )
        loss_sum, dice_sum, steps = 0.0, 0.0, 0
        budget = 60 * self.config.time_budget
        started = time.perf_counter()
        for batch in bar:
            images, masks = self.load_batch(batch)
            images, masks = images.to(self.device, non_blocking=True), masks.to(self.device, non_blocking=True)
            images, masks = random_flip_rotate(images, masks, degrees=self.config.degrees, generator=augment_generator)
            with autocast(self.device, self.config.amp):
                logits = self.parallel_model(images)
                loss = self.loss(logits, masks)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            steps += 1
            loss_value, dice_value = torch.stack(
                [loss.detach().float(), batch_dice(logits.detach(), masks, self.config.activation)]
            ).tolist()
            loss_sum += loss_value  # one device sync per step for both numbers
            dice_sum += dice_value
            bar.set_postfix(loss=f"{loss_sum / steps:.4f}", dice=f"{dice_sum / steps:.3f}")
            # A time budget ends training mid-epoch: one epoch of whole images can outlast a budget on a CPU.
            if budget and self._budget_spent(budget, self.trained_seconds + time.perf_counter() - started):
                break
        return loss_sum / max(steps, 1), dice_sum / max(steps, 1)

    def fit(self, on_epoch_end: "EpochCallback | None" = None) -> None:
        """Train the remaining epochs; each ends with a validation pass (process 0). Checkpoints are written
        atomically at least every ``config.checkpoint_seconds`` and after the last epoch. ``on_epoch_end`` gets the
        log row with ``run`` (the run's name) and ``checkpoint_epoch`` (the epoch a rerun would resume after)."""
        last_saved = time.monotonic()
        self.saved_epoch = self.start_epoch
        budget = 60 * self.config.time_budget
        for epoch in range(self.start_epoch, self.config.epochs):
            if budget and self.trained_seconds >= budget:
                break  # a resumed run whose budget was spent: test it as it is
            started = time.perf_counter()
            train_loss, train_dice = self.train_epoch(epoch)
            if not math.isfinite(train_loss):  # the weights are lost: stop before they reach a checkpoint
                kept = f"its checkpoint of epoch {self.saved_epoch} is kept" if self.saved_epoch else "no checkpoint"
                raise ValueError(
                    f"[{self.spec.name}] the training loss became {train_loss} in epoch {epoch + 1}: the learning "
                    f"rate lr={self.config.lr:g} is too high for this run; try a lower --lr (into another --out, the "
                    f"settings change); {kept}"
                )
            self.trained_seconds += time.perf_counter() - started
            out_of_time = bool(budget) and self._budget_spent(budget, self.trained_seconds)
            final = epoch + 1 == self.config.epochs or out_of_time
            row = {
                "epoch": epoch + 1,
                "train_loss": round(train_loss, 6),
                "train_dice": round(train_dice, 6),
                "val_dice": "",
                "val_aupr": "",
                "seconds": 0.0,
            }
            if self.context.is_main:
                if len(self.val_indices) or final:  # these weights are evaluated, or kept as the best
                    self.calibrate_batch_norm()
                if self.validate(row):
                    self.best_state = {
                        "model": _cpu_copy(self.model.state_dict()),
                        "epoch": epoch + 1,
                        "val_dice": self.best_dice,
                    }
                row["seconds"] = round(time.perf_counter() - started, 3)
                self.history.append(row)
                if final or time.monotonic() - last_saved >= self.config.checkpoint_seconds:
                    self.save(epoch + 1)
                    last_saved = time.monotonic()
                    self.saved_epoch = epoch + 1
                write_log(self.run_dir / "log.csv", self.history)
                if self.monitor is not None:
                    self.monitor.epoch_done(self.history, self.saved_best_epoch_or_current())
            if on_epoch_end is not None:
                on_epoch_end(dict(row, run=self.spec.name, checkpoint_epoch=self.saved_epoch))
            if self.context.is_main and self.progress:
                val_dice = "-" if row["val_dice"] == "" else f"{row['val_dice']:.4f}"
                status = f"; {self.status()}" if self.status is not None else ""
                print(
                    f"[{self.spec.name}] epoch {epoch + 1}/{self.config.epochs} loss {train_loss:.4f} "
                    f"train dice {train_dice:.3f} val dice {val_dice} ({row['seconds']:.1f} s{status})",
                    flush=True,
                )
            if out_of_time:
                if self.context.is_main and self.progress:
                    print(f"[{self.spec.name}] time budget of {self.config.time_budget:g} min spent", flush=True)
                break

    def calibrate_batch_norm(self) -> None:
        """Batch norm's statistics from :attr:`bn_draws` (:func:`~.windows.calibrate_batch_norm`), before the
        weights are evaluated or kept as the best; nothing to do without them (whole images, ``bn_windows=0``)."""
        if self.bn_draws:
            calibrate_batch_norm(
                self.model,
                self.sampler,
                self.bn_draws,
                batch_size=self.config.batch_size,
                device=self.device,
                amp=self.config.amp,
            )

    def _budget_spent(self, budget: float, seconds: float) -> bool:
        """Whether the training time is over ``budget`` seconds; under ``torchrun`` process 0's clock decides for
        every process (they must stop after the same step)."""
        spent = torch.tensor([float(seconds >= budget)], device=self.device)
        if self.context.enabled:
            torch.distributed.broadcast(spent, src=0)
        return bool(spent.item())

    def saved_best_epoch_or_current(self) -> "int | None":
        """The epoch of the best weights so far (saved or not)."""
        return self.best_state["epoch"] if self.best_state is not None else self.saved_best_epoch

    def save(self, epochs_done: int) -> None:
        """Write the best checkpoint (if it changed) and then the last one, each atomically: a crash between the
        two leaves a last checkpoint whose ``best_dice`` still describes the best checkpoint on disk."""
        inference = experiment_metadata(  # for load_model
            self.spec.variant, list(self.spec.lesions), self.config, in_channels=self.arrays.channels
        )
        if self.best_state is not None and self.best_state["epoch"] != self.saved_best_epoch:
            save_checkpoint(self.best_path, {**self.best_state, "inference": inference})
            self.saved_best_epoch = self.best_state["epoch"]
        save_checkpoint(
            self.last_path,
            {
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict(),
                "epoch": epochs_done,
                "best_dice": self.best_dice,
                "best_epoch": self.saved_best_epoch,
                "history": self.history,
                "trained_seconds": self.trained_seconds,
                "spec": vars(self.spec),
                "inference": inference,
            },
        )

    def validate(self, row: dict) -> bool:
        """Fill the validation columns of ``row``; True if this epoch is the best so far."""
        if len(self.val_indices) == 0:
            return True  # no validation image: the best checkpoint is the last one
        per_lesion = self.evaluate(self.val_indices)
        # A joint model is judged by its lesions' mean.
        dice = sum(m["dice"] for m in per_lesion) / len(per_lesion)
        row["val_dice"] = round(dice, 6)
        row["val_aupr"] = round(sum(m["aupr"] for m in per_lesion) / len(per_lesion), 6)
        if dice > self.best_dice:
            self.best_dice = dice
            return True
        return False

    def evaluate(self, indices: torch.Tensor, test: bool = False) -> list[dict]:
        """Metrics per lesion of the model on ``indices``: the whole images at the training size, or (trained on
        patches) the sliding window over each whole crop, on the scaled grid to validate and at the original
        resolution to test."""
        config = self.config
        if self.sampler is not None:
            return evaluate_windows(
                self.model,
                self.arrays,
                indices,
                config.patch,
                self.lesion_channels,
                config.activation,
                original=test,
                batch_size=config.batch_size,
                amp=config.amp,
            )
        return evaluate_lesions(
            self.model,
            self.arrays,
            indices,
            config.batch_size,
            self.device,
            config.amp,
            exact_aupr=test,
            lesion_channels=self.lesion_channels,
            activation=config.activation,
        )

    def load_best(self) -> int:
        """Load the best checkpoint's weights; returns its epoch."""
        state = load_checkpoint(self.best_path, map_location=self.device)
        self.model.load_state_dict(state["model"])
        return int(state["epoch"])
