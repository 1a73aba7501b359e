"""Training one run: checkpoint cadence, and each process's share of an epoch under torchrun."""

from __future__ import annotations

from types import SimpleNamespace

import torch
from engine_runs import tiny_config

import group_attention.fundus.engine.train as train_module
from group_attention.fundus.engine import run_experiment
from group_attention.fundus.engine.distributed import Context


def test_checkpoints_are_written_at_most_every_checkpoint_seconds_and_at_the_end(tmp_path):
    config = tiny_config(epochs=3, checkpoint_seconds=1e9, keep_checkpoints="all", cache_dir=str(tmp_path / "cache"))
    run_dir = tmp_path / "out" / "runs" / "ganet" / "EX" / "fold1"
    seen = []

    def record(row):
        seen.append((row["epoch"], (run_dir / "checkpoint_last.pt").exists()))

    run_experiment(config, tmp_path / "out", on_epoch_end=record, progress=False)
    assert seen == [(1, False), (2, False), (3, True)]
    state = torch.load(run_dir / "checkpoint_last.pt", weights_only=False)
    best = torch.load(run_dir / "checkpoint_best.pt", weights_only=False)
    assert state["epoch"] == 3 and state["best_epoch"] == best["epoch"] and len(state["history"]) == 3


def test_processes_under_torchrun_draw_disjoint_equal_shares_of_each_epoch():
    """The fast counterpart of the torchrun test: every process's share, without starting processes."""
    spec = train_module.RunSpec("baseline", "EX", 0, [f"img{k}" for k in range(7)], [], [])
    shares = []
    for rank in range(2):
        process = SimpleNamespace(
            config=tiny_config(), spec=spec, train_indices=torch.arange(7), context=Context(rank, 2)
        )  # what epoch_order reads of a Trainer
        shares.append(train_module.Trainer.epoch_order(process, epoch=3).tolist())
    assert len(shares[0]) == len(shares[1]) == 4  # 7 images padded to 8, as DistributedSampler does
    assert sorted(set(shares[0]) | set(shares[1])) == list(range(7))
    assert len(set(shares[0]) & set(shares[1])) == 1  # only the one image repeated to even the shares
