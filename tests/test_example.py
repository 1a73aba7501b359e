"""examples/idrid_ganet.py as a person runs it: every option, every refusal (in-process, through its main), the
outputs, and the slow end-to-end run in a fresh interpreter."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from engine_runs import EXAMPLE, REPO, read_log
from PIL import Image

import group_attention.fundus.engine.train as train_module
from group_attention.fundus.data import IDRiD, make_synthetic_idrid
from group_attention.models import VARIANTS


def _load_example():
    spec = importlib.util.spec_from_file_location("idrid_ganet_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


example = _load_example()


def run_example(*arguments: str, timeout: int = 400, env: "dict | None" = None) -> subprocess.CompletedProcess:
    """The example in a fresh interpreter, importing this checkout's package."""
    env = dict(os.environ if env is None else env, PYTHONPATH=str(REPO))
    return subprocess.run(
        [sys.executable, str(EXAMPLE), "--no-progress", *arguments],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env=env,
    )


def cli(*arguments: str) -> int:
    """The example's ``main`` in this process."""
    return example.main(["--no-progress", *arguments])


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory) -> Path:
    """4 training and 2 testing images: 2-fold cross-validation gives 3 training and 3 test images per fold."""
    return make_synthetic_idrid(tmp_path_factory.mktemp("tiny-idrid"), n_train=4, n_test=2, size=(64, 96))


def tiny_cli_arguments(root: Path, tmp_path: Path, *extra: str) -> list[str]:
    return [
        "--data-root",
        str(root),
        "--out",
        str(tmp_path / "out"),
        "--lesion",
        "EX",
        "--variants",
        "baseline",
        "--epochs",
        "1",
        "--batch-size",
        "2",
        "--size",
        "32",
        "48",
        "--folds",
        "2",
        "--only-folds",
        "1",
        "--overlays",
        "0",
        "--cache-dir",
        str(tmp_path / "cache"),
        *extra,
    ]


@pytest.mark.slow
def test_example_end_to_end_learns_the_synthetic_lesions(tmp_path):
    out = tmp_path / "out"
    result = run_example(
        "--out",
        str(out),
        "--variants",
        "ganet",
        "--folds",
        "3",
        "--only-folds",
        "1",
        "--epochs",
        "14",
        "--cache-dir",
        str(tmp_path / "cache"),
    )
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


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--variants", "attention-unet"], "variant must be one of"),
        (["--lesion", "XX"], "lesion must be one of"),
        (["--folds", "1"], "folds must be at least 2"),
        (["--only-folds", "4"], "--only-folds takes folds 1..3, got [4]"),
        (["--only-folds", "0"], "--only-folds takes folds 1..3, got [0]"),
        (["--seed", "-1"], "seed must be an int >= 0, got -1"),
        (["--device", "gpu"], "device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got 'gpu'"),
        (["--size", "0", "64"], "size must have each side in 16..8192"),
        (["--lr", "0"], "lr must be a finite positive number, got 0.0"),
        (["--lr", "-0.001"], "lr must be a finite positive number, got -0.001"),
        (["--val-fraction", "1"], "val_fraction must be in [0, 1), got 1.0"),
        (["--checkpoint-seconds", "-1"], "checkpoint_seconds must be >= 0, got -1.0"),
        (["--resume"], "--resume given but"),
        (["--data-root", "/nonexistent/idrid"], "does not exist"),
        (["--data-root", str(REPO / "docs")], "is not an IDRiD segmentation tree"),
    ],
)
def test_example_rejects_bad_options(arguments, message, tmp_path, capsys):
    assert cli(*arguments, "--out", str(tmp_path / "out")) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # nothing written


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--protocol", "loo"], "argument --protocol: invalid choice: 'loo'"),
        (["--lr", "fast"], "argument --lr: invalid float value: 'fast'"),
        (["--checkpoint-seconds", "often"], "argument --checkpoint-seconds: invalid float value: 'often'"),
    ],
)
def test_example_rejects_malformed_values_with_exit_code_2(arguments, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli(*arguments, "--out", str(tmp_path / "out"))
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_example_refuses_other_settings_before_writing_anything(tmp_path, capsys):
    """A folder with work of other settings (here a finished run's metrics) is refused, and left as it was."""
    out = tmp_path / "out"
    finished = out / "runs" / "ganet" / "EX" / "fold1" / "metrics.json"
    finished.parent.mkdir(parents=True)
    finished.write_text("{}")
    (out / "config.json").write_text(json.dumps({"fingerprint": "0123456789abcdef", "config": {}}))
    assert cli("--out", str(out)) == 2
    assert "holds runs made with other settings" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "runs"]


