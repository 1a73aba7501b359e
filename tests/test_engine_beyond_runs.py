"""Whole runs beyond the 2020 protocol on the synthetic look-alike: a joint model and a model trained on patches at
half the native scale train, resume exactly, and ``predict`` applies their checkpoints (every lesion, at the
recorded scale) without being told; bad combinations of options end in one line before anything is written."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import engine_runs
import numpy as np
import pytest
import torch
from test_example_cli import fails_cleanly, pristine_tree, tiny, tree  # noqa: F401 - the CLI tests' fixtures

from group_attention.fundus import load_model, predict, predict_probabilities, read_image
from group_attention.fundus.engine import run_experiment
from group_attention.fundus.engine.patches import load_scaled_arrays
from group_attention.fundus.engine.windows import window_probabilities


def small(tmp_path, **overrides):
    settings = dict(
        variants=("unet",),
        epochs=2,
        size=(16, 16),
        synthetic={"n_train": 4, "n_test": 2, "size": (64, 96)},
        overlays=1,
        cache_dir=str(tmp_path / "cache"),
        keep_checkpoints="all",
    )
    return engine_runs.tiny_config(**{**settings, **overrides})


def straight_and_resumed(tmp_path, config):
    straight = run_experiment(config, tmp_path / "straight", progress=False)
    with pytest.raises(engine_runs.Interrupt):
        run_experiment(config, tmp_path / "resumed", on_epoch_end=engine_runs.stop_after_epoch(1), progress=False)
    epochs = []
    resumed = run_experiment(
        config, tmp_path / "resumed", on_epoch_end=lambda row: epochs.append(row["epoch"]), progress=False
    )
    assert epochs == [2], "the rerun must continue after the first epoch"
    return straight, resumed


JOINT = dict(lesions=("EX", "HE"), joint=True, activation="sigmoid")


@pytest.mark.slow
def test_a_joint_model_trains_resumes_exactly_and_predicts_every_lesion(tmp_path):
    config = small(tmp_path, **JOINT)
    straight, resumed = straight_and_resumed(tmp_path, config)
    assert [(r["lesion"], r["model"], r["joint"]) for r in straight["runs"]] == [
        ("EX", "EX+HE", True),
        ("HE", "EX+HE", True),
    ]
    for a, b in zip(straight["runs"], resumed["runs"]):
        assert a["test"] == b["test"] and a["best_epoch"] == b["best_epoch"]
    run_dir = tmp_path / "straight" / "runs" / "unet" / "EX+HE" / "fold1"
    test_id = straight["runs"][0]["test_ids"][0]
    assert {p.name for p in (run_dir / "overlays").iterdir()} == {f"{test_id}_EX.png", f"{test_id}_HE.png"}
    assert (run_dir / "curves.png").is_file() and "(joint EX+HE)" in (tmp_path / "straight" / "results.md").read_text()

    model = load_model(run_dir / "checkpoint_best.pt")
    spec = model.inference_spec
    assert spec.lesions == ("EX", "HE") and spec.lesion_channels == (0, 1) and spec.activation == "sigmoid"
    images = tmp_path / "straight" / "synthetic-idrid" / "A. Segmentation" / "1. Original Images" / "b. Testing Set"
    report = predict(
        [model], [images], tmp_path / "predicted", progress=False, masks=tmp_path / "straight" / "synthetic-idrid"
    )
    assert report.ok and report.predicted == 2
    rows = json.loads(report.summary_json.read_text())["rows"]
    assert sorted({row["lesion"] for row in rows}) == ["EX", "HE"] and len(rows) == 4
    for stem in [p.stem for p in images.iterdir()]:
        for lesion in ("EX", "HE"):
            assert (tmp_path / "predicted" / "masks" / f"{stem}_{lesion}.png").is_file()
            assert (tmp_path / "predicted" / "probabilities" / f"{stem}_{lesion}.png").is_file()

    single = run_experiment(small(tmp_path, lesions=("EX",)), tmp_path / "single", progress=False)
    assert single["runs"][0]["lesion"] == "EX"
    ex_model = load_model(tmp_path / "single" / "runs" / "unet" / "EX" / "fold1" / "checkpoint_best.pt")
    with pytest.raises(ValueError, match=r"different lesions, got lesions \['EX', 'HE', 'EX'\]"):
        predict([model, ex_model], [images], tmp_path / "refused", progress=False)


SCALED = dict(scale=0.5, patch=(16, 16), patches_per_image=2, batch_size=2)


@pytest.mark.slow
def test_a_patch_run_resumes_exactly_and_predict_applies_its_scale_without_being_told(tmp_path):
    config = small(tmp_path, **SCALED)
    straight, resumed = straight_and_resumed(tmp_path, config)
    assert straight["runs"][0]["test"] == resumed["runs"][0]["test"]
    assert "sliding window at scale 0.5" in straight["runs"][0]["evaluation"]
    run_dir = tmp_path / "straight" / "runs" / "unet" / "EX" / "fold1"
    model = load_model(run_dir / "checkpoint_best.pt")
    assert (model.inference_spec.scale, model.inference_spec.patch) == (0.5, (16, 16))

    # predict's probabilities of a test photograph are those the experiment's test scored
    source = config.data_source(tmp_path / "straight")
    test_id = straight["runs"][0]["test_ids"][0]
    arrays = load_scaled_arrays(source, ["EX"], [test_id], 0.5, cache_dir=None)
    spec = model.inference_spec
    ((_, tested, _),) = window_probabilities(
        model, arrays, torch.tensor([0]), (16, 16), spec.lesion_channels, spec.activation, original=True
    )
    image = read_image(arrays.dataset.images[test_id])
    predicted, _ = predict_probabilities(model, image)
    np.testing.assert_allclose(predicted, tested.numpy(), atol=1e-6)


def test_a_patch_run_tests_batch_norm_statistics_of_its_training_windows_and_trains_the_same_weights(tmp_path):
    """Two patch runs that differ only in ``bn_windows`` train the same weights (batch norm uses each batch's own
    statistics in training); the best checkpoints differ in the running statistics alone, and the calibrated
    run's are those :meth:`Trainer.calibrate_batch_norm` gives the other run's weights."""
    from group_attention.fundus.engine.io import load_checkpoint
    from group_attention.fundus.engine.train import RunSpec, Trainer

    results = {}
    for bn_windows in (0, 6):
        config = small(tmp_path, **SCALED, bn_windows=bn_windows)
        results[bn_windows] = run_experiment(config, tmp_path / str(bn_windows), progress=False)["runs"][0]
    best = {
        bn_windows: load_checkpoint(
            tmp_path / str(bn_windows) / "runs" / "unet" / "EX" / "fold1" / "checkpoint_best.pt"
        )
        for bn_windows in (0, 6)
    }
    statistics = [key for key in best[0]["model"] if "running_" in key or "num_batches_tracked" in key]
    assert statistics
    for key, value in best[0]["model"].items():
        if key in statistics:
            assert not torch.equal(value, best[6]["model"][key]), key
        else:
            assert torch.equal(value, best[6]["model"][key]), key

    recorded = results[6]["spec"]
    config = small(tmp_path, **SCALED, bn_windows=6)
    ids = recorded["train_ids"] + recorded["val_ids"] + recorded["test_ids"]
    arrays = load_scaled_arrays(config.data_source(tmp_path / "6"), ["EX"], ids, 0.5, None)
    spec = RunSpec("unet", "EX", 0, recorded["train_ids"], recorded["val_ids"], recorded["test_ids"])
    trainer = Trainer(spec, arrays, config, tmp_path / "again", torch.device("cpu"), progress=False)
    trainer.model.load_state_dict(best[0]["model"])
    trainer.calibrate_batch_norm()
    for key in statistics:
        torch.testing.assert_close(trainer.model.state_dict()[key], best[6]["model"][key], rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_a_time_budget_stops_training_and_tests_the_best_checkpoint(tmp_path):
    result = run_experiment(small(tmp_path, epochs=50, time_budget=1e-6), tmp_path / "out", progress=False)
    assert result["runs"][0]["epochs_trained"] == 1


BAD = [
    (["--lesion", "EX", "--joint"], ["--joint", "two or more lesions"]),
    (["--joint", "--activation", "softmax"], ["--activation", "'sigmoid' with joint"]),
    (["--scale", "2", "--patch", "16", "16"], ["--scale", "(0, 1]"]),
    (["--scale", "0.5", "--patch", "20", "16"], ["--patch", "nearest valid: 16 16"]),
    (["--scale", "0.25", "--patch", "32", "32"], ["--patch", "larger than image", "at scale 0.25"]),
]


@pytest.mark.parametrize("extra, expected", BAD)
def test_bad_combinations_are_one_line_before_anything_is_written(capsys, tree, tmp_path, extra, expected):  # noqa: F811
    out = tmp_path / "out"
    fails_cleanly(capsys, [*tiny(tree, out, tmp_path), "--lesion", "EX", "HE", *extra], *expected)
    assert not out.exists()


def test_tensorboard_without_its_package_is_one_line_naming_the_extra(capsys, tree, tmp_path):  # noqa: F811
    try:
        import torch.utils.tensorboard  # noqa: F401

        pytest.skip("tensorboard is installed here")
    except ImportError:
        pass
    out = tmp_path / "out"
    fails_cleanly(
        capsys, [*tiny(tree, out, tmp_path), "--tensorboard"], "--tensorboard", 'group-attention[tensorboard]"'
    )
    assert not out.exists()


@pytest.mark.slow
def test_a_joint_patch_run_with_amp_and_a_time_budget_under_torchrun(tmp_path):
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
        str(engine_runs.free_port()),
        str(engine_runs.EXAMPLE),
        "--no-progress",
        "--out",
        str(out),
        "--variants",
        "unet",
        "--lesion",
        "EX",
        "HE",
        "--joint",
        "--scale",
        "0.5",
        "--patch",
        "16",
        "16",
        "--folds",
        "2",
        "--only-folds",
        "1",
        "--epochs",
        "2",
        "--amp",
        "--time-budget",
        "30",
        "--overlays",
        "0",
        "--device",
        "cpu",
        "--cache-dir",
        str(tmp_path / "cache"),
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(engine_runs.REPO))
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=engine_runs.REPO, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    log = engine_runs.read_log(out / "runs" / "unet" / "EX+HE" / "fold1" / "log.csv")
    assert [int(r["epoch"]) for r in log] == [1, 2]
    runs = json.loads((out / "results.json").read_text())["runs"]
    assert [r["lesion"] for r in runs] == ["EX", "HE"]
