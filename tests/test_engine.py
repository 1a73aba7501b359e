"""The IDRiD experiment end to end on tiny synthetic trees: outputs, learning, resumption, refusal, DDP, real data."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from group_attention.data import IDRiD
from group_attention.engine import ExperimentConfig, quick_synthetic_config, run_experiment
from group_attention.engine.visualize import FALSE_NEGATIVE, FALSE_POSITIVE, TRUE_POSITIVE, overlay

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "idrid_ganet.py"


def tiny_config(**overrides) -> ExperimentConfig:
    settings = dict(lesions=("EX",), variants=("ganet",), folds=2, only_folds=(0,), epochs=4, batch_size=2,
                    checkpoint_seconds=0,
                    size=(32, 48), synthetic={"n_train": 6, "n_test": 2, "size": (64, 96)}, overlays=1)
    settings.update(overrides)
    return quick_synthetic_config(**settings)


def read_log(path: Path) -> list[dict]:
    with open(path) as stream:
        return list(csv.DictReader(stream))


def run_example(*arguments: str, timeout: int = 400) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    return subprocess.run([sys.executable, str(EXAMPLE), "--no-progress", *arguments], capture_output=True,
                          text=True, timeout=timeout, cwd=REPO, env=env)


def test_example_end_to_end_learns_the_synthetic_lesions(tmp_path):
    out = tmp_path / "out"
    result = run_example("--out", str(out), "--variants", "ganet", "--folds", "3", "--only-folds", "1",
                         "--epochs", "14", "--cache-dir", str(tmp_path / "cache"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "SYNTHETIC" in result.stdout
    markdown = (out / "results.md").read_text()
    assert "SYNTHETIC DATA" in markdown and "Baseline + SGAU+CGA" in markdown
    results = json.loads((out / "results.json").read_text())
    assert results["synthetic_data"] is True
    (run,) = results["runs"]
    run_dir = out / "runs" / "ganet" / "EX" / "fold1"
    assert [int(row["epoch"]) for row in read_log(run_dir / "log.csv")] == list(range(1, 15))
    for name in ("checkpoint_best.pt", "metrics.json", "attention.png"):
        assert (run_dir / name).is_file(), name
    assert not (run_dir / "checkpoint_last.pt").exists()  # a finished run needs no optimizer state
    overlays = sorted((run_dir / "overlays").glob("*.png"))
    assert len(overlays) == 2 and Image.open(overlays[0]).width >= 512
    assert run["parameters"] == 6_986_498
    # Learned: far better than predicting nothing (Dice 0) or everything (Dice 2p / (1 + p), p the lesion share).
    test_set = IDRiD(out / "synthetic-idrid", "EX", split="all", size=(96, 128), ids=run["test_ids"], cache_dir=None)
    lesion_share = torch.stack([item["mask"] for item in test_set]).mean().item()
    all_ones_dice = 2 * lesion_share / (1 + lesion_share)
    assert run["test"]["dice"] > max(0.3, 5 * all_ones_dice)
    assert run["test"]["aupr"] > 0.3


def test_interrupted_run_resumes_where_it_stopped_and_matches_an_uninterrupted_run(tmp_path):
    config = tiny_config(cache_dir=str(tmp_path / "cache"))
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

    epochs_trained = []
    resumed = run_experiment(config, out, on_epoch_end=lambda row: epochs_trained.append(row["epoch"]),
                             progress=False)
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
        run_experiment(tiny_config(epochs=1, lr=0.5, cache_dir=str(tmp_path / "cache")), tmp_path / "out",
                       progress=False)


def test_a_resumed_experiment_refuses_runs_made_on_other_images(tmp_path):
    """The data root's images change between runs: a finished run and an interrupted run's checkpoint were made on
    another split (folds would overlap, training images would be tested), so resuming is refused, not silent."""
    from group_attention.data import make_synthetic_idrid

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


def test_overlay_colours_follow_figure_5():
    image = torch.zeros(3, 1, 4)
    prediction = torch.tensor([[1, 1, 0, 0]])
    truth = torch.tensor([[1, 0, 1, 0]])
    pixels = [tuple(p) for p in np.asarray(overlay(image, prediction, truth)).reshape(-1, 3).tolist()]
    assert pixels == [TRUE_POSITIVE, FALSE_POSITIVE, FALSE_NEGATIVE, (0, 0, 0)]
    assert (TRUE_POSITIVE, FALSE_POSITIVE, FALSE_NEGATIVE) == ((255, 255, 0), (255, 0, 0), (0, 0, 255))


@pytest.mark.parametrize("arguments, message", [
    (["--variants", "attention-unet"], "variant must be one of"),
    (["--lesion", "XX"], "lesion must be one of"),
    (["--folds", "1"], "folds must be at least 2"),
    (["--only-folds", "4"], "--only-folds takes folds 1..3, got [4]"),
    (["--only-folds", "0"], "--only-folds takes folds 1..3, got [0]"),
    (["--seed", "-1"], "seed must be an int >= 0, got -1"),
    (["--device", "gpu"], "device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got 'gpu'"),
    (["--size", "0", "64"], "size must have each side in 16..8192"),
    (["--data-root", "/nonexistent/idrid"], "does not exist"),
    (["--data-root", str(REPO / "docs")], "is not an IDRiD segmentation tree"),
])
def test_example_rejects_bad_options(arguments, message, tmp_path):
    result = run_example(*arguments, "--out", str(tmp_path / "out"), timeout=120)
    assert result.returncode == 2 and message in result.stderr
    assert not (tmp_path / "out").exists()  # nothing written


def test_example_refuses_other_settings_before_writing_anything(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "config.json").write_text(json.dumps({"fingerprint": "0123456789abcdef", "config": {}}))
    result = run_example("--out", str(out), timeout=120)
    assert result.returncode == 2 and "holds runs made with other settings" in result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["config.json"]


@pytest.mark.parametrize("overrides, error, message", [
    (dict(lesions="EX"), TypeError, "lesions must be a sequence .* the string 'EX'"),
    (dict(variants="ganet"), TypeError, "variants must be a sequence"),
    (dict(only_folds=(0.5,)), ValueError, r"only_folds must be fold indices in 0..2, got \[0.5\]"),
    (dict(seed=-1), ValueError, "seed must be an int >= 0"),
    (dict(degrees=float("nan")), ValueError, "degrees must be in"),
])
def test_bad_experiment_settings_are_named(overrides, error, message):
    with pytest.raises(error, match=message):
        ExperimentConfig(**overrides)


def test_repeated_variants_lesions_and_folds_run_once():
    config = ExperimentConfig(variants=("baseline", "ganet", "baseline"), lesions=("EX", "EX"), only_folds=(0, 0))
    assert (config.variants, config.lesions, config.only_folds) == (("baseline", "ganet"), ("EX",), (0,))


def test_two_cpu_processes_with_torchrun(tmp_path):
    pytest.importorskip("torch.distributed")
    if not torch.distributed.is_available():
        pytest.skip("torch.distributed is not available")
    out = tmp_path / "ddp"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
               str(EXAMPLE), "--no-progress", "--out", str(out), "--variants", "baseline", "--folds", "2",
               "--only-folds", "1", "--epochs", "2", "--size", "32", "48", "--device", "cpu",
               "--cache-dir", str(tmp_path / "cache")]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run(command, capture_output=True, text=True, timeout=400, cwd=REPO, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    log = read_log(out / "runs" / "baseline" / "EX" / "fold1" / "log.csv")
    assert [int(r["epoch"]) for r in log] == [1, 2]
    assert json.loads((out / "results.json").read_text())["runs"][0]["parameters"] == 6_981_218


@pytest.mark.skipif(not os.environ.get("GA_IDRID_ROOT"), reason="set GA_IDRID_ROOT to a real IDRiD tree")
def test_example_on_real_idrid_images(tmp_path):
    out = tmp_path / "real"
    result = run_example("--data-root", os.environ["GA_IDRID_ROOT"], "--out", str(out), "--lesion", "EX",
                         "--variants", "ganet", "--epochs", "2", "--batch-size", "4", "--size", "96", "128",
                         "--folds", "3", "--only-folds", "1", "--overlays", "1", timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert results["synthetic_data"] is False and "SYNTHETIC" not in (out / "results.md").read_text()
    (run,) = results["runs"]
    assert run["test_images"] >= 4 and 0 <= run["test"]["dice"] <= 1 and 0 <= run["test"]["aupr"] <= 1


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


def test_official_protocol_trains_on_the_training_set_and_tests_on_the_testing_set(tmp_path):
    config = tiny_config(protocol="official", only_folds=None, epochs=1, val_fraction=0.0,
                         synthetic={"n_train": 4, "n_test": 3, "size": (64, 96)}, cache_dir=str(tmp_path / "cache"))
    results = run_experiment(config, tmp_path / "out", progress=False)
    (run,) = results["runs"]
    assert run["test_ids"] == ["IDRiD_05", "IDRiD_06", "IDRiD_07"]
    assert (run["train_images"], run["val_images"], run["test_images"]) == (4, 0, 3)
    assert "official training/testing split" in (tmp_path / "out" / "results.md").read_text()


def test_attention_figure_leaves_the_models_recording_as_it_was():
    from group_attention import GANet
    from group_attention.engine import attention_panels

    model = GANet(channels=(32, 64), num_classes=1)
    model.record_attention = True
    image = torch.rand(3, 32, 32)
    model(image[None])
    recorded = model.attention_maps()
    assert attention_panels(model, image, torch.zeros(32, 32)) is not None
    assert model.attention_maps() is not None and all(a is b for a, b in zip(model.attention_maps(), recorded))
