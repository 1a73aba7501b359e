"""``group-attention predict`` end to end: a model trained briefly on the synthetic data, applied to held-back images
of another size; every output file checked; reruns, bad inputs, ground truth, and real IDRiD images."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from group_attention.fundus import inference_metadata, load_model, read_spec
from group_attention.fundus.cli import main
from group_attention.fundus.data import make_synthetic_idrid, read_lesion_mask
from group_attention.fundus.engine import quick_synthetic_config, run_experiment
from group_attention.inference import save_model
from group_attention.metrics import dice, sensitivity
from tests.test_inference import flood_fill_count

REPO = Path(__file__).resolve().parents[1]
TRAIN_SIZE = (32, 48)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A GANet trained for 2 epochs on 6 synthetic 64 x 96 images at 32 x 48, and 3 held-back 75 x 113 images."""
    root = tmp_path_factory.mktemp("trained")
    config = quick_synthetic_config(
        lesions=("EX",),
        variants=("ganet",),
        folds=2,
        only_folds=(0,),
        epochs=2,
        batch_size=2,
        checkpoint_seconds=0,
        keep_checkpoints="all",  # the last checkpoint too: both must describe themselves
        size=TRAIN_SIZE,
        overlays=0,
        synthetic={"n_train": 6, "n_test": 0, "size": (64, 96)},
        cache_dir=str(root / "cache"),
    )
    run_experiment(config, root / "run", progress=False)
    checkpoint = root / "run" / "runs" / "ganet" / "EX" / "fold1" / "checkpoint_best.pt"
    held_back = make_synthetic_idrid(root / "held-back", n_train=3, n_test=0, size=(75, 113), seed=7)
    images = held_back / "A. Segmentation" / "1. Original Images" / "a. Training Set"
    return {"checkpoint": checkpoint, "idrid": held_back, "images": images}


@pytest.fixture(scope="module")
def predicted(trained, tmp_path_factory):
    """The trained model applied to the held-back images, with their ground truth: one run shared by the tests
    that only read its outputs."""
    out = tmp_path_factory.mktemp("predicted") / "out"
    assert (
        predict_cli("--checkpoint", trained["checkpoint"], trained["images"], "--out", out, "--masks", trained["idrid"])
        == 0
    )
    return out


def predict_cli(*arguments) -> int:
    return main(["predict", "--quiet", *map(str, arguments)])


def read_rows(path: Path) -> list[dict]:
    with open(path) as stream:
        return list(csv.DictReader(stream))


def test_experiment_checkpoints_describe_themselves(trained):
    spec = read_spec(trained["checkpoint"])
    assert (spec.variant, spec.lesion, spec.size, spec.crop_fov, spec.threshold) == (
        "ganet",
        "EX",
        TRAIN_SIZE,
        True,
        0.5,
    )
    last = read_spec(trained["checkpoint"].with_name("checkpoint_last.pt"))
    assert last == spec


def test_predict_writes_every_output_at_the_original_size(predicted):
    out = predicted
    stems = ["IDRiD_01", "IDRiD_02", "IDRiD_03"]
    rows = read_rows(out / "summary.csv")
    assert [row["image"] for row in rows] == stems and {row["lesion"] for row in rows} == {"EX"}
    for stem, row in zip(stems, rows):
        with Image.open(out / "masks" / f"{stem}_EX.png") as mask_file:
            assert mask_file.format == "PNG" and mask_file.mode == "L" and mask_file.size == (113, 75)
            mask = np.asarray(mask_file)
        assert set(np.unique(mask)) <= {0, 255}
        with Image.open(out / "probabilities" / f"{stem}_EX.png") as probability_file:
            # 16-bit greyscale PNG (IHDR bit depth 16, colour type 0); Pillow 9.2 opens it in mode "I", 13 in "I;16"
            header = (out / "probabilities" / f"{stem}_EX.png").read_bytes()[:26]
            assert header[24:26] == bytes([16, 0]) and probability_file.mode.startswith("I")
            assert probability_file.size == (113, 75)
            probability = np.asarray(probability_file).astype(np.float64) / 65535
        # the mask is the thresholded probability (up to the 16-bit rounding of values at the threshold)
        decided = np.abs(probability - 0.5) > 1 / 65535
        np.testing.assert_array_equal((mask > 0)[decided], (probability >= 0.5)[decided])
        with Image.open(out / "overlays" / f"{stem}.png") as overlay:
            assert overlay.mode == "RGB" and overlay.size == (113, 75)
        assert int(row["width"]) == 113 and int(row["height"]) == 75
        assert int(row["lesion_pixels"]) == int((mask > 0).sum())
        assert int(row["components"]) == flood_fill_count(mask > 0, 8)
        assert float(row["fov_share"]) == pytest.approx(int(row["lesion_pixels"]) / int(row["fov_pixels"]), rel=1e-5)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["failed"] == [] and len(summary["images"]) == 3 and list(summary["metrics"]) == ["EX"]