def test_example_writes_every_output_of_a_synthetic_run(tmp_path, capsys):
    """The fast counterpart of the slow end-to-end test: the quick demo's files after one epoch at a small size."""
    out = tmp_path / "out"
    assert (
        cli(
            "--out",
            str(out),
            "--variants",
            "ganet",
            "--only-folds",
            "1",
            "--epochs",
            "1",
            "--size",
            "32",
            "48",
            "--cache-dir",
            str(tmp_path / "cache"),
        )
        == 0
    )
    assert "SYNTHETIC" in capsys.readouterr().out
    assert "SYNTHETIC DATA" in (out / "results.md").read_text()
    results = json.loads((out / "results.json").read_text())
    assert results["synthetic_data"] is True and results["complete"] is True
    (run,) = results["runs"]
    run_dir = out / "runs" / "ganet" / "EX" / "fold1"
    assert [int(row["epoch"]) for row in read_log(run_dir / "log.csv")] == [1]
    for name in ("checkpoint_best.pt", "metrics.json", "attention.png"):
        assert (run_dir / name).is_file(), name
    assert not (run_dir / "checkpoint_last.pt").exists()  # --keep-checkpoints best (the default)
    overlays = sorted((run_dir / "overlays").glob("*.png"))
    assert len(overlays) == 2 and Image.open(overlays[0]).width >= 512
    assert run["parameters"] == 6_986_498
    assert 0 <= run["test"]["dice"] <= 1 and 0 <= run["test"]["aupr"] <= 1


def test_example_variants_all_selects_every_table_1_row():
    for word in ("all", "ALL"):
        config = example.build_config(example.parse_arguments(["--variants", word]))
        assert config.variants == ("unet", "baseline", "baseline+sgau", "baseline+se", "baseline+cga", "ganet")
    assert tuple(VARIANTS) == config.variants


def test_example_dice_over_sets_the_loss_and_defaults_by_protocol():
    def config(*options):
        return example.build_config(example.parse_arguments(["--data-root", "anywhere", *options]))

    assert config().dice_over == "image"
    assert config("--scale", "0.5", "--patch", "64", "64").dice_over == "batch"
    assert config("--scale", "0.5", "--patch", "64", "64", "--dice-over", "image").dice_over == "image"
    assert config("--dice-over", "batch").dice_over == "batch"


def test_example_bn_windows_sets_the_calibration_of_patch_runs():
    def config(*options):
        return example.build_config(example.parse_arguments(["--data-root", "anywhere", *options]))

    assert config().bn_windows == 0
    assert config("--scale", "0.5", "--patch", "64", "64").bn_windows == 64
    assert config("--scale", "0.5", "--patch", "64", "64", "--bn-windows", "0").bn_windows == 0
    assert config("--scale", "0.5", "--patch", "64", "64", "--bn-windows", "200").bn_windows == 200


def test_example_amp_trains_in_mixed_precision(tiny_root, tmp_path, monkeypatch):
    dtypes = []
    from group_attention.losses import GeneralizedDiceLoss  # what the engine's per-lesion loss calls

    original_loss = GeneralizedDiceLoss.forward

    def record_dtype(self, logits, target):
        dtypes.append(logits.dtype)
        return original_loss(self, logits, target)

    monkeypatch.setattr(GeneralizedDiceLoss, "forward", record_dtype)
    assert cli(*tiny_cli_arguments(tiny_root, tmp_path, "--amp", "--device", "cpu")) == 0
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["config"]["amp"] is True and math.isfinite(results["runs"][0]["test"]["dice"])
    assert dtypes and set(dtypes) == {torch.bfloat16}  # autocast on the CPU is bf16


