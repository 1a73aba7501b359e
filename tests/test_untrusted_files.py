"""Files from elsewhere (issue 25): a crafted checkpoint runs no code on any loading path, photographs are read as
viewers show them (EXIF orientation, 16-bit depth) or refused, a size limit of our own, one run per output folder,
the output folder checked before work, inputs never overwritten, symlinks keep their names, finite numbers, and
Ctrl-C in one line."""

from __future__ import annotations

import importlib
import json
import math
import os
import shutil
import signal
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import engine_runs
import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from group_attention.fundus import inference_metadata, load_model
from group_attention.fundus.cli import main
from group_attention.fundus.data.decode import MAX_PIXELS_ENV, read_fundus_image
from group_attention.fundus.engine import run_experiment
from group_attention.fundus.engine.io import load_checkpoint
from group_attention.fundus.engine.train import Trainer
from group_attention.fundus.safety import LOCK_NAME, lock_output_folder
from group_attention.inference import save_model
from group_attention.inference.checkpoint import UnsafeCheckpointError
from group_attention.models import UNet

REPO = Path(__file__).resolve().parents[1]
predict_module = importlib.import_module("group_attention.fundus.predict")  # the package exports the function
TINY = {"channels": (4, 8, 16), "encoder_attention": "cga", "skip": "sgau", "groups": 2, "decoder_convs": 1}
RUN = ("runs", "unet", "EX", "fold1")


class Payload:
    """What an attacker pickles: unpickling it calls ``exec``, which writes the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('the payload ran')",))


def craft(path: Path, marker: Path) -> Path:
    """A checkpoint-looking file whose unpickling runs code: the model weights beside a payload."""
    torch.save({"model": {"w": torch.ones(1)}, "epoch": 1, "payload": Payload(marker)}, path)
    return path


def tiny_config(tmp_path, **overrides):
    settings = dict(
        variants=("unet",),
        epochs=1,
        size=(16, 16),
        synthetic={"n_train": 4, "n_test": 2, "size": (64, 96)},
        overlays=0,
        keep_checkpoints="all",
        cache_dir=str(tmp_path / "cache"),
    )
    return engine_runs.tiny_config(**{**settings, **overrides})


@pytest.fixture
def checkpoint(tmp_path) -> Path:
    """An untrained tiny model saved as a fundus checkpoint (what it predicts does not matter here)."""
    path = tmp_path / "model.pt"
    save_model(path, UNet(3, 2, **TINY).eval(), inference_metadata(None, "EX", (32, 48), unet_kwargs=TINY))
    return path


def photograph(path: Path, size=(64, 48), seed=0) -> Path:
    """A small RGB photograph, ``size`` = (width, height)."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def predict_cli(*arguments) -> int:
    return main(["predict", "--quiet", *map(str, arguments)])


def one_error_line(capsys) -> str:
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in captured.err, captured.err
    return lines[0]


