"""examples/idrid_ganet.py as a person meets it: every mistake ends in one line naming the option or file with exit
code 2 and no traceback, and the corrected command then runs in the same --out."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest
import torch

from group_attention.fundus.data import make_synthetic_idrid

REPO = Path(__file__).resolve().parents[1]


def load_example():
    spec = importlib.util.spec_from_file_location("idrid_ganet_example", REPO / "examples" / "idrid_ganet.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


example = load_example()


@pytest.fixture(scope="module")
def pristine_tree(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("idrid") / "tree"
    make_synthetic_idrid(root, n_train=4, n_test=2, size=(64, 96), mask_encoding="palette")
    return root


@pytest.fixture
def tree(pristine_tree, tmp_path) -> Path:
    copy = tmp_path / "data"
    shutil.copytree(pristine_tree, copy)
    return copy


def tiny(data: Path, out: Path, tmp_path: Path, *extra: str) -> list[str]:
    """A run of a few seconds: one U-Net fold, one epoch, 16 x 16 images."""
    return [
        "--data-root",
        str(data),
        "--out",
        str(out),
        "--lesion",
        "EX",
        "--variants",
        "unet",
        "--folds",
        "2",
        "--only-folds",
        "1",
        "--epochs",
        "1",
        "--batch-size",
        "2",
        "--size",
        "16",
        "16",
        "--overlays",
        "0",
        "--checkpoint-seconds",
        "0",
        "--no-progress",
        "--cache-dir",
        str(tmp_path / "cache"),
        *extra,
    ]


def fails_cleanly(capsys, argv: list[str], *expected: str) -> str:
    """Run main(argv); assert exit code 2 and one stderr line holding every ``expected`` text, no traceback."""
    capsys.readouterr()
    assert example.main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("error: ") and "Traceback" not in captured.err + captured.out
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]


def runs(capsys, argv: list[str]) -> None:
    assert example.main(argv) == 0, capsys.readouterr().err


def mask_path(tree: Path, split: str, image_id: str) -> Path:
    folder = {"train": "a. Training Set", "test": "b. Testing Set"}[split]
    lesion_folder = tree / "A. Segmentation" / "2. All Segmentation Groundtruths" / folder / "3. Hard Exudates"
    return lesion_folder / f"{image_id}_EX.tif"


def image_path(tree: Path, split: str, image_id: str) -> Path:
    folder = {"train": "a. Training Set", "test": "b. Testing Set"}[split]
    return tree / "A. Segmentation" / "1. Original Images" / folder / f"{image_id}.jpg"


def test_too_many_folds_is_one_line_and_leaves_the_folder_free_for_the_corrected_command(capsys, tree, tmp_path):
    out = tmp_path / "out"
    out.mkdir()  # a command of other settings stopped before training: its config.json binds nothing
    (out / "config.json").write_text(json.dumps({"fingerprint": "0123456789abcdef", "config": {}}))
    bad = tiny(tree, out, tmp_path)
    bad[bad.index("--folds") + 1] = "100"
    bad = bad[: bad.index("--only-folds")] + bad[bad.index("--only-folds") + 2 :]
    fails_cleanly(capsys, bad, "--folds", "at most the number of images (6)", "100")
    assert json.loads((out / "config.json").read_text())["fingerprint"] == "0123456789abcdef"  # not rewritten
    runs(capsys, tiny(tree, out, tmp_path))
    assert json.loads((out / "config.json").read_text())["config"]["folds"] == 2


@pytest.mark.parametrize(
    "size, nearest",
    [
        (("7", "7"), "nearest valid: 16 16"),
        (("100000", "100000"), "nearest valid: 8192 8192"),
        (("8", "64"), "nearest valid: 16 64"),
    ],
)
def test_sizes_the_network_cannot_take_are_refused_with_the_nearest_valid_one(capsys, tree, tmp_path, size, nearest):
    argv = tiny(tree, tmp_path / "out", tmp_path)
    argv[argv.index("--size") + 1 : argv.index("--size") + 3] = size
    fails_cleanly(capsys, argv, "--size", nearest)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "device", ["mps", "meta", pytest.param("cuda:7" if torch.cuda.is_available() else "cuda", id="nvidia")]
)
def test_an_unavailable_device_is_one_line(capsys, tree, tmp_path, device):
    fails_cleanly(capsys, tiny(tree, tmp_path / "out", tmp_path, "--device", device), "--device", repr(device))
    assert not (tmp_path / "out").exists()


def test_an_output_folder_that_is_a_file_is_one_line(capsys, tree, tmp_path):
    blocker = tmp_path / "out"
    blocker.write_text("not a folder")
    fails_cleanly(capsys, tiny(tree, blocker, tmp_path), "--out", str(blocker))
    fails_cleanly(capsys, tiny(tree, blocker / "sub", tmp_path), "--out", str(blocker))
    assert blocker.read_text() == "not a folder"


def test_a_truncated_jpeg_names_the_file(capsys, tree, tmp_path):
    path = image_path(tree, "train", "IDRiD_02")
    original = path.read_bytes()
    path.write_bytes(original[: len(original) // 3])
    fails_cleanly(capsys, tiny(tree, tmp_path / "out", tmp_path), str(path))


def test_a_zero_byte_mask_names_the_file(capsys, tree, tmp_path):
    path = mask_path(tree, "test", "IDRiD_05")
    path.write_bytes(b"")
    fails_cleanly(capsys, tiny(tree, tmp_path / "out", tmp_path), str(path))


def test_a_half_size_mask_names_the_file(capsys, tree, tmp_path):
    from PIL import Image

    path = mask_path(tree, "train", "IDRiD_01")
    with Image.open(path) as mask:
        mask.resize((mask.width // 2, mask.height // 2)).save(path)
    fails_cleanly(capsys, tiny(tree, tmp_path / "out", tmp_path), str(path))


def test_a_missing_ground_truth_folder_names_it(capsys, tree, tmp_path):
    folder = mask_path(tree, "test", "IDRiD_05").parent
    shutil.move(folder, tmp_path / "aside")
    fails_cleanly(capsys, tiny(tree, tmp_path / "out", tmp_path), "'EX'", "3. Hard Exudates", "b. Testing Set")


def test_an_empty_ground_truth_folder_is_an_error_naming_it_not_a_results_table(capsys, tree, tmp_path):
    folder = mask_path(tree, "test", "IDRiD_05").parent
    shutil.move(folder, tmp_path / "aside")
    folder.mkdir()
    line = fails_cleanly(capsys, tiny(tree, tmp_path / "out", tmp_path), str(folder))
    assert "no mask" in line
    assert not (tmp_path / "out").exists()  # refused before anything was written
    folder.rmdir()
    shutil.move(tmp_path / "aside", folder)  # the data repaired, the same command runs
    runs(capsys, tiny(tree, tmp_path / "out", tmp_path))
    assert (tmp_path / "out" / "results.md").exists()


def test_blank_masks_everywhere_are_an_error_naming_the_folders(capsys, tree, tmp_path):
    from PIL import Image

    paths = [
        mask_path(tree, split, image_id)
        for split, ids in (("train", range(1, 5)), ("test", range(5, 7)))
        for image_id in (f"IDRiD_{i:02d}" for i in ids)
    ]
    for path in paths:
        with Image.open(path) as mask:
            Image.new(mask.mode, mask.size, 0).save(path)
    line = fails_cleanly(capsys, tiny(tree, tmp_path / "out", tmp_path), "no EX mask pixel", "3. Hard Exudates")
    assert "a. Training Set" in line and "b. Testing Set" in line


def test_the_traceback_is_shown_with_debug_or_ga_debug(capsys, tree, tmp_path, monkeypatch):
    argv = tiny(tree, tmp_path / "out", tmp_path, "--device", "meta")
    with pytest.raises(ValueError, match="meta"):
        example.main([*argv, "--debug"])
    monkeypatch.setenv("GA_DEBUG", "1")
    with pytest.raises(ValueError, match="meta"):
        example.main(argv)


def test_ctrl_c_says_where_it_stopped_and_the_same_command_resumes(capsys, tree, tmp_path, monkeypatch):
    from group_attention.fundus.engine.train import Trainer

    argv = tiny(tree, tmp_path / "out", tmp_path)
    argv[argv.index("--epochs") + 1] = "3"
    original = Trainer.train_epoch

    def interrupted_in_the_third_epoch(self, epoch):
        if epoch == 2:
            raise KeyboardInterrupt
        return original(self, epoch)

    monkeypatch.setattr(Trainer, "train_epoch", interrupted_in_the_third_epoch)
    capsys.readouterr()
    assert example.main(argv) == 130
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    assert captured.err.strip() == ("interrupted after epoch 2 of unet EX fold 1; rerun the same command to resume")
    monkeypatch.setattr(Trainer, "train_epoch", original)
    runs(capsys, argv)
    log = (tmp_path / "out" / "runs" / "unet" / "EX" / "fold1" / "log.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in log[1:]] == ["1", "2", "3"]


def test_help_shows_the_defaults_of_the_mode_in_use(capsys):
    with pytest.raises(SystemExit):
        example.parse_arguments(["--help"])
    demo = capsys.readouterr().out
    with pytest.raises(SystemExit):
        example.parse_arguments(["--data-root", "anywhere", "--help"])
    paper = capsys.readouterr().out
    squashed_demo, squashed_paper = " ".join(demo.split()), " ".join(paper.split())
    assert "training epochs (default: 20;" in squashed_demo and "(default: 96 128;" in squashed_demo
    assert "training epochs (default: 300;" in squashed_paper and "(default: 384 512;" in squashed_paper
    assert "Adam learning rate (default: 0.002;" in squashed_demo
    assert "Adam learning rate (default: 0.0001;" in squashed_paper


def test_a_validation_dice_of_zero_prints_as_a_number_not_a_dash(capsys, tree, tmp_path, monkeypatch):
    from group_attention.fundus.engine import train

    evaluate_lesions = train.evaluate_lesions

    def zero_on_validation(*args, exact_aupr=False, **kwargs):  # the test pass (exact AUPR) scores as usual
        return evaluate_lesions(*args, exact_aupr=True, **kwargs) if exact_aupr else [{"dice": 0.0, "aupr": 0.0}]

    monkeypatch.setattr(train, "evaluate_lesions", zero_on_validation)
    argv = [a for a in tiny(tree, tmp_path / "out", tmp_path) if a != "--no-progress"]
    assert example.main(argv) == 0
    out = capsys.readouterr().out
    assert "val dice 0.0000" in out and "val dice -" not in out
    assert "run 1 of 1 (unet, EX, fold 1)" in out
