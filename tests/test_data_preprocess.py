"""Preprocessing: the field-of-view box, mask resizing that keeps small lesions, and checked inputs."""

import numpy as np
import pytest

from group_attention.fundus.data import (
    find_fov_box,
    resize_mask,
)
from group_attention.fundus.data.preprocess import Box


def _fundus_frame(height=300, width=450, radius=180, noise=True):
    """A clipped disc like an IDRiD photograph, with a notch, background noise and a bright speck."""
    rows, cols = np.mgrid[0:height, 0:width]
    disc = np.hypot(rows - height / 2, cols - width / 2) <= radius
    disc &= ~((rows < 40) & (cols > width / 2 + radius - 12))  # notch on the rim
    frame = np.zeros((height, width, 3), np.uint8)
    frame[disc] = (190, 90, 40)
    if noise:
        frame = np.maximum(frame, np.random.default_rng(0).integers(0, 14, frame.shape).astype(np.uint8))
        frame[5:8, 5:8] = 255  # dust speck in the background
    return frame


def test_fov_box_is_the_clipped_disc():
    box = find_fov_box(_fundus_frame())
    # Disc of radius 180 centred in 450 columns: columns 45..405; clipped at top and bottom.
    assert box.top == 0 and box.bottom == 300
    assert abs(box.left - 45) <= 2 and abs(box.right - 405) <= 2


def test_fov_box_on_a_large_photograph_is_accurate_to_a_few_pixels():
    box = find_fov_box(_fundus_frame(height=1424, width=2144, radius=860))
    assert abs(box.left - (1072 - 860)) <= 8 and abs(box.right - (1072 + 860)) <= 8


@pytest.mark.parametrize(
    "frame",
    [np.zeros((120, 180, 3), np.uint8), np.random.default_rng(1).integers(0, 8, (120, 180, 3)).astype(np.uint8)],
    ids=["all black", "dark noise"],
)
def test_fov_box_falls_back_to_the_full_image(frame):
    assert find_fov_box(frame) == Box(0, 0, 120, 180)


def test_fov_box_ignores_a_tiny_bright_region():
    frame = np.zeros((120, 180, 3), np.uint8)
    frame[50:55, 80:85] = 200
    assert find_fov_box(frame) == Box(0, 0, 120, 180)


def test_area_resize_keeps_every_isolated_small_lesion():
    mask = np.zeros((160, 160), bool)
    dots = [(10 + 17 * i, 7 + 19 * (i % 7)) for i in range(8)]
    for row, col in dots:
        mask[row, col] = True  # one source pixel: 1/16 of a target pixel after 4x downscaling
    small = resize_mask(mask, Box(0, 0, 160, 160), (40, 40), "area")
    for row, col in dots:
        assert small[max(0, row // 4 - 1) : row // 4 + 2, max(0, col // 4 - 1) : col // 4 + 2].any(), (row, col)
    assert small.sum() == len(dots)  # one pixel each, no more


@pytest.mark.parametrize("source, target", [(1000, 40), (2848, 96), (160, 40)])
def test_area_resize_keeps_one_lesion_pixel_at_any_downscale(source, target):
    """One source pixel in a target pixel of 25 x 25 or 30 x 30 source pixels covers under 1/510 of it: still kept."""
    mask = np.zeros((source, source), bool)
    mask[source // 3, source // 2] = True
    resized = resize_mask(mask, Box(0, 0, source, source), (target, target))
    assert resized.sum() == 1
    row, col = np.argwhere(resized)[0]
    assert abs(row - (source // 3) * target // source) <= 1 and abs(col - (source // 2) * target // source) <= 1


def test_area_resize_preserves_the_area_of_large_lesions():
    rows, cols = np.mgrid[0:400, 0:600]
    mask = np.hypot(rows - 200, cols - 300) <= 90
    small = resize_mask(mask, Box(0, 0, 400, 600), (100, 150), "area")
    assert abs(small.mean() - mask.mean()) / mask.mean() < 0.03
    assert small.dtype == np.uint8 and set(np.unique(small)) <= {0, 1}


@pytest.mark.parametrize("method", ["area", "nearest"])
def test_mask_resize_at_source_size_is_the_identity(method):
    mask = np.random.default_rng(0).random((30, 40)) > 0.8
    assert np.array_equal(resize_mask(mask, Box(0, 0, 30, 40), (30, 40), method), mask.astype(np.uint8))


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: find_fov_box(np.zeros((10, 10, 3), np.float32)), "uint8 array .* got dtype float32"),
        (lambda: find_fov_box(np.zeros((10, 10, 1), np.uint8)), r"got dtype uint8 and shape \(10, 10, 1\)"),
        (lambda: resize_mask(np.zeros((8, 8)), Box(5, 5, 5, 5), (2, 2)), "non-empty crop inside the 8 x 8 image"),
        (lambda: resize_mask(np.zeros((8, 8)), Box(0, 0, 9, 8), (2, 2)), "inside the 8 x 8 image"),
        (lambda: resize_mask(np.zeros((8, 8)), [0, 0, 8, 8], (2, 2)), r"box must be a Box\(top, left, bottom, right\)"),
        (
            lambda: resize_mask(np.zeros((8, 8, 2)), Box(0, 0, 8, 8), (2, 2)),
            r"2D \(h, w\) array; got shape \(8, 8, 2\)",
        ),
    ],
)
def test_preprocessing_inputs_are_checked(call, message):
    with pytest.raises(ValueError, match=message):
        call()
