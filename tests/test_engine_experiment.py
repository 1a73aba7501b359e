"""The experiment end to end on tiny data: resumption, refusal, protocols, held-out images, any data source,
DDP."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
import torch
from engine_runs import EXAMPLE, REPO, NumberedSquares, free_port, read_log, tiny_config

import group_attention.fundus.engine.train as train_module
from group_attention.fundus.data import make_synthetic_idrid
from group_attention.fundus.engine import ExperimentConfig, run_experiment
from group_attention.fundus.engine.experiment import run_specs


@pytest.mark.parametrize(
    "amp, device",
    [
        (False, "cpu"),
        pytest.param(True, "cpu", marks=pytest.mark.slow),  # the default run trains with --amp in test_example.py
        pytest.param(True, "cuda", marks=pytest.mark.cuda),
    ],
)
def test_interrupted_run_resumes_where_it_stopped_and_matches_an_uninterrupted_run(tmp_path, amp, device):
    """With AMP too: the checkpoint carries the loss scaler's state (fp16 on CUDA; on the CPU bf16 needs none)."""
    config = tiny_config(cache_dir=str(tmp_path / "cache"), amp=amp, device=device)
    reference = run_experiment(config, tmp_path / "straight", progress=False)

    class Interrupt(Exception):
        pass

    def stop_after_second_epoch(row):
        if row["epoch"] == 2:
            raise Interrupt

    out = tmp_path / "interrupted"
    with pytest.raises(Interrupt):
        run_experiment(config, out, on_epoch_end=stop_after_second_epoch, progress=False)
    run_dir = out / "runs" / "ganet" / "EX" / "fold1"
    assert [int(r["epoch"]) for r in read_log(run_dir / "log.csv")] == [1, 2]
    assert not (out / "results.json").exists()
    scaler_state = torch.load(run_dir / "checkpoint_last.pt", weights_only=False)["scaler"]
    assert ("scale" in scaler_state) == (amp and device == "cuda")

    epochs_trained = []
    resumed = run_experiment(config, out, on_epoch_end=lambda row: epochs_trained.append(row["epoch"]), progress=False)
    assert epochs_trained == [3, 4]  # nothing recomputed from scratch
    log = read_log(run_dir / "log.csv")
    assert [int(r["epoch"]) for r in log] == [1, 2, 3, 4]  # nothing lost
    straight_log = read_log(tmp_path / "straight" / "runs" / "ganet" / "EX" / "fold1" / "log.csv")
    assert [r["train_loss"] for r in log] == [r["train_loss"] for r in straight_log]
    assert resumed["runs"][0]["test"] == reference["runs"][0]["test"]

    epochs_trained.clear()
    again = run_experiment(config, out, on_epoch_end=lambda row: epochs_trained.append(row["epoch"]), progress=False)
    assert epochs_trained == [] and again["runs"] == resumed["runs"]  # finished runs are skipped


def test_an_output_folder_of_other_settings_is_refused(tmp_path):
    config = tiny_config(epochs=1, cache_dir=str(tmp_path / "cache"))
    run_experiment(config, tmp_path / "out", progress=False)
    with pytest.raises(ValueError, match="other settings"):
        run_experiment(
            tiny_config(epochs=1, lr=0.5, cache_dir=str(tmp_path / "cache")), tmp_path / "out", progress=False
        )


def test_a_resumed_experiment_refuses_runs_made_on_other_images(tmp_path):
    """The data root's images change between runs: a finished run and an interrupted run's checkpoint were made on
    another split (folds would overlap, training images would be tested), so resuming is refused, not silent."""

    data = tmp_path / "data"
    make_synthetic_idrid(data, n_train=6, n_test=2, size=(64, 96))
    config = tiny_config(epochs=2, data_root=str(data), cache_dir=str(tmp_path / "cache"))
    run_experiment(config, tmp_path / "finished", progress=False)

    class Interrupt(Exception):
        pass

    def stop(row):
        raise Interrupt

    with pytest.raises(Interrupt):
        run_experiment(config, tmp_path / "interrupted", on_epoch_end=stop, progress=False)
    make_synthetic_idrid(data, n_train=8, n_test=2, size=(64, 96), overwrite=True)
    with pytest.raises(ValueError, match=r"metrics.json was made with other .*images under the data root changed"):
        run_experiment(config, tmp_path / "finished", progress=False)
    with pytest.raises(ValueError, match=r"checkpoint_last.pt was made with other .*images under the data root"):
        run_experiment(config, tmp_path / "interrupted", progress=False)


