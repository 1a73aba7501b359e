"""examples/idrid_ganet.py on your own images (--images/--masks): dry run, one-line errors, training and resume."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from tests.test_data_folders import H, W, make_folders
from tests.test_example_cli import example

TINY = ["--no-crop", "--size", "32", "48", "--epochs", "1", "--variants", "ganet", "--batch-size", "2"]


def test_dry_run_prints_the_summary_and_trains_nothing(capsys, tmp_path):
    images, masks = make_folders(tmp_path / "data")
    out = tmp_path / "out"
    code = example.main(["--images", str(images), "--masks", str(masks), "--dry-run", "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0
    assert "6 images" in printed and "EX: masks 6/6" in printed and "dry run: the data are readable" in printed
    assert not out.exists()


def test_bad_mask_in_a_dry_run_is_one_line_naming_the_file_with_exit_code_2(capsys, tmp_path):
    images, masks = make_folders(tmp_path / "data")
    Image.fromarray(np.zeros((H + 2, W), np.uint8)).save(masks / "EX" / "case0.png")
    code = example.main(["--images", str(images), "--masks", str(masks), "--dry-run"])
    error = capsys.readouterr().err
    assert code == 2
    assert error.startswith("error: mask '") and "case0.png" in error and error.count("\n") == 1


def test_folder_options_without_images_are_refused(capsys):
    assert example.main(["--masks", "somewhere", "--no-crop"]) == 2
    assert "--masks, --no-crop only apply with --images" in capsys.readouterr().err


def test_split_files_train_the_official_protocol_and_the_same_command_resumes(capsys, tmp_path):
    images, masks = make_folders(tmp_path / "data")
    (tmp_path / "train.txt").write_text("case0\ncase1\ncase2\ncase3\n")
    (tmp_path / "test.txt").write_text("case4\ncase5\n")
    out = tmp_path / "out"
    command = ["--images", str(images), "--masks", str(masks), "--protocol", "official", "--out", str(out)]
    command += ["--split-file", f"train={tmp_path / 'train.txt'}", "--split-file", f"test={tmp_path / 'test.txt'}"]
    command += TINY + ["--no-progress"]
    assert example.main(command) == 0
    metrics = json.loads((out / "runs" / "ganet" / "EX" / "fold1" / "metrics.json").read_text())
    assert "case4" in json.dumps(metrics) and (out / "results.md").exists()
    capsys.readouterr()
    assert example.main(command[:-1]) == 0  # with progress lines: the finished run is skipped
    assert "finished earlier" in capsys.readouterr().out
