"""Inference building blocks: checkpoints (the core's and the fundus application's load_model), the fundus sliding
window, connected components."""

from __future__ import annotations

import math
from collections import deque

import numpy as np
import pytest
import torch
from torch import nn

import group_attention
from group_attention import UNet, build_variant, load_model
from group_attention.fundus import count_components, inference_metadata, read_spec, sliding_window_probabilities
from group_attention.inference import CheckpointError, gaussian_weight, load_checkpoint, save_model, window_starts

TINY = {"channels": (4, 8, 16), "encoder_attention": "cga", "skip": "sgau", "groups": 2, "decoder_convs": 1}


def tiny_model_and_metadata(lesion: str = "EX", size=(32, 48)):
    metadata = inference_metadata(None, lesion, size, unet_kwargs=TINY)
    return UNet(3, 2, **TINY).eval(), metadata


# ---------------------------------------------------------------------------------------------------- checkpoints


def test_a_saved_model_loads_ready_for_inference_with_its_settings(tmp_path):
    model, metadata = tiny_model_and_metadata("HE", (40, 56))
    save_model(tmp_path / "m.pt", model, metadata)
    loaded = load_model(tmp_path / "m.pt")
    assert not loaded.training
    spec = loaded.inference_spec
    assert (spec.lesion, spec.size, spec.threshold, spec.crop_fov) == ("HE", (40, 56), 0.5, True)
    assert spec.library_version == group_attention.__version__ and spec.format_version == 1
    x = torch.rand(2, 3, 40, 56)
    torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)


def test_load_model_is_exported_from_the_package():
    assert "load_model" in group_attention.__all__ and group_attention.load_model is load_model


def test_a_bare_state_dict_is_refused_naming_the_file_and_what_it_lacks(tmp_path):
    path = tmp_path / "checkpoint_best.pt"
    torch.save({"model": build_variant("baseline", 3, 2).state_dict(), "epoch": 3}, path)
    for read in (load_model, read_spec):
        with pytest.raises(CheckpointError, match="no inference metadata") as error:
            read(path)
        assert str(path) in str(error.value) and "load_state_dict" in str(error.value)


def test_the_core_loader_rebuilds_the_model_and_returns_the_whole_metadata(tmp_path):
    model, metadata = tiny_model_and_metadata("HE", (40, 56))
    save_model(tmp_path / "m.pt", model, metadata)
    loaded, read = load_checkpoint(tmp_path / "m.pt")
    assert read == metadata and not loaded.training and not hasattr(loaded, "inference_spec")
    x = torch.rand(1, 3, 24, 40)
    torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)


def _torch_save(path, obj):
    torch.save(obj, path)
    return path


class _Custom:
    pass


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p.write_text("not a checkpoint"), "is not a PyTorch checkpoint: it starts with b'not a ch"),
        (lambda p: p.write_bytes(b""), "is not a PyTorch checkpoint"),
        (lambda p: p.write_bytes(b"PK\x03\x04 cut"), "torch.load cannot read it"),
        (lambda p: _torch_save(p, [1, 2, 3]), "holds a list"),
        (lambda p: _torch_save(p, {"optimizer": {"lr": 1.0}}), "no model weights"),
        (lambda p: _torch_save(p, _Custom()), "is refused: it holds Python objects beyond tensors"),
        (
            lambda p: _torch_save(p, {"model": {"w": torch.ones(1)}, "inference": {"format": "other-tool/classifier"}}),
            "another kind",
        ),
    ],
)
def test_a_file_that_is_not_a_model_checkpoint_is_refused_naming_it(tmp_path, make, message):
    path = tmp_path / "file.pt"
    make(path)
    with pytest.raises(CheckpointError, match=message) as error:
        load_model(path)
    assert str(path) in str(error.value)


def test_weights_of_another_model_are_refused_naming_the_file(tmp_path):
    metadata = inference_metadata("ganet", "EX", (64, 64))
    path = _torch_save(tmp_path / "linear.pt", {"model": nn.Linear(3, 2).state_dict(), "inference": metadata})
    with pytest.raises(CheckpointError, match="do not fit ganet") as error:
        load_model(path)
    assert str(path) in str(error.value)


