"""Alignment: the full-size mask is the model's output mapped back through exactly the crop and resize of training.

The model thresholds the red channel pixel by pixel (lesion where red > 127.5), so the true answer is that function
applied to the original photograph, zero outside the field of view; images have odd sizes and black borders of
different widths on each side, so a mask shifted by the crop, or stretched by a wrong resize, cannot pass.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from group_attention.fundus import InferenceSpec, predict_probability
from group_attention.fundus.data import find_fov_box
from tests.test_inference import RedThreshold

# (height, width, top, left, bottom, right border widths)
IMAGES = [(97, 131, 5, 11, 2, 17), (151, 89, 13, 3, 21, 6), (120, 160, 0, 9, 7, 0)]


def fundus_like(height, width, top, left, bottom, right, seed) -> tuple[Image.Image, np.ndarray, tuple]:
    """A black frame around a field of view of blocks whose red is 200 or 60 (far from the threshold)."""
    rng = np.random.default_rng(seed)
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    box = (top, left, height - bottom, width - right)
    inner_h, inner_w = box[2] - box[0], box[3] - box[1]
    blocks = rng.random((math.ceil(inner_h / 7), math.ceil(inner_w / 9))) < 0.5
    red = np.where(np.kron(blocks, np.ones((7, 9), bool))[:inner_h, :inner_w], 200, 60)
    pixels[box[0] : box[2], box[1] : box[3], 0] = red
    pixels[box[0] : box[2], box[1] : box[3], 1] = rng.integers(40, 120, (inner_h, inner_w))
    pixels[box[0] : box[2], box[1] : box[3], 2] = 50
    expected = np.zeros((height, width), dtype=bool)
    expected[box[0] : box[2], box[1] : box[3]] = pixels[box[0] : box[2], box[1] : box[3], 0] > 127.5
    return Image.fromarray(pixels), expected, box


def spec_for(size) -> InferenceSpec:
    return InferenceSpec(variant=None, lesion="EX", size=size, crop_fov=True)


@pytest.mark.parametrize("case", range(len(IMAGES)))
def test_the_field_of_view_box_of_the_test_images_is_their_drawn_box(case):
    image, _, box = fundus_like(*IMAGES[case], seed=case)
    assert tuple(find_fov_box(image)) == box  # the premise of the tests below


@pytest.mark.parametrize("case", range(len(IMAGES)))
@pytest.mark.parametrize("tile_size, overlap", [((32, 48), 0.25), ((40, 40), 0.5), ((512, 512), 0.25)])
def test_tile_mode_mask_equals_the_function_on_the_original_image(case, tile_size, overlap):
    image, expected, box = fundus_like(*IMAGES[case], seed=case)
    probability, found = predict_probability(
        RedThreshold(), image, spec=spec_for((32, 48)), tile=True, tile_size=tile_size, overlap=overlap, batch_size=3
    )
    assert tuple(found) == box and probability.shape == expected.shape
    np.testing.assert_array_equal(probability >= 0.5, expected)
    red = np.asarray(image)[..., 0].astype(np.float64) / 255
    reference = np.zeros(expected.shape)
    reference[box[0] : box[2], box[1] : box[3]] = 1 / (1 + np.exp(-40 * (red[box[0] : box[2], box[1] : box[3]] - 0.5)))
    np.testing.assert_allclose(probability, reference, rtol=0, atol=2e-6)


@pytest.mark.parametrize("case", range(len(IMAGES)))
def test_training_scale_at_the_size_of_the_crop_is_exact(case):
    image, expected, box = fundus_like(*IMAGES[case], seed=case)
    size = (box[2] - box[0], box[3] - box[1])  # the resize is then the identity: nothing may differ
    probability, _ = predict_probability(RedThreshold(), image, spec=spec_for(size))
    np.testing.assert_array_equal(probability >= 0.5, expected)


def _near_an_edge(mask: np.ndarray, radius: int) -> np.ndarray:
    """Pixels within ``radius`` (Chebyshev) of a pixel of the other value."""
    padded = np.pad(mask, radius, mode="edge")
    near = np.zeros_like(mask)
    h, w = mask.shape
    for dy in range(2 * radius + 1):
        for dx in range(2 * radius + 1):
            near |= padded[dy : dy + h, dx : dx + w] != mask
    return near


@pytest.mark.parametrize("case", range(len(IMAGES)))
@pytest.mark.parametrize("size", [(32, 48), (61, 47)])
def test_training_scale_mask_differs_from_the_function_only_at_edges(case, size):
    image, expected, box = fundus_like(*IMAGES[case], seed=case)
    probability, _ = predict_probability(RedThreshold(), image, spec=spec_for(size))
    # a training pixel spans `scale` source pixels: the round trip can only move an edge by about one of them
    scale = max((box[2] - box[0]) / size[0], (box[3] - box[1]) / size[1])
    allowed = _near_an_edge(expected, math.ceil(scale) + 1)
    wrong = (probability >= 0.5) != expected
    assert not (wrong & ~allowed).any(), np.argwhere(wrong & ~allowed)[:5]
    assert not (
        probability[: box[0]].any()
        or probability[box[2] :].any()
        or probability[:, : box[1]].any()
        or probability[:, box[3] :].any()
    )  # zero outside the field of view


def test_a_mask_shifted_by_the_crop_would_fail_the_edge_test():
    image, expected, box = fundus_like(*IMAGES[0], seed=0)
    probability, _ = predict_probability(RedThreshold(), image, spec=spec_for((32, 48)))
    shifted = np.roll(probability >= 0.5, (box[0], box[1]), axis=(0, 1))  # the crop offset applied twice
    wrong = shifted != expected
    assert (wrong & ~_near_an_edge(expected, 4)).any()


@pytest.mark.parametrize("mode", ["L", "RGBA"])
def test_greyscale_and_alpha_images_are_read_as_in_training(mode, tmp_path):
    image, _, _ = fundus_like(*IMAGES[0], seed=0)
    converted = image.convert(mode)
    converted.save(tmp_path / "x.png")
    from group_attention.fundus import read_image

    read = read_image(tmp_path / "x.png")
    assert read.mode == "RGB" and read.size == image.size
    probability, _ = predict_probability(RedThreshold(), read, spec=spec_for((32, 48)), tile=True)
    torch.testing.assert_close(
        torch.from_numpy(probability >= 0.5),
        torch.from_numpy(np.asarray(converted.convert("RGB"))[..., 0] > 127.5) & torch.from_numpy(probability > 0),
    )


@pytest.mark.parametrize("tile", [False, True])
def test_amp_gives_finite_probabilities_and_the_same_mask(tile):
    image, expected, box = fundus_like(*IMAGES[1], seed=1)
    size = (box[2] - box[0], box[3] - box[1])
    probability, _ = predict_probability(RedThreshold(), image, spec=spec_for(size), tile=tile, amp=True, batch_size=1)
    assert probability.dtype == np.float32 and np.isfinite(probability).all()
    np.testing.assert_array_equal(probability >= 0.5, expected)