def test_example_overlays_minus_one_draws_every_test_image(tiny_root, tmp_path):
    assert cli(*tiny_cli_arguments(tiny_root, tmp_path, "--overlays", "-1")) == 0
    (run,) = json.loads((tmp_path / "out" / "results.json").read_text())["runs"]
    overlays = (tmp_path / "out" / "runs" / "baseline" / "EX" / "fold1" / "overlays").glob("*.png")
    assert sorted(p.stem for p in overlays) == sorted(run["test_ids"]) and len(run["test_ids"]) == 3


def test_example_official_protocol_tests_on_the_testing_set(tiny_root, tmp_path):
    arguments = tiny_cli_arguments(tiny_root, tmp_path, "--protocol", "official", "--val-fraction", "0")
    del arguments[arguments.index("--only-folds") : arguments.index("--only-folds") + 2]  # one fold only
    assert cli(*arguments) == 0
    (run,) = json.loads((tmp_path / "out" / "results.json").read_text())["runs"]
    assert run["test_ids"] == ["IDRiD_05", "IDRiD_06"] and (run["train_images"], run["val_images"]) == (4, 0)


def test_example_val_fraction_sets_the_held_out_share(tiny_root, tmp_path):
    assert cli(*tiny_cli_arguments(tiny_root, tmp_path, "--val-fraction", "0.5")) == 0
    (run,) = json.loads((tmp_path / "out" / "results.json").read_text())["runs"]
    # 3 training images of the fold: ceil(0.5 * 3) = 2 held out for validation, 1 left to fit.
    assert (run["train_images"], run["val_images"], run["test_images"]) == (1, 2, 3)


def test_example_checkpoint_seconds_sets_how_often_the_last_checkpoint_is_written(tiny_root, tmp_path, monkeypatch):
    """0: after every epoch (the default, 30 s, would write only after the last of these short epochs)."""
    written = []
    original_save = train_module.save_checkpoint

    def record(path, state):
        if Path(path).name == "checkpoint_last.pt":
            written.append(state["epoch"])
        return original_save(path, state)

    monkeypatch.setattr(train_module, "save_checkpoint", record)
    arguments = tiny_cli_arguments(tiny_root, tmp_path, "--checkpoint-seconds", "0")
    arguments[arguments.index("--epochs") + 1] = "2"
    assert cli(*arguments) == 0
    assert written == [1, 2]


def test_example_resume_continues_an_earlier_run(tiny_root, tmp_path, capsys, monkeypatch):
    arguments = tiny_cli_arguments(tiny_root, tmp_path)
    assert cli(*arguments) == 0
    capsys.readouterr()
    before = json.loads((tmp_path / "out" / "results.json").read_text())

    def must_not_train(self, epoch):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(train_module.Trainer, "train_epoch", must_not_train)
    assert cli(*arguments, "--resume") == 0
    assert json.loads((tmp_path / "out" / "results.json").read_text())["runs"] == before["runs"]


@pytest.mark.skipif(not os.environ.get("GA_IDRID_ROOT"), reason="set GA_IDRID_ROOT to a real IDRiD tree")
def test_example_on_real_idrid_images(tmp_path):
    out = tmp_path / "real"
    assert (
        cli(
            "--data-root",
            os.environ["GA_IDRID_ROOT"],
            "--out",
            str(out),
            "--lesion",
            "EX",
            "--variants",
            "ganet",
            "--epochs",
            "2",
            "--batch-size",
            "4",
            "--size",
            "96",
            "128",
            "--folds",
            "3",
            "--only-folds",
            "1",
            "--overlays",
            "1",
            "--cache-dir",
            str(tmp_path / "cache"),
        )
        == 0
    )
    results = json.loads((out / "results.json").read_text())
    assert results["synthetic_data"] is False and "SYNTHETIC" not in (out / "results.md").read_text()
    (run,) = results["runs"]
    assert run["test_images"] >= 4 and 0 <= run["test"]["dice"] <= 1 and 0 <= run["test"]["aupr"] <= 1