def test_a_newer_format_version_is_refused_with_upgrade_advice(tmp_path):
    model, metadata = tiny_model_and_metadata()
    metadata = {**metadata, "format_version": 99, "library_version": "9.0"}
    _torch_save(tmp_path / "new.pt", {"model": model.state_dict(), "inference": metadata})
    with pytest.raises(CheckpointError, match=r"format version 99.*upgrade"):
        load_model(tmp_path / "new.pt")


def test_the_threshold_can_be_overridden_and_is_checked(tmp_path):
    model, metadata = tiny_model_and_metadata("EX")
    save_model(tmp_path / "m.pt", model, metadata)
    with pytest.raises(ValueError, match="threshold must be in"):
        load_model(tmp_path / "m.pt", threshold=1.5)
    assert load_model(tmp_path / "m.pt", threshold=0.25).inference_spec.threshold == 0.25


def test_a_missing_checkpoint_is_a_file_not_found_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.pt"):
        load_model(tmp_path / "nothing.pt")


# ---------------------------------------------------------------------------------------------------- sliding window


@pytest.mark.parametrize(
    "length, window, overlap, expected",
    [
        (10, 4, 0.25, [0, 3, 6]),
        (100, 48, 0.25, [0, 36, 52]),  # step int(48 * 0.75) = 36; the last flush with the end
        (100, 48, 0.0, [0, 48, 52]),
        (30, 48, 0.25, [0]),
        (48, 48, 0.5, [0]),
    ],
)
def test_window_starts(length, window, overlap, expected):
    assert window_starts(length, window, overlap) == expected


def test_gaussian_weight_is_the_written_out_gaussian_with_a_floor():
    weight = gaussian_weight((9, 16)).double()
    for row, col in [(0, 0), (4, 7), (2, 13), (8, 15)]:
        dy, dx = row - 4, col - 7.5
        value = math.exp(-(dy**2) / (2 * (0.125 * 9) ** 2)) * math.exp(-(dx**2) / (2 * (0.125 * 16) ** 2))
        value /= math.exp(-0.25 / (2 * 2.0**2))  # the maximum: centre row, columns 7 and 8 at distance 0.5
        assert weight[row, col].item() == pytest.approx(max(value, 1e-3), rel=1e-6)


class RedThreshold(nn.Module):
    """A pointwise model: lesion logit 40 * (red - 0.5), background 0."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 1)
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.bias.copy_(torch.tensor([0.0, -20.0]))
            self.conv.weight[1, 0] = 40.0

    def forward(self, x):
        return self.conv(x)


class TileMean(nn.Module):
    """A model whose output depends on the whole tile: the tile's mean brightness everywhere (as a probability)."""

    def __init__(self) -> None:
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        mean = x.mean(dim=(1, 2, 3), keepdim=True).clamp(1e-4, 1 - 1e-4)
        logit = torch.log(mean / (1 - mean)).expand(-1, 1, *x.shape[2:])
        return torch.cat([torch.zeros_like(logit), logit], 1) + self.anchor


@pytest.mark.parametrize(
    "size, tile, overlap, batch_size",
    [((37, 53), (16, 24), 0.25, 3), ((64, 64), (32, 32), 0.0, 1), ((33, 101), (20, 20), 0.5, 4)],
)
def test_sliding_window_of_a_pointwise_model_equals_the_model_on_the_whole_image(size, tile, overlap, batch_size):
    image = torch.randint(0, 256, (3, *size), dtype=torch.uint8)
    model = RedThreshold()
    expected = torch.sigmoid(40 * (image[0].double() / 255 - 0.5)).float()
    result = sliding_window_probabilities(model, image, tile, overlap=overlap, batch_size=batch_size)
    torch.testing.assert_close(result, expected, rtol=0, atol=2e-6)


def test_sliding_window_blends_overlapping_tiles_with_the_gaussian_weights():
    image = torch.randint(0, 256, (3, 30, 41), dtype=torch.uint8)
    tile, overlap = (16, 20), 0.3
    result = sliding_window_probabilities(TileMean(), image, tile, overlap=overlap, batch_size=2).double()
    # float64 brute force: sum over tiles of weight * tile mean, divided by the summed weights
    numerator, denominator = torch.zeros(30, 41, dtype=torch.float64), torch.zeros(30, 41, dtype=torch.float64)
    rows = [0, 11, 14]  # step int(16 * 0.7) = 11, last at 30 - 16
    cols = [0, 14, 21]  # step int(20 * 0.7) = 14, last at 41 - 20
    ys, xs = torch.arange(16, dtype=torch.float64), torch.arange(20, dtype=torch.float64)
    gauss = torch.exp(-((ys - 7.5)[:, None] ** 2) / (2 * 2.0**2)) * torch.exp(-((xs - 9.5)[None] ** 2) / (2 * 2.5**2))
    gauss = (gauss / gauss.max()).clamp_min(1e-3)
    for top in rows:
        for left in cols:
            mean = image[:, top : top + 16, left : left + 20].double().div(255).mean()
            numerator[top : top + 16, left : left + 20] += gauss * mean
            denominator[top : top + 16, left : left + 20] += gauss
    torch.testing.assert_close(result, numerator / denominator, rtol=0, atol=1e-5)