def test_a_rerun_skips_the_images_already_done_and_new_settings_redo_them(trained, predicted, tmp_path, capsys):
    out = tmp_path / "out"
    shutil.copytree(predicted, out)
    arguments = ["--checkpoint", trained["checkpoint"], trained["images"], "--out", out, "--masks", trained["idrid"]]
    first = (out / "masks" / "IDRiD_01_EX.png").stat().st_mtime_ns
    capsys.readouterr()
    assert predict_cli(*arguments) == 0
    assert "0 predicted, 3 done earlier" in capsys.readouterr().out
    assert (out / "masks" / "IDRiD_01_EX.png").stat().st_mtime_ns == first
    assert (
        json.loads((out / "summary.json").read_text())["metrics"]
        == json.loads((predicted / "summary.json").read_text())["metrics"]
    )  # pooled over the skipped images too
    (out / "overlays" / "IDRiD_02.png").unlink()  # an incomplete image is redone
    predict_cli(*arguments)
    assert "1 predicted, 2 done earlier" in capsys.readouterr().out
    predict_cli(*arguments[:5], "--threshold", "0.3")  # other settings: everything is redone
    assert "3 predicted, 0 done earlier" in capsys.readouterr().out


def test_tile_mode_and_two_lesions(trained, tmp_path):
    he_model = load_model(trained["checkpoint"])
    save_model(tmp_path / "he.pt", he_model, inference_metadata("ganet", "HE", TRAIN_SIZE))
    out = tmp_path / "out"
    image = trained["images"] / "IDRiD_01.jpg"
    code = predict_cli(
        "--checkpoint",
        trained["checkpoint"],
        "--checkpoint",
        tmp_path / "he.pt",
        image,
        "--out",
        out,
        "--tile",
        "--tile-size",
        "48",
        "64",
        "--overlap",
        "0.5",
        "--batch-size",
        "3",
    )
    assert code == 0
    rows = read_rows(out / "summary.csv")
    assert [(row["image"], row["lesion"]) for row in rows] == [("IDRiD_01", "EX"), ("IDRiD_01", "HE")]
    for lesion in ("EX", "HE"):
        assert Image.open(out / "masks" / f"IDRiD_01_{lesion}.png").size == (113, 75)
    # the same weights under two lesion names give the same mask
    np.testing.assert_array_equal(
        np.asarray(Image.open(out / "masks" / "IDRiD_01_EX.png")),
        np.asarray(Image.open(out / "masks" / "IDRiD_01_HE.png")),
    )


def test_ground_truth_gives_the_papers_metrics_at_full_resolution(trained, predicted):
    out = predicted
    masks_folder = trained["idrid"] / "A. Segmentation" / "2. All Segmentation Groundtruths" / "a. Training Set"
    predictions, truths = [], []
    for row in read_rows(out / "summary.csv"):
        stem = row["image"]
        prediction = torch.from_numpy(np.asarray(Image.open(out / "masks" / f"{stem}_EX.png")) > 0)
        truth = torch.from_numpy(read_lesion_mask(masks_folder / "3. Hard Exudates" / f"{stem}_EX.tif"))
        assert float(row["dice"]) == pytest.approx(dice(prediction[None], truth[None]).item(), abs=1e-5)
        assert float(row["sensitivity"]) == pytest.approx(sensitivity(prediction[None], truth[None]).item(), abs=1e-5)
        assert 0 <= float(row["aupr"]) <= 1
        with Image.open(out / "truth_overlays" / f"{stem}_EX.png") as picture:
            pixels = np.asarray(picture)
        np.testing.assert_array_equal((pixels == (255, 255, 0)).all(-1), (prediction & truth).numpy())
        predictions.append(prediction)
        truths.append(truth)
    pooled = json.loads((out / "summary.json").read_text())["metrics"]["EX"]
    expected = dice(torch.stack(predictions), torch.stack(truths), per_image=False).item()
    assert pooled["dice"] == pytest.approx(expected, abs=1e-6) and pooled["num_images"] == 3


def test_ground_truth_from_a_plain_folder_matched_by_stem(trained, tmp_path):
    masks = tmp_path / "masks"
    masks.mkdir()
    truth = np.zeros((75, 113), bool)
    truth[10:20, 30:60] = True
    Image.fromarray(truth.astype(np.uint8) * 255).save(masks / "IDRiD_02_EX.png")
    out = tmp_path / "out"
    predict_cli("--checkpoint", trained["checkpoint"], trained["images"], "--out", out, "--masks", masks)
    rows = {row["image"]: row for row in read_rows(out / "summary.csv")}
    assert rows["IDRiD_01"]["dice"] == "" and rows["IDRiD_02"]["dice"] != ""
    prediction = torch.from_numpy(np.asarray(Image.open(out / "masks" / "IDRiD_02_EX.png")) > 0)
    assert float(rows["IDRiD_02"]["dice"]) == pytest.approx(
        dice(prediction[None], torch.from_numpy(truth)[None]).item(), abs=1e-5
    )