# ------------------------------------------------------------------------------- crafted checkpoints run no code


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A 1-epoch experiment that kept both checkpoints: the folder a crafted file is planted in."""
    folder = tmp_path_factory.mktemp("planted")
    config = tiny_config(folder)
    run_experiment(config, folder / "out", progress=False)
    return folder, config


@pytest.mark.parametrize("planted", ["checkpoint_last.pt", "checkpoint_best.pt"])
def test_a_crafted_checkpoint_in_a_run_folder_is_refused_on_resume_and_its_payload_never_runs(
    tmp_path, finished_run, planted
):
    folder, config = finished_run
    out = tmp_path / "out"
    shutil.copytree(folder / "out", out)
    out.joinpath(*RUN, "metrics.json").unlink()  # an unfinished run: a rerun resumes it
    marker = tmp_path / "marker"
    craft(out.joinpath(*RUN, planted), marker)
    with pytest.raises(UnsafeCheckpointError, match="is refused: it holds Python objects") as error:
        run_experiment(config, out, progress=False)
    assert str(out.joinpath(*RUN, planted)) in str(error.value)
    assert not marker.exists()
    assert out.joinpath(*RUN, planted).is_file()  # refused, not set aside as if it were damaged


def test_the_engine_loader_and_load_model_refuse_a_crafted_checkpoint(tmp_path):
    marker = tmp_path / "marker"
    path = craft(tmp_path / "checkpoint_best.pt", marker)
    for load in (load_checkpoint, load_model):
        with pytest.raises(UnsafeCheckpointError, match="could run code from the file"):
            load(path)
    assert not marker.exists()


def test_predict_refuses_a_crafted_checkpoint_in_one_line(tmp_path, capsys):
    marker = tmp_path / "marker"
    path = craft(tmp_path / "model.pt", marker)
    assert predict_cli("--checkpoint", path, photograph(tmp_path / "a.png"), "--out", tmp_path / "out") == 2
    line = one_error_line(capsys)
    assert str(path) in line and "is refused" in line
    assert not marker.exists()


def test_a_text_file_given_as_checkpoint_is_named_for_what_it_is(tmp_path, capsys):
    path = tmp_path / "model.pt"
    path.write_text("these are my notes\n")
    assert predict_cli("--checkpoint", path, photograph(tmp_path / "a.png"), "--out", tmp_path / "out") == 2
    line = one_error_line(capsys)
    assert str(path) in line and "is not a PyTorch checkpoint" in line and "weights_only" not in line


# ------------------------------------------------------------------------------------- images read as they are


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_a_16_bit_greyscale_photograph_is_scaled_by_its_range_not_clipped(tmp_path, suffix):
    values = np.linspace(0, 60000, 48 * 64).reshape(48, 64).astype(np.uint16)
    path = tmp_path / f"grey16{suffix}"
    Image.fromarray(values).save(path)
    opened_mode = Image.open(path).mode
    assert opened_mode in ("I;16", "I")  # Pillow < 9.3 opens 16-bit PNGs as 32-bit "I"
    image = read_fundus_image(path)
    pixels = np.asarray(image)
    assert image.mode == "RGB" and image.size == (64, 48)
    np.testing.assert_array_equal(pixels[..., 0], np.round(values * (255 / 65535)).astype(np.uint8))
    assert (pixels == 255).mean() == 0  # convert("RGB") made 70% of such a photograph 255
    assert image.info["decoded"] == {"mode": opened_mode, "exif_orientation": 1}


def test_a_12_bit_greyscale_photograph_is_scaled_by_12_bits(tmp_path):
    values = np.linspace(0, 4095, 32 * 40).reshape(32, 40).astype(np.uint16)
    Image.fromarray(values).save(tmp_path / "grey12.png")
    pixels = np.asarray(read_fundus_image(tmp_path / "grey12.png"))[..., 1]
    assert pixels.max() == 255 and pixels.min() == 0


def test_a_mode_that_cannot_be_read_faithfully_is_refused_naming_file_and_mode(tmp_path):
    path = tmp_path / "lab.tif"
    Image.new("LAB", (40, 40)).save(path)
    with pytest.raises(OSError, match="mode LAB") as error:
        read_fundus_image(path)
    assert str(path) in str(error.value)


def exif_rotated(path: Path, orientation: int = 6) -> np.ndarray:
    """A JPEG whose stored pixels are 64 wide and 40 high, with EXIF ``orientation``; returns the stored pixels."""
    pixels = np.zeros((40, 64, 3), np.uint8)
    pixels[:, :16] = 255  # a bright band on the left of the stored pixels: at the top once turned
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = orientation
    image.save(path, exif=exif, quality=95)
    return pixels


def test_the_exif_orientation_is_applied_as_viewers_show_the_photograph(tmp_path):
    path = tmp_path / "phone.jpg"
    exif_rotated(path)
    image = read_fundus_image(path)
    with Image.open(path) as opened:
        expected = np.asarray(ImageOps.exif_transpose(opened).convert("RGB"))
    assert image.size == (40, 64)
    np.testing.assert_array_equal(np.asarray(image), expected)
    assert image.info["decoded"]["exif_orientation"] == 6


def test_predict_outputs_align_with_the_upright_photograph_and_the_record_says_so(tmp_path, checkpoint):
    path = tmp_path / "phone.jpg"
    exif_rotated(path)
    out = tmp_path / "out"
    assert predict_cli("--checkpoint", checkpoint, path, "--out", out) == 0
    with Image.open(out / "masks" / "phone_EX.png") as mask, Image.open(out / "overlays" / "phone.png") as overlay:
        assert mask.size == overlay.size == (40, 64)
    record = json.loads((out / "records" / "phone.json").read_text())
    assert (record["width"], record["height"]) == (40, 64)
    assert record["decoded"] == {"mode": "RGB", "exif_orientation": 6}


# ------------------------------------------------------------------------------------------ a size limit of ours


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A tiny PNG file that declares ``width`` x ``height`` pixels (its data are never reached)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\0" * 64)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


def test_a_photograph_over_the_pixel_limit_is_refused_before_decoding(tmp_path, monkeypatch):
    path = png_header_only(tmp_path / "bomb.png", 10000, 10000)
    with pytest.raises(OSError, match="declares 10000x10000 = 100,000,000 pixels, more than the limit") as error:
        read_fundus_image(path)
    assert str(path) in str(error.value)
    monkeypatch.setenv(MAX_PIXELS_ENV, str(10**9))  # above Pillow's limit: its warning is an error, not a warning
    with pytest.raises(OSError, match="decompression-bomb limit"):
        read_fundus_image(path)


def test_max_pixels_sets_the_limit_of_predict(tmp_path, checkpoint, capsys):
    image = photograph(tmp_path / "a.png", size=(64, 48))
    assert predict_cli("--checkpoint", checkpoint, image, "--out", tmp_path / "out", "--max-pixels", 1000) == 1
    assert "more than the limit of 1,000" in capsys.readouterr().err
    assert MAX_PIXELS_ENV not in os.environ  # the option lasts for the command only


# ------------------------------------------------------------------------------------------ one run per folder

HOLD_LOCK = """
import sys, time
from group_attention.fundus.safety import lock_output_folder
with lock_output_folder(sys.argv[1], "the test's holder"):
    print("locked", flush=True)
    time.sleep(120)
