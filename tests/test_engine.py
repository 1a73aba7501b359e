"""The experiment end to end on tiny synthetic trees: outputs, learning, resumption, refusal, the data seam, DDP, the
command line (in-process) and real data."""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import Dataset

import group_attention.engine.train as train_module
from group_attention.data import IDRiD, SegmentationSource, make_synthetic_idrid
from group_attention.engine import ExperimentConfig, quick_synthetic_config, run_experiment
from group_attention.engine.distributed import Context
from group_attention.engine.experiment import run_specs
from group_attention.engine.visualize import FALSE_NEGATIVE, FALSE_POSITIVE, TRUE_POSITIVE, overlay
from group_attention.models import VARIANTS

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "idrid_ganet.py"


def _load_example():
    spec = importlib.util.spec_from_file_location("idrid_ganet_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


example = _load_example()


def tiny_config(**overrides) -> ExperimentConfig:
    settings = dict(lesions=("EX",), variants=("ganet",), folds=2, only_folds=(0,), epochs=4, batch_size=2,
                    checkpoint_seconds=0,
                    size=(32, 48), synthetic={"n_train": 6, "n_test": 2, "size": (64, 96)}, overlays=1)
    settings.update(overrides)
    return quick_synthetic_config(**settings)


def read_log(path: Path) -> list[dict]:
    with open(path) as stream:
        return list(csv.DictReader(stream))


def run_example(*arguments: str, timeout: int = 400, env: "dict | None" = None) -> subprocess.CompletedProcess:
    """The example in a fresh interpreter, importing this checkout's package."""
    env = dict(os.environ if env is None else env, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, str(EXAMPLE), "--no-progress", *arguments], capture_output=True,
                          text=True, timeout=timeout, cwd=REPO, env=env)


def cli(*arguments: str) -> int:
    """The example's ``main`` in this process."""
    return example.main(["--no-progress", *arguments])


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory) -> Path:
    """4 training and 2 testing images: 2-fold cross-validation gives 3 training and 3 test images per fold."""
    return make_synthetic_idrid(tmp_path_factory.mktemp("tiny-idrid"), n_train=4, n_test=2, size=(64, 96))


def tiny_cli_arguments(root: Path, tmp_path: Path, *extra: str) -> list[str]:
    return ["--data-root", str(root), "--out", str(tmp_path / "out"), "--lesion", "EX", "--variants", "baseline",
            "--epochs", "1", "--batch-size", "2", "--size", "32", "48", "--folds", "2", "--only-folds", "1",
            "--overlays", "0", "--cache-dir", str(tmp_path / "cache"), *extra]


@pytest.mark.slow
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
    for name in ("checkpoint_last.pt", "checkpoint_best.pt", "metrics.json", "attention.png"):
        assert (run_dir / name).is_file(), name
    overlays = sorted((run_dir / "overlays").glob("*.png"))
    assert len(overlays) == 2 and Image.open(overlays[0]).size == (128, 96)
    assert run["parameters"] == 6_986_498
    # Learned: far better than predicting nothing (Dice 0) or everything (Dice 2p / (1 + p), p the lesion share).
    test_set = IDRiD(out / "synthetic-idrid", "EX", split="all", size=(96, 128), ids=run["test_ids"], cache_dir=None)
    lesion_share = torch.stack([item["mask"] for item in test_set]).mean().item()
    all_ones_dice = 2 * lesion_share / (1 + lesion_share)
    assert run["test"]["dice"] > max(0.3, 5 * all_ones_dice)
    assert run["test"]["aupr"] > 0.3


@pytest.mark.parametrize("amp, device", [
    (False, "cpu"),
    (True, "cpu"),
    pytest.param(True, "cuda", marks=pytest.mark.cuda),
])
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
    (["--size", "0", "64"], "size must be two positive ints"),
    (["--lr", "0"], "lr must be positive, got 0.0"),
    (["--lr", "-0.001"], "lr must be positive, got -0.001"),
    (["--val-fraction", "1"], "val_fraction must be in [0, 1), got 1.0"),
    (["--checkpoint-seconds", "-1"], "checkpoint_seconds must be >= 0, got -1.0"),
    (["--resume"], "--resume given but"),
    (["--data-root", "/nonexistent/idrid"], "does not exist"),
    (["--data-root", str(REPO / "docs")], "is not an IDRiD segmentation tree"),
])
def test_example_rejects_bad_options(arguments, message, tmp_path, capsys):
    assert cli(*arguments, "--out", str(tmp_path / "out")) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # nothing written


