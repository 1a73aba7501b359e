"""Helpers of the engine and example tests: tiny configurations and a data source that is not IDRiD."""

from __future__ import annotations

import csv
import socket
from pathlib import Path

import torch
from torch.utils.data import Dataset

from group_attention.fundus.data import SegmentationSource
from group_attention.fundus.engine import ExperimentConfig, quick_synthetic_config

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "idrid_ganet.py"


def tiny_config(**overrides) -> ExperimentConfig:
    settings = dict(
        lesions=("EX",),
        variants=("ganet",),
        folds=2,
        only_folds=(0,),
        epochs=4,
        batch_size=2,
        checkpoint_seconds=0,
        size=(32, 48),
        synthetic={"n_train": 6, "n_test": 2, "size": (64, 96)},
        overlays=1,
    )
    settings.update(overrides)
    return quick_synthetic_config(**settings)


class Interrupt(Exception):
    """Stands for a kill in the middle of a run (raised from an epoch callback)."""


def stop_after_epoch(epoch: int):
    """An epoch callback that interrupts the run once ``epoch`` is finished."""

    def stop(row):
        if row["epoch"] == epoch:
            raise Interrupt

    return stop


def read_log(path: Path) -> list[dict]:
    with open(path) as stream:
        return list(csv.DictReader(stream))


class NumberedSquares(SegmentationSource):
    """A source that is not IDRiD: image k is filled with grey level k (so a batch tells which images it holds) and
    its one class, "square", is a centred square. ``channels`` image channels (3, or 1 for a greyscale source)."""

    classes = ("square",)

    def __init__(self, count: int = 8, test: int = 2, channels: int = 3) -> None:
        self.names = [f"img{k}" for k in range(1, count + 1)]
        self.test, self.channels = test, channels

    def ids(self, split: str = "all") -> list[str]:
        return {"all": self.names, "train": self.names[: -self.test], "test": self.names[-self.test :]}[split]

    def dataset(self, classes, ids, size, cache_dir="auto") -> Dataset:
        return _NumberedItems(list(ids), size, self.channels)


class _NumberedItems(Dataset):
    def __init__(self, ids, size, channels=3):
        self.ids, self.size, self.channels = ids, size, channels

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, index):
        height, width = self.size
        number = int(self.ids[index][3:])
        mask = torch.zeros(1, height, width)
        mask[:, height // 4 : 3 * height // 4, width // 4 : 3 * width // 4] = 1
        image = torch.full((self.channels, height, width), number / 255)
        return {"image": image, "mask": mask, "id": self.ids[index]}


def free_port() -> int:
    """A port the OS has just handed out as free (a fixed port collides with other runs)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
