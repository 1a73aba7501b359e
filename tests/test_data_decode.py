"""Decoding mask files: every encoding IDRiD and its copies use reads as the same lesion pixels."""

import numpy as np
import pytest
from PIL import Image

from group_attention.fundus.data import (
    read_lesion_mask,
)


def _lesion_pattern():
    pattern = np.zeros((12, 16), dtype=bool)
    pattern[2:5, 3:7] = True
    pattern[8, 12] = True
    return pattern


def _encode(pattern: np.ndarray, encoding: str) -> Image.Image:
    rgb = np.zeros(pattern.shape + (3,), dtype=np.uint8)
    rgb[pattern] = (255, 0, 0)
    if encoding == "palette":
        image = Image.frombytes("P", pattern.shape[::-1], pattern.astype(np.uint8).tobytes())
        image.putpalette([0, 0, 0, 255, 0, 0])
        return image
    if encoding == "palette, red first":
        image = Image.frombytes("P", pattern.shape[::-1], (~pattern).astype(np.uint8).tobytes())
        image.putpalette([255, 0, 0, 0, 0, 0])
        return image
    if encoding == "rgb":
        return Image.fromarray(rgb)
    if encoding == "rgb, lossy":
        noise = np.abs(np.random.default_rng(0).integers(-12, 13, size=rgb.shape))
        noisy = rgb.astype(int) + noise * (rgb == 0) - noise * (rgb > 0)  # like a JPEG copy of the mask
        return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))
    if encoding == "rgba":
        return Image.fromarray(np.concatenate([rgb, np.full(pattern.shape + (1,), 255, np.uint8)], -1))
    if encoding == "grey 0/255":
        return Image.fromarray(pattern.astype(np.uint8) * 255)
    if encoding == "grey 0/1":
        return Image.fromarray(pattern.astype(np.uint8))
    if encoding == "1-bit":
        return Image.fromarray(pattern)
    if encoding == "16-bit 0/65535":
        return Image.fromarray(pattern.astype(np.uint16) * 65535)
    raise AssertionError(encoding)


@pytest.mark.parametrize(
    "encoding",
    ["palette", "palette, red first", "rgb", "rgb, lossy", "rgba", "grey 0/255", "grey 0/1", "1-bit", "16-bit 0/65535"],
)
def test_read_lesion_mask_reads_every_encoding(tmp_path, encoding):
    path = tmp_path / "IDRiD_01_EX.tif"
    _encode(_lesion_pattern(), encoding).save(path)
    assert np.array_equal(read_lesion_mask(path), _lesion_pattern())


def test_grey_threshold_at_127_would_lose_red_lesions(tmp_path):
    """Why read_lesion_mask exists: red converted to grey is 76."""
    path = tmp_path / "IDRiD_01_EX.tif"
    _encode(_lesion_pattern(), "palette").save(path)
    grey = np.asarray(Image.open(path).convert("L"))
    assert grey.max() == 76 and not (grey > 127).any()
    assert read_lesion_mask(path).sum() == _lesion_pattern().sum()


@pytest.mark.parametrize("lesion_value, mode", [(76, "L"), (2, "L"), (36, "L"), (120, "LA"), (0.99, "F")])
def test_two_valued_masks_are_lesion_wherever_not_zero(tmp_path, lesion_value, mode):
    """A grey copy of a red mask (0/76), a 0/2 label image, dark red turned grey, grey with alpha, float 0/0.99: each
    holds 0 and one other value, which is lesion whatever its brightness."""
    pattern = _lesion_pattern()
    values = np.where(pattern, lesion_value, 0).astype(np.float32 if mode == "F" else np.uint8)
    image = Image.fromarray(values, mode="F") if mode == "F" else Image.fromarray(values)
    if mode == "LA":
        image = Image.merge("LA", (image, Image.new("L", image.size, 255)))
    path = tmp_path / "IDRiD_01_EX.tif"
    image.save(path)
    assert np.array_equal(read_lesion_mask(path), pattern)


def test_a_lossy_grey_copy_keeps_its_lesions_and_faint_noise_stays_empty(tmp_path):
    pattern = _lesion_pattern()
    noise = np.random.default_rng(0).integers(0, 4, pattern.shape)
    lossy = np.where(pattern, 76 - noise, noise).astype(np.uint8)  # lesion 73..76 on 0..3
    Image.fromarray(lossy).save(tmp_path / "lossy.tif")
    assert np.array_equal(read_lesion_mask(tmp_path / "lossy.tif"), pattern)
    Image.fromarray(noise.astype(np.uint8)).save(tmp_path / "noise.tif")
    assert not read_lesion_mask(tmp_path / "noise.tif").any()


def test_empty_mask_reads_as_all_false(tmp_path):
    path = tmp_path / "IDRiD_01_SE.tif"
    _encode(np.zeros((6, 8), bool), "rgb").save(path)
    assert not read_lesion_mask(path).any()