@pytest.mark.parametrize("arguments, message", [
    (["--protocol", "loo"], "argument --protocol: invalid choice: 'loo'"),
    (["--lr", "fast"], "argument --lr: invalid float value: 'fast'"),
    (["--checkpoint-seconds", "often"], "argument --checkpoint-seconds: invalid float value: 'often'"),
])
def test_example_rejects_malformed_values_with_exit_code_2(arguments, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli(*arguments, "--out", str(tmp_path / "out"))
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_example_refuses_other_settings_before_writing_anything(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "config.json").write_text(json.dumps({"fingerprint": "0123456789abcdef", "config": {}}))
    assert cli("--out", str(out)) == 2
    assert "holds runs made with other settings" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["config.json"]


def test_example_writes_every_output_of_a_synthetic_run(tmp_path, capsys):
    """The fast counterpart of the slow end-to-end test: the quick demo's files, one epoch at a small size."""
    out = tmp_path / "out"
    assert cli("--out", str(out), "--variants", "ganet", "--only-folds", "1", "--epochs", "2", "--size", "32", "48",
               "--cache-dir", str(tmp_path / "cache")) == 0
    assert "SYNTHETIC" in capsys.readouterr().out
    assert "SYNTHETIC DATA" in (out / "results.md").read_text()
    results = json.loads((out / "results.json").read_text())
    assert results["synthetic_data"] is True and results["complete"] is True
    (run,) = results["runs"]
    run_dir = out / "runs" / "ganet" / "EX" / "fold1"
    assert [int(row["epoch"]) for row in read_log(run_dir / "log.csv")] == [1, 2]
    for name in ("checkpoint_last.pt", "checkpoint_best.pt", "metrics.json", "attention.png"):
        assert (run_dir / name).is_file(), name
    overlays = sorted((run_dir / "overlays").glob("*.png"))
    assert len(overlays) == 2 and Image.open(overlays[0]).size == (48, 32)
    assert run["parameters"] == 6_986_498
    assert 0 <= run["test"]["dice"] <= 1 and 0 <= run["test"]["aupr"] <= 1


def test_example_variants_all_selects_every_table_1_row():
    for word in ("all", "ALL"):
        config = example.build_config(example.parse_arguments(["--variants", word]))
        assert config.variants == ("unet", "baseline", "baseline+sgau", "baseline+se", "baseline+cga", "ganet")
    assert tuple(VARIANTS) == config.variants


def test_example_amp_trains_in_mixed_precision(tiny_root, tmp_path, monkeypatch):
    dtypes = []
    original_loss = train_module.GeneralizedDiceLoss.forward

    def record_dtype(self, logits, target):
        dtypes.append(logits.dtype)
        return original_loss(self, logits, target)

    monkeypatch.setattr(train_module.GeneralizedDiceLoss, "forward", record_dtype)
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
    del arguments[arguments.index("--only-folds"):arguments.index("--only-folds") + 2]  # one fold only
    assert cli(*arguments) == 0
    (run,) = json.loads((tmp_path / "out" / "results.json").read_text())["runs"]
    assert run["test_ids"] == ["IDRiD_05", "IDRiD_06"] and (run["train_images"], run["val_images"]) == (4, 0)


def test_example_val_fraction_sets_the_held_out_share(tiny_root, tmp_path):
    assert cli(*tiny_cli_arguments(tiny_root, tmp_path, "--val-fraction", "0.5")) == 0
    (run,) = json.loads((tmp_path / "out" / "results.json").read_text())["runs"]
    # 3 training images of the fold: ceil(0.5 * 3) = 2 held out for validation, 1 left to fit.
    assert (run["train_images"], run["val_images"], run["test_images"]) == (1, 2, 3)


@pytest.mark.parametrize("seconds, saves", [("0", [1, 2, 3]), ("1e9", [3])])
def test_example_checkpoint_seconds_sets_how_often_the_last_checkpoint_is_written(tiny_root, tmp_path, monkeypatch,
                                                                                   seconds, saves):
    written = []
    original_save = train_module.save_checkpoint

    def record(path, state):
        if Path(path).name == "checkpoint_last.pt":
            written.append(state["epoch"])
        return original_save(path, state)

    monkeypatch.setattr(train_module, "save_checkpoint", record)
    arguments = tiny_cli_arguments(tiny_root, tmp_path, "--checkpoint-seconds", seconds)
    arguments[arguments.index("--epochs") + 1] = "3"
    assert cli(*arguments) == 0
    assert written == saves


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


def free_port() -> int:
    """A port the OS has just handed out as free (a fixed port collides with other runs)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
def test_two_cpu_processes_with_torchrun(tmp_path):
    pytest.importorskip("torch.distributed")
    if not torch.distributed.is_available():
        pytest.skip("torch.distributed is not available")
    out = tmp_path / "ddp"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
               "--master_port", str(free_port()),
               str(EXAMPLE), "--no-progress", "--out", str(out), "--variants", "baseline", "--folds", "2",
               "--only-folds", "1", "--epochs", "2", "--size", "32", "48", "--device", "cpu",
               "--cache-dir", str(tmp_path / "cache")]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    result = subprocess.run(command, capture_output=True, text=True, timeout=400, cwd=REPO, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    log = read_log(out / "runs" / "baseline" / "EX" / "fold1" / "log.csv")
    assert [int(r["epoch"]) for r in log] == [1, 2]
    assert json.loads((out / "results.json").read_text())["runs"][0]["parameters"] == 6_981_218


@pytest.mark.skipif(not os.environ.get("GA_IDRID_ROOT"), reason="set GA_IDRID_ROOT to a real IDRiD tree")
def test_example_on_real_idrid_images(tmp_path):
    out = tmp_path / "real"
    assert cli("--data-root", os.environ["GA_IDRID_ROOT"], "--out", str(out), "--lesion", "EX", "--variants", "ganet",
               "--epochs", "2", "--batch-size", "4", "--size", "96", "128", "--folds", "3", "--only-folds", "1",
               "--overlays", "1", "--cache-dir", str(tmp_path / "cache")) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["synthetic_data"] is False and "SYNTHETIC" not in (out / "results.md").read_text()
    (run,) = results["runs"]
    assert run["test_images"] >= 4 and 0 <= run["test"]["dice"] <= 1 and 0 <= run["test"]["aupr"] <= 1


def test_checkpoints_are_written_at_most_every_checkpoint_seconds_and_at_the_end(tmp_path):
    config = tiny_config(epochs=3, checkpoint_seconds=1e9, cache_dir=str(tmp_path / "cache"))
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


# --- what must change a run's settings fingerprint, and what must not -------------------------------------------

@pytest.mark.parametrize("field, value", [
    ("seed", 1), ("size", (64, 96)), ("epochs", 5), ("lr", 1e-3), ("batch_size", 4), ("folds", 4),
    ("protocol", "official"), ("val_fraction", 0.2), ("degrees", 90.0), ("amp", True), ("data_root", "/data/idrid"),
    ("synthetic", {"n_train": 6, "n_test": 2, "size": (64, 96)}),
])
def test_the_fingerprint_changes_with_every_setting_that_changes_results(field, value):
    """A resumed run must never continue a run of another seed, size, length... (its checkpoints would mix)."""
    base = ExperimentConfig()
    assert getattr(base, field) != value
    assert ExperimentConfig(**{field: value}).fingerprint() != base.fingerprint()


@pytest.mark.parametrize("field, value", [
    ("device", "cpu"), ("workers", 4), ("overlays", -1), ("cache_dir", "/tmp/cache"), ("variants", ("ganet",)),
    ("lesions", ("HE",)), ("only_folds", (1,)), ("checkpoint_seconds", 0.0),
])
def test_the_fingerprint_ignores_what_may_change_between_resumed_runs(field, value):
    base = ExperimentConfig()
    assert getattr(base, field) != value
    assert ExperimentConfig(**{field: value}).fingerprint() == base.fingerprint()


# --- validation images stay out of training --------------------------------------------------------------------

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


class NumberedSquares(SegmentationSource):
    """A source that is not IDRiD: image k is filled with grey level k (so a batch tells which images it holds) and
    its one class, "square", is a centred square."""

    classes = ("square",)

    def __init__(self, count: int = 8, test: int = 2) -> None:
        self.names = [f"img{k}" for k in range(1, count + 1)]
        self.test = test

    def ids(self, split: str = "all") -> list[str]:
        return {"all": self.names, "train": self.names[:-self.test], "test": self.names[-self.test:]}[split]

    def dataset(self, classes, ids, size, cache_dir="auto") -> Dataset:
        return _NumberedItems(list(ids), size)


class _NumberedItems(Dataset):
    def __init__(self, ids, size):
        self.ids, self.size = ids, size

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, index):
        height, width = self.size
        number = int(self.ids[index][3:])
        mask = torch.zeros(1, height, width)
        mask[:, height // 4: 3 * height // 4, width // 4: 3 * width // 4] = 1
        return {"image": torch.full((3, height, width), number / 255), "mask": mask, "id": self.ids[index]}


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


def test_processes_under_torchrun_draw_disjoint_equal_shares_of_each_epoch():
    """The fast counterpart of the torchrun test: every process's share, without starting processes."""
    spec = train_module.RunSpec("baseline", "EX", 0, [f"img{k}" for k in range(7)], [], [])
    shares = []
    for rank in range(2):
        process = SimpleNamespace(config=tiny_config(), spec=spec, train_indices=torch.arange(7),
                                  context=Context(rank, 2))  # what epoch_order reads of a Trainer
        shares.append(train_module.Trainer.epoch_order(process, epoch=3).tolist())
    assert len(shares[0]) == len(shares[1]) == 4  # 7 images padded to 8, as DistributedSampler does
    assert sorted(set(shares[0]) | set(shares[1])) == list(range(7))
    assert len(set(shares[0]) & set(shares[1])) == 1  # only the one image repeated to even the shares