def test_bad_inputs_are_reported_and_the_batch_goes_on(trained, tmp_path, capsys):
    folder = tmp_path / "inputs"
    folder.mkdir()
    good = folder / "good.jpg"
    good.write_bytes((trained["images"] / "IDRiD_01.jpg").read_bytes())
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "text.jpg").write_text("this is not a photograph")
    (folder / "truncated.jpg").write_bytes(good.read_bytes()[:300])
    Image.fromarray(np.full((16, 16, 3), 128, np.uint8)).save(folder / "tiny.png")
    out = tmp_path / "out"
    code = predict_cli("--checkpoint", trained["checkpoint"], folder, tmp_path / "missing.png", "--out", out)
    assert code == 1
    errors = capsys.readouterr().err
    for name, reason in [
        ("empty.jpg", "cannot read image file"),
        ("text.jpg", "cannot read image file"),
        ("truncated.jpg", "cannot read image file"),
        ("tiny.png", "16x16 pixels"),
        ("missing.png", "does not exist"),
    ]:
        assert any(name in line and reason in line for line in errors.splitlines()), (name, errors)
    assert (out / "masks" / "good_EX.png").is_file()
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["failed"]) == 5 and [record["stem"] for record in summary["images"]] == ["good"]


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p.write_text("hello"), "is not a PyTorch checkpoint: it starts with b'hello'"),
        (
            lambda p: torch.save({"model": torch.nn.Linear(2, 2).state_dict(), "inference": {"format": "x"}}, p),
            "another kind",
        ),
    ],
)
def test_a_checkpoint_of_another_kind_is_a_clear_error(trained, tmp_path, capsys, make, message):
    path = tmp_path / "other.pt"
    make(path)
    assert predict_cli("--checkpoint", path, trained["images"], "--out", tmp_path / "out") == 2
    error = capsys.readouterr().err
    assert message in error and str(path) in error


def test_a_checkpoint_without_metadata_is_one_clear_error(trained, tmp_path, capsys):
    state = torch.load(trained["checkpoint"], weights_only=True)
    bare = tmp_path / "bare.pt"
    torch.save({"model": state["model"], "epoch": state["epoch"]}, bare)
    assert predict_cli("--checkpoint", bare, trained["images"], "--out", tmp_path / "a") == 2
    error = capsys.readouterr().err
    assert "no inference metadata" in error and str(bare) in error
    assert not (tmp_path / "a").exists()


def test_python_dash_m_runs_the_command_line(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "group_attention", "predict", "--help"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert result.returncode == 0 and "--checkpoint" in result.stdout and "--tile" in result.stdout


def test_the_console_script_is_declared():
    text = (REPO / "pyproject.toml").read_text()
    assert '[project.scripts]\ngroup-attention = "group_attention.fundus.cli:main"' in text


IDRID_ROOT = os.environ.get("GA_IDRID_ROOT")


@pytest.mark.skipif(not IDRID_ROOT, reason="set GA_IDRID_ROOT to an IDRiD root to predict on real images")
@pytest.mark.parametrize(
    "mode", [[], pytest.param(["--tile", "--tile-size", "384", "512", "--overlap", "0"], marks=pytest.mark.slow)]
)
def test_real_idrid_images_at_full_resolution_are_predicted_and_scored(trained, tmp_path, mode):
    from group_attention.fundus.data import discover_idrid

    layout = discover_idrid(IDRID_ROOT)
    image_id = layout.ids("all")[0]
    out = tmp_path / "out"
    code = predict_cli(
        "--checkpoint", trained["checkpoint"], layout.images[image_id], "--out", out, "--masks", IDRID_ROOT, *mode
    )
    assert code == 0
    (row,) = read_rows(out / "summary.csv")
    width, height = Image.open(layout.images[image_id]).size
    assert Image.open(out / "masks" / f"{image_id}_EX.png").size == (width, height)
    prediction = torch.from_numpy(np.asarray(Image.open(out / "masks" / f"{image_id}_EX.png")) > 0)
    truth = torch.from_numpy(read_lesion_mask(layout.masks["EX"][image_id]))
    assert float(row["dice"]) == pytest.approx(dice(prediction[None], truth[None]).item(), abs=1e-5)
    assert 0 <= float(row["aupr"]) <= 1 and int(row["fov_pixels"]) < width * height