"""


def test_a_second_run_into_a_locked_folder_is_refused_naming_the_holder(tmp_path, checkpoint, capsys):
    out = tmp_path / "out"
    out.mkdir()
    env = dict(os.environ, PYTHONPATH=str(REPO))
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(out)], stdout=subprocess.PIPE, text=True, cwd=REPO, env=env
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        experiment = subprocess.run(
            [sys.executable, str(engine_runs.EXAMPLE), "--no-progress", "--out", str(out), "--epochs", "1"],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=REPO,
            env=dict(env, GA_CACHE_DIR=str(tmp_path / "cache")),
        )
        assert experiment.returncode == 2, experiment.stderr
        lines = experiment.stderr.strip().splitlines()
        assert len(lines) == 1 and f"in use by process {holder.pid}" in lines[0], experiment.stderr
        assert not (out / "config.json").exists() and not (out / "runs").exists()

        assert predict_cli("--checkpoint", checkpoint, photograph(tmp_path / "a.png"), "--out", out) == 2
        line = one_error_line(capsys)
        assert f"in use by process {holder.pid}" in line and "another --out" in line
        assert not (out / "masks").exists()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert (out / LOCK_NAME).read_text().startswith(f"{holder.pid}\n")  # the dead process's stale lock file
    with lock_output_folder(out) as lock:  # recognised as stale (the OS released it) and taken over
        assert lock.read_text().startswith(f"{os.getpid()}\n")
    assert not (out / LOCK_NAME).exists()  # released on exit


# --------------------------------------------------------------------------------------- check before the work


@pytest.mark.parametrize("where", ["a file", "under a file", "not writable"])
def test_an_unusable_out_is_one_line_before_any_model_or_image(tmp_path, checkpoint, capsys, monkeypatch, where):
    (tmp_path / "file").write_text("")
    out = {"a file": tmp_path / "file", "under a file": tmp_path / "file" / "out", "not writable": tmp_path}[where]
    if where == "not writable":  # as root (CI containers) no folder is read-only: make the access check say so
        real_access = os.access
        monkeypatch.setattr(os, "access", lambda path, mode: Path(path) != tmp_path and real_access(path, mode))
    monkeypatch.setattr(predict_module, "read_image", lambda path: pytest.fail("an image was read"))
    monkeypatch.setattr("group_attention.fundus.checkpoint.load_model", lambda *a, **k: pytest.fail("loaded"))
    assert predict_cli("--checkpoint", checkpoint, photograph(tmp_path / "a.png"), "--out", out) == 2
    line = one_error_line(capsys)
    assert "--out" in line and str(out) in line


def test_an_input_inside_the_output_folders_sub_folders_is_refused_not_overwritten(tmp_path, checkpoint, capsys):
    out = tmp_path / "out"
    (out / "overlays").mkdir(parents=True)
    image = photograph(out / "overlays" / "patient.png")
    content = image.read_bytes()
    assert predict_cli("--checkpoint", checkpoint, image, "--out", out) == 2
    line = one_error_line(capsys)
    assert str(image) in line and "overlays/" in line
    assert image.read_bytes() == content


def test_a_symlinked_input_keeps_the_name_given(tmp_path, checkpoint):
    base = photograph(tmp_path / "base.png")
    link = tmp_path / "inputs" / "my_patient.png"
    link.parent.mkdir()
    link.symlink_to(base)
    out = tmp_path / "out"
    assert predict_cli("--checkpoint", checkpoint, link.parent, "--out", out) == 0
    assert (out / "masks" / "my_patient_EX.png").is_file() and (out / "overlays" / "my_patient.png").is_file()
    assert not list(out.rglob("base*"))


# ------------------------------------------------------------------------------------------------------- numbers


@pytest.mark.parametrize("value", ["inf", "nan", "-inf"])
def test_lr_inf_or_nan_is_refused_at_once(capsys, value):
    from tests.test_example import example

    with pytest.raises(SystemExit) as exit_:
        example.main(["--no-progress", f"--lr={value}"])
    assert exit_.value.code == 2
    error = capsys.readouterr().err
    assert "--lr" in error and "finite" in error


@pytest.mark.parametrize("option", ["--threshold", "--overlap"])
def test_predict_float_options_refuse_inf_and_nan(tmp_path, checkpoint, capsys, option):
    with pytest.raises(SystemExit) as exit_:
        predict_cli("--checkpoint", checkpoint, tmp_path, "--out", tmp_path / "out", option, "nan")
    assert exit_.value.code == 2
    assert option in capsys.readouterr().err


def test_a_non_finite_training_loss_stops_the_run_keeping_the_last_good_checkpoint(tmp_path, monkeypatch):
    config = tiny_config(tmp_path, epochs=3, checkpoint_seconds=0)
    real_epoch = Trainer.train_epoch

    def diverging(self, epoch):
        loss, dice = real_epoch(self, epoch)
        return (math.nan, dice) if epoch == 1 else (loss, dice)

    monkeypatch.setattr(Trainer, "train_epoch", diverging)
    with pytest.raises(ValueError, match=r"training loss became nan in epoch 2: .*lower --lr") as error:
        run_experiment(config, tmp_path / "out", progress=False)
    assert "checkpoint of epoch 1 is kept" in str(error.value)
    assert load_checkpoint(tmp_path.joinpath("out", *RUN, "checkpoint_last.pt"))["epoch"] == 1


# ------------------------------------------------------------------------------------------------------- Ctrl-C


def test_ctrl_c_ends_predict_with_one_line_and_exit_130(tmp_path, checkpoint, capsys, monkeypatch):
    folder = tmp_path / "inputs"
    folder.mkdir()
    for name in ("a", "b", "c"):
        photograph(folder / f"{name}.png")
    real_one = predict_module._predict_one

    def interrupted(path, *args, **kwargs):
        if path.stem == "b":
            raise KeyboardInterrupt
        return real_one(path, *args, **kwargs)

    monkeypatch.setattr(predict_module, "_predict_one", interrupted)
    out = tmp_path / "out"
    assert predict_cli("--checkpoint", checkpoint, folder, "--out", out) == 130
    line = one_error_line(capsys)
    assert "interrupted: 1 image(s)" in line and "rerun the same command to resume" in line
    assert not (out / LOCK_NAME).exists()