def test_official_protocol_trains_on_the_training_set_and_tests_on_the_testing_set(tmp_path):
    config = tiny_config(
        protocol="official",
        only_folds=None,
        epochs=1,
        val_fraction=0.0,
        synthetic={"n_train": 4, "n_test": 3, "size": (64, 96)},
        cache_dir=str(tmp_path / "cache"),
    )
    results = run_experiment(config, tmp_path / "out", progress=False)
    (run,) = results["runs"]
    assert run["test_ids"] == ["IDRiD_05", "IDRiD_06", "IDRiD_07"]
    assert (run["train_images"], run["val_images"], run["test_images"]) == (4, 0, 3)
    assert "official training/testing split" in (tmp_path / "out" / "results.md").read_text()


def test_validation_images_are_held_out_of_each_training_fold():
    ids = [f"IDRiD_{i:02d}" for i in range(1, 13)]
    folds = [[ids[4:], ids[:4]], [ids[:4] + ids[8:], ids[4:8]]]
    config = ExperimentConfig(variants=("baseline", "ganet"), val_fraction=0.25)
    specs = run_specs(config, folds, "EX")
    assert len(specs) == 4
    for spec in specs:
        train_ids, test_ids = folds[spec.fold]
        assert not set(spec.train_ids) & set(spec.val_ids)
        assert sorted(spec.train_ids + spec.val_ids) == sorted(train_ids)
        assert len(spec.val_ids) == math.ceil(0.25 * len(train_ids)) and spec.test_ids == test_ids


def test_training_batches_never_draw_a_validation_or_test_image(tmp_path, monkeypatch):
    """The engine runs on a source that is not IDRiD; the grey level of each training batch image tells its id."""
    drawn = set()
    original_augment = train_module.random_flip_rotate

    def record(images, masks, **kwargs):
        drawn.update(f"img{round(level)}" for level in (images[:, 0, 0, 0] * 255).tolist())
        return original_augment(images, masks, **kwargs)

    monkeypatch.setattr(train_module, "random_flip_rotate", record)
    config = tiny_config(lesions=("square",), variants=("baseline",), epochs=3, val_fraction=0.4, overlays=0)
    results = run_experiment(config, tmp_path / "out", progress=False, source=NumberedSquares())
    (run,) = results["runs"]
    fit_ids, val_ids = run["spec"]["train_ids"], run["spec"]["val_ids"]
    assert len(val_ids) == 2 and len(run["test_ids"]) == 4
    assert drawn == set(fit_ids)  # every fitting image, and nothing else
    assert not drawn & (set(val_ids) | set(run["test_ids"]))
    assert results["synthetic_data"] is False and not (tmp_path / "out" / "synthetic-idrid").exists()


def test_a_lesion_the_source_does_not_hold_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(ValueError, match=r"lesion must be one of \['square'\], got 'EX'"):
        run_experiment(tiny_config(), tmp_path / "out", progress=False, source=NumberedSquares())
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_two_cpu_processes_with_torchrun(tmp_path):
    pytest.importorskip("torch.distributed")
    if not torch.distributed.is_available():
        pytest.skip("torch.distributed is not available")
    out = tmp_path / "ddp"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        str(free_port()),
        str(EXAMPLE),
        "--no-progress",
        "--out",
        str(out),
        "--variants",
        "baseline",
        "--folds",
        "2",
        "--only-folds",
        "1",
        "--epochs",
        "2",
        "--size",
        "32",
        "48",
        "--device",
        "cpu",
        "--cache-dir",
        str(tmp_path / "cache"),
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    result = subprocess.run(command, capture_output=True, text=True, timeout=400, cwd=REPO, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    log = read_log(out / "runs" / "baseline" / "EX" / "fold1" / "log.csv")
    assert [int(r["epoch"]) for r in log] == [1, 2]
    assert json.loads((out / "results.json").read_text())["runs"][0]["parameters"] == 6_981_218