def test_sliding_window_refuses_a_bad_overlap():
    with pytest.raises(ValueError, match="overlap"):
        sliding_window_probabilities(RedThreshold(), torch.zeros(3, 8, 8), (4, 4), overlap=1.0)


# ---------------------------------------------------------------------------------------------------- components


def flood_fill_count(mask: np.ndarray, connectivity: int) -> int:
    """Reference: breadth-first flood fill over pixels."""
    seen = np.zeros_like(mask, dtype=bool)
    steps = [(-1, 0), (1, 0), (0, -1), (0, 1)]
    if connectivity == 8:
        steps += [(-1, -1), (-1, 1), (1, -1), (1, 1)]
    count = 0
    for start in zip(*np.nonzero(mask)):
        if seen[start]:
            continue
        count += 1
        queue = deque([start])
        seen[start] = True
        while queue:
            y, x = queue.popleft()
            for dy, dx in steps:
                ny, nx = y + dy, x + dx
                if 0 <= ny < mask.shape[0] and 0 <= nx < mask.shape[1] and mask[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    queue.append((ny, nx))
    return count


def test_components_of_a_hand_made_mask():
    mask = np.array(
        [
            [1, 1, 0, 0, 0, 0, 1, 0, 1],  # a U whose arms meet only in the last row; a lone pixel top right
            [0, 0, 1, 0, 0, 0, 1, 0, 1],  # (0, 1)-(1, 2): diagonal touch
            [0, 0, 0, 0, 0, 0, 1, 0, 1],
            [0, 1, 0, 0, 0, 0, 1, 1, 1],
            [0, 0, 0, 0, 0, 0, 0, 0, 0],
            [1, 0, 1, 0, 1, 0, 0, 0, 0],  # three pixels touching nothing
        ],
        dtype=bool,
    )
    # 8-connected: {(0,0),(0,1),(1,2)}, the U, (3,1), and the three in the last row = 6
    assert count_components(mask, 8) == 6
    # 4-connected: the diagonal pair splits into {(0,0),(0,1)} and {(1,2)} = 7
    assert count_components(mask, 4) == 7
    assert count_components(np.zeros((5, 5), bool)) == 0
    assert count_components(np.ones((5, 5), bool)) == 1


@pytest.mark.parametrize("seed", range(4))
def test_components_match_a_flood_fill(seed):
    rng = np.random.default_rng(seed)
    mask = rng.random((40, 57)) < 0.35
    for connectivity in (4, 8):
        assert count_components(mask, connectivity) == flood_fill_count(mask, connectivity)


def test_components_refuse_bad_arguments():
    with pytest.raises(ValueError, match="connectivity"):
        count_components(np.zeros((3, 3)), 6)
    with pytest.raises(ValueError, match="2D"):
        count_components(np.zeros((3, 3, 3)))


# ---------------------------------------------------------------------------------------------------- one path


def test_the_experiments_evaluation_runs_the_prediction_forward_pass(monkeypatch):
    import importlib

    from group_attention.fundus.engine import LesionArrays, evaluate

    evaluate_module = importlib.import_module("group_attention.fundus.engine.evaluate")
    from group_attention.inference import lesion_probabilities

    calls = []

    def spy(model, images, **kwargs):
        calls.append(images.shape)
        return lesion_probabilities(model, images, **kwargs)

    monkeypatch.setattr(evaluate_module, "lesion_probabilities", spy)
    arrays = LesionArrays(
        ["a", "b"],
        torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8),
        torch.zeros(2, 1, 16, 16, dtype=torch.uint8),
    )
    evaluate(RedThreshold(), arrays, torch.arange(2), 2, torch.device("cpu"))
    assert calls == [torch.Size([2, 3, 16, 16])]
