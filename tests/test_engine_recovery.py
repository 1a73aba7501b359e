"""Faults the engine recovers from: a corrupt checkpoint is named, moved aside and the run redone (never a crash,
never a silent mix), and finished runs keep only the checkpoints asked for."""

from __future__ import annotations

import engine_runs
import pytest
import torch

from group_attention.fundus.engine import run_experiment
from group_attention.models import build_variant


def tiny_config(tmp_path, **overrides):
    """engine_runs' tiny run, smaller still: U-Net at 16x16 on 4 + 2 images, 2 epochs, no overlays."""
    settings = dict(
        variants=("unet",),
        epochs=2,
        size=(16, 16),
        synthetic={"n_train": 4, "n_test": 2, "size": (64, 96)},
        overlays=0,
        cache_dir=str(tmp_path / "cache"),
    )
    return engine_runs.tiny_config(**{**settings, **overrides})


RUN = ("runs", "unet", "EX", "fold1")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The tiny experiment run straight through: the reference every recovered run must equal."""
    folder = tmp_path_factory.mktemp("straight")
    return run_experiment(tiny_config(folder), folder / "out", progress=False)


@pytest.mark.parametrize("damaged", ["checkpoint_last.pt", "checkpoint_best.pt"])
def test_a_truncated_checkpoint_is_set_aside_and_the_rerun_matches_an_uninterrupted_run(
    tmp_path, capsys, damaged, uninterrupted
):
    config = tiny_config(tmp_path)
    out = tmp_path / "broken"
    with pytest.raises(engine_runs.Interrupt):
        run_experiment(config, out, on_epoch_end=engine_runs.stop_after_epoch(1), progress=False)
    path = out.joinpath(*RUN, damaged)
    content = path.read_bytes()
    path.write_bytes(content[: len(content) // 2])  # a disk fault, or a copy cut short
    capsys.readouterr()

    epochs_trained = []
    resumed = run_experiment(config, out, on_epoch_end=lambda row: epochs_trained.append(row["epoch"]), progress=False)
    warning = capsys.readouterr().err
    assert str(path) in warning and "moved it aside" in warning and "restarting this run" in warning
    assert out.joinpath(*RUN, damaged + ".corrupt").read_bytes() == content[: len(content) // 2]
    assert epochs_trained == [1, 2]  # redone from the start, not mixed with the unreadable state
    assert resumed["runs"][0]["test"] == uninterrupted["runs"][0]["test"]
    assert resumed["runs"][0]["best_epoch"] == uninterrupted["runs"][0]["best_epoch"]


def test_a_finished_run_keeps_only_its_best_weights_by_default(tmp_path):
    run_experiment(tiny_config(tmp_path, epochs=1), tmp_path / "out", progress=False)
    run_dir = tmp_path.joinpath("out", *RUN)
    assert sorted(p.name for p in run_dir.glob("*.pt")) == ["checkpoint_best.pt"]
    best = torch.load(run_dir / "checkpoint_best.pt", weights_only=False)
    assert "optimizer" not in best
    assert set(best["model"]) == set(build_variant("unet", in_channels=3, num_classes=2).state_dict())


@pytest.mark.parametrize("keep, left", [("all", ["checkpoint_best.pt", "checkpoint_last.pt"]), ("none", [])])
def test_keep_checkpoints_chooses_what_a_finished_run_keeps(tmp_path, keep, left):
    run_experiment(tiny_config(tmp_path, epochs=1, keep_checkpoints=keep), tmp_path / "out", progress=False)
    run_dir = tmp_path.joinpath("out", *RUN)
    assert sorted(p.name for p in run_dir.glob("*.pt")) == left
    assert (run_dir / "metrics.json").is_file()
    if keep == "all":
        assert "optimizer" in torch.load(run_dir / "checkpoint_last.pt", weights_only=False)


def test_a_finished_run_without_checkpoints_is_still_skipped_on_rerun(tmp_path):
    config = tiny_config(tmp_path, epochs=1, keep_checkpoints="none")
    first = run_experiment(config, tmp_path / "out", progress=False)
    trained = []
    again = run_experiment(config, tmp_path / "out", on_epoch_end=trained.append, progress=False)
    assert trained == [] and again["runs"] == first["runs"]
