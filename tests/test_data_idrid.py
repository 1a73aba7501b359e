"""The IDRiD loader: layout discovery, mask encodings, preprocessing, cache, folds, bad input, real data.

Synthetic trees (every mask encoding, nested downloads) always run; real-data tests read the root from
GA_IDRID_ROOT (the folder containing "A. Segmentation", e.g. /work/shared/data/idrid-mini) and skip
when it is unset. References are independent of the loader: lesion pixels are counted on the source
files with Pillow and NumPy, as the idrid-mini README prescribes (grey value > 0).
"""

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from torch.utils.data import DataLoader

import group_attention.data.idrid as idrid_module
from group_attention.data import (
    IDRiD,
    RandomFlipRotate,
    discover_idrid,
    find_fov_box,
    fold_of,
    kfold_ids,
    make_synthetic_idrid,
    read_lesion_mask,
    resize_mask,
)
from group_attention.data.preprocess import Box

SIZE = (96, 144)  # synthetic JPEG size (H, W)
LESION_FOLDERS = {
    "MA": "1. Microaneurysms",
    "HE": "2. Haemorrhages",
    "EX": "3. Hard Exudates",
    "SE": "4. Soft Exudates",
    "OD": "5. Optic Disc",
}
SET_FOLDERS = {"train": "a. Training Set", "test": "b. Testing Set"}

REAL_ROOT = os.environ.get("GA_IDRID_ROOT")
needs_real_idrid = pytest.mark.skipif(
    not REAL_ROOT, reason="set GA_IDRID_ROOT to the folder containing 'A. Segmentation' (e.g. idrid-mini)"
)


def _base(root: Path) -> Path:
    """The folder holding '1. Original Images' (independent of the loader's discovery)."""
    for candidate in (root, root / "A. Segmentation", root / "A. Segmentation" / "A. Segmentation"):
        if (candidate / "1. Original Images").is_dir():
            return candidate
    raise AssertionError(f"no IDRiD tree under {root}")


def _source_files(root: Path, code: str) -> dict[str, Path]:
    """Image id -> mask path of one lesion, by globbing the official folders."""
    found = {}
    for set_name in SET_FOLDERS.values():
        folder = _base(root) / "2. All Segmentation Groundtruths" / set_name / LESION_FOLDERS[code]
        found.update({p.name[: -len(f"_{code}.tif")]: p for p in folder.glob(f"IDRiD_*_{code}.tif")})
    return found


def _reference_mask(path: Path) -> np.ndarray:
    """Lesion pixels of a source mask: any non-black pixel (idrid-mini README)."""
    with Image.open(path) as mask:
        return np.asarray(mask.convert("L")) > 0


def _small_tree(root: Path, **kwargs) -> Path:
    """A tiny synthetic tree (2 training + 1 testing image) that a test may damage."""
    return make_synthetic_idrid(root, n_train=2, n_test=1, size=(48, 72), **kwargs)


@pytest.fixture(scope="module", params=["palette", "rgb", "mixed", "nested"])
def tree(request, tmp_path_factory):
    """Synthetic trees in every mask encoding, and a nested download."""
    nested = request.param == "nested"
    encoding = "mixed" if nested else request.param
    root = tmp_path_factory.mktemp(request.param)
    return make_synthetic_idrid(root, n_train=6, n_test=3, size=SIZE, seed=1, mask_encoding=encoding, nested=nested)


@pytest.fixture(scope="module")
def mixed_tree(tmp_path_factory):
    return make_synthetic_idrid(tmp_path_factory.mktemp("mixed"), n_train=6, n_test=3, size=SIZE, seed=2)


# --- reading masks in every encoding ----------------------------------------------------------------


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


# --- discovery -------------------------------------------------------------------------------------


def test_discovery_counts_match_the_files(tree):
    layout = discover_idrid(tree)
    images = {p.stem for p in _base(tree).glob("1. Original Images/*/IDRiD_*.jpg")}
    assert set(layout.ids("all")) == images
    for code in LESION_FOLDERS:
        assert set(layout.masks[code]) == set(_source_files(tree, code)), code
    assert layout.counts("train")["images"] == 6 and layout.counts("test")["images"] == 3
    assert layout.counts("train")["HE"] == 5  # one training image has no HE mask
    assert "a. Training Set: 6 images" in layout.summary()


@pytest.mark.parametrize("depth", ["root", "A. Segmentation", "nested, outer folder", "nested, inner folder"])
def test_root_may_be_any_level_of_the_download(tmp_path, depth):
    nested = depth.startswith("nested")
    root = _small_tree(tmp_path, nested=nested)
    given = {
        "root": root,
        "A. Segmentation": root / "A. Segmentation",
        "nested, outer folder": root / "A. Segmentation",
        "nested, inner folder": root / "A. Segmentation" / "A. Segmentation",
    }[depth]
    layout = discover_idrid(given)
    assert layout.ids() == ["IDRiD_01", "IDRiD_02", "IDRiD_03"]
    assert (layout.base / "1. Original Images").is_dir()


def test_ids_sort_numerically(tmp_path):
    root = make_synthetic_idrid(tmp_path, n_train=11, n_test=0, size=(32, 48))
    assert discover_idrid(root).ids() == [f"IDRiD_{i:02d}" for i in range(1, 12)]


# --- the dataset -----------------------------------------------------------------------------------


def test_items_have_the_documented_keys_shapes_and_values(tree, tmp_path):
    dataset = IDRiD(tree, lesion=["EX", "HE"], split="all", size=(48, 64), cache_dir=tmp_path)
    assert len(dataset) == 9 and dataset.ids == sorted(dataset.ids)
    for index in (0, len(dataset) - 1):
        item = dataset[index]
        assert item["id"] == dataset.ids[index]
        assert item["image"].shape == (3, 48, 64) and item["image"].dtype == torch.float32
        assert 0 <= item["image"].min() and item["image"].max() <= 1
        assert item["mask"].shape == (2, 48, 64) and item["mask"].dtype == torch.float32
        assert set(torch.unique(item["mask"]).tolist()) <= {0.0, 1.0}


def test_mask_fraction_equals_a_direct_count_on_the_source_file(tree):
    """No crop, source size: the loaded mask is the source mask, pixel for pixel, in every encoding."""
    dataset = IDRiD(tree, lesion=list(LESION_FOLDERS), split="all", size=SIZE, crop_fov=False, cache_dir=None)
    for index, image_id in enumerate(dataset.ids):
        mask = dataset[index]["mask"].numpy()
        for channel, code in enumerate(LESION_FOLDERS):
            source = _source_files(tree, code).get(image_id)
            expected = _reference_mask(source) if source else np.zeros(SIZE, bool)
            assert np.array_equal(mask[channel] > 0, expected), (image_id, code)


def test_mask_fraction_after_crop_and_resize_matches_the_direct_count(mixed_tree):
    """Cropped and resized to about the source scale, lesion area is kept (per lesion, over all images)."""
    dataset = IDRiD(mixed_tree, lesion=["EX", "HE", "OD"], split="all", size=SIZE, cache_dir=None)
    source_pixels, loaded_pixels = dict.fromkeys(["EX", "HE", "OD"], 0.0), dict.fromkeys(["EX", "HE", "OD"], 0.0)
    for index, image_id in enumerate(dataset.ids):
        box = dataset.crop_box(image_id)
        mask = dataset[index]["mask"].numpy()
        for channel, code in enumerate(["EX", "HE", "OD"]):
            source = _source_files(mixed_tree, code).get(image_id)
            if source is None:
                assert not mask[channel].any()
                continue
            lesion = _reference_mask(source)
            inside = lesion[box.top : box.bottom, box.left : box.right].sum()
            assert inside == lesion.sum()  # the crop never cuts a lesion
            source_pixels[code] += inside
            loaded_pixels[code] += mask[channel].sum() * (box.height * box.width) / mask[channel].size
    for code in source_pixels:
        assert abs(loaded_pixels[code] / source_pixels[code] - 1) < 0.1, code


def test_downscaled_masks_keep_every_lesion_in_place(mixed_tree):
    """At 2x downscaling every source lesion pixel has a loaded lesion pixel next to where it maps,
    and every loaded lesion pixel covers a source lesion: lesions survive, aligned, nothing invented."""
    height, width = 48, 72
    dataset = IDRiD(mixed_tree, lesion=["EX", "HE", "MA"], split="all", size=(height, width), cache_dir=None)
    for index, image_id in enumerate(dataset.ids):
        box = dataset.crop_box(image_id)
        mask = dataset[index]["mask"].numpy() > 0
        scale_rows, scale_cols = height / box.height, width / box.width
        for channel, code in enumerate(["EX", "HE", "MA"]):
            source = _source_files(mixed_tree, code).get(image_id)
            lesion = _reference_mask(source) if source else np.zeros(SIZE, bool)
            grown = np.pad(mask[channel], 1)  # 1-pixel tolerance around each mapped position
            for row, col in zip(*np.nonzero(lesion)):
                r, c = int((row - box.top + 0.5) * scale_rows), int((col - box.left + 0.5) * scale_cols)
                assert grown[r : r + 3, c : c + 3].any(), (image_id, code, row, col)
            for r, c in zip(*np.nonzero(mask[channel])):
                top, left = box.top + int(r / scale_rows) - 1, box.left + int(c / scale_cols) - 1
                bottom, right = top + int(np.ceil(1 / scale_rows)) + 3, left + int(np.ceil(1 / scale_cols)) + 3
                footprint = lesion[max(0, top) : bottom, max(0, left) : right]
                assert footprint.any(), (image_id, code, r, c)


def test_missing_mask_file_gives_an_all_zero_channel(mixed_tree):
    layout = discover_idrid(mixed_tree)
    without_he = [i for i in layout.ids("train") if i not in layout.masks["HE"]]
    assert len(without_he) == 1
    dataset = IDRiD(mixed_tree, lesion=["EX", "HE"], ids=without_he, size=(48, 72), cache_dir=None)
    mask = dataset[0]["mask"]
    assert mask[0].sum() > 0 and mask[1].sum() == 0
    assert "HE 5/6" in IDRiD(mixed_tree, lesion=["EX", "HE"], size=(48, 72), cache_dir=None).summary()


def test_mask_channels_follow_the_requested_lesion_order(mixed_tree):
    ex_he = IDRiD(mixed_tree, lesion=["EX", "HE"], size=(48, 72), cache_dir=None)[0]["mask"]
    he_ex = IDRiD(mixed_tree, lesion=["he", "ex"], size=(48, 72), cache_dir=None)[0]["mask"]
    assert torch.equal(ex_he, he_ex.flip(0))


def test_splits_and_ids_select_images(mixed_tree):
    train = IDRiD(mixed_tree, split="train", size=(48, 72), cache_dir=None)
    test = IDRiD(mixed_tree, split="test", size=(48, 72), cache_dir=None)
    both = IDRiD(mixed_tree, split="all", size=(48, 72), cache_dir=None)
    assert train.ids == [f"IDRiD_{i:02d}" for i in range(1, 7)]
    assert test.ids == ["IDRiD_07", "IDRiD_08", "IDRiD_09"]
    assert both.ids == train.ids + test.ids
    chosen = IDRiD(mixed_tree, split="all", ids=["IDRiD_08", "IDRiD_02"], size=(48, 72), cache_dir=None)
    assert chosen.ids == ["IDRiD_02", "IDRiD_08"] and len(chosen) == 2


def test_field_of_view_crop_removes_the_black_margins(mixed_tree):
    cropped = IDRiD(mixed_tree, size=(48, 72), cache_dir=None)[0]["image"]
    uncropped = IDRiD(mixed_tree, size=(48, 72), crop_fov=False, cache_dir=None)[0]["image"]
    # The disc touches the crop's left and right edges at mid-height; without crop those are black.
    brightness = lambda image, column: image[:, 16:32, column].max(0).values.max()  # noqa: E731
    assert brightness(uncropped, 0) < 0.08 and brightness(uncropped, -1) < 0.08
    assert brightness(cropped, 0) > 0.12 and brightness(cropped, -1) > 0.12


def test_nested_and_plain_downloads_load_identically(tmp_path):
    plain = _small_tree(tmp_path / "plain", seed=3)
    nested = _small_tree(tmp_path / "nested", seed=3, nested=True)
    a = IDRiD(plain, lesion=["EX", "OD"], split="all", size=(24, 36), cache_dir=None)
    b = IDRiD(nested, lesion=["EX", "OD"], split="all", size=(24, 36), cache_dir=None)
    for index in range(len(a)):
        assert torch.equal(a[index]["image"], b[index]["image"]) and torch.equal(a[index]["mask"], b[index]["mask"])


def test_transform_is_applied_to_each_item(mixed_tree):
    plain = IDRiD(mixed_tree, lesion="EX", size=(48, 72), cache_dir=None)
    always_flip = RandomFlipRotate(p_hflip=1, p_vflip=0, degrees=0)
    flipped = IDRiD(mixed_tree, lesion="EX", size=(48, 72), cache_dir=None, transform=always_flip)
    assert torch.equal(flipped[1]["image"], plain[1]["image"].flip(-1))
    assert torch.equal(flipped[1]["mask"], plain[1]["mask"].flip(-1))


def test_dataloader_batches_items(mixed_tree):
    batch = next(iter(DataLoader(IDRiD(mixed_tree, lesion=["EX", "HE"], size=(48, 72), cache_dir=None), batch_size=4)))
    assert batch["image"].shape == (4, 3, 48, 72) and batch["mask"].shape == (4, 2, 48, 72)
    assert batch["id"] == ["IDRiD_01", "IDRiD_02", "IDRiD_03", "IDRiD_04"]


def test_repr_and_summary_report_images_and_masks(mixed_tree):
    dataset = IDRiD(mixed_tree, lesion=["EX", "SE"], split="all", size=(48, 72), cache_dir=None)
    n_se = len(_source_files(mixed_tree, "SE"))
    assert f"SE {n_se}/9" in dataset.summary() and "EX 9/9" in dataset.summary()
    assert "images=9" in repr(dataset) and f"'SE': {n_se}" in repr(dataset)
    assert dataset.mask_counts() == {"images": 9, "EX": 9, "SE": n_se}


# --- preprocessing functions ------------------------------------------------------------------------


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


# --- cache -----------------------------------------------------------------------------------------


def _all_items(dataset):
    return [dataset[i] for i in range(len(dataset))]


def _assert_same_items(first, second):
    for a, b in zip(first, second, strict=True):
        assert a["id"] == b["id"]
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["mask"], b["mask"])


def test_cache_hits_return_identical_tensors_without_decoding(tmp_path, monkeypatch):
    root = _small_tree(tmp_path / "data")
    cache = tmp_path / "cache"
    first = _all_items(IDRiD(root, lesion=["EX", "HE"], split="all", size=(24, 36), cache_dir=cache))
    # 3 images; EX for all, HE for 2 of them (one training image has none): 3 + 3 + 2 entries.
    assert len(list(cache.glob("*.npz"))) == 8

    def must_not_decode(path):
        raise AssertionError(f"decoded {path} despite the cache")

    monkeypatch.setattr(idrid_module, "read_fundus_image", must_not_decode)
    monkeypatch.setattr(idrid_module, "read_lesion_mask", must_not_decode)
    second = _all_items(IDRiD(root, lesion=["EX", "HE"], split="all", size=(24, 36), cache_dir=cache))
    _assert_same_items(first, second)


def test_cached_and_uncached_items_are_identical(tmp_path):
    root = _small_tree(tmp_path / "data")
    uncached = _all_items(IDRiD(root, lesion=["EX", "OD"], split="all", size=(24, 36), cache_dir=None))
    IDRiD(root, lesion=["EX", "OD"], split="all", size=(24, 36), cache_dir=tmp_path / "cache").prepare(num_threads=2)
    cached = _all_items(IDRiD(root, lesion=["EX", "OD"], split="all", size=(24, 36), cache_dir=tmp_path / "cache"))
    _assert_same_items(uncached, cached)


def test_other_settings_or_a_changed_source_file_miss_the_cache(tmp_path, monkeypatch):
    root = _small_tree(tmp_path / "data")
    cache = tmp_path / "cache"
    _all_items(IDRiD(root, lesion="EX", size=(24, 36), cache_dir=cache))
    before = set(cache.glob("*.npz"))
    _all_items(IDRiD(root, lesion="EX", size=(24, 40), cache_dir=cache))
    _all_items(IDRiD(root, lesion="EX", size=(24, 36), mask_resize="nearest", cache_dir=cache))
    after_settings = set(cache.glob("*.npz"))
    assert before < after_settings and len(after_settings) == len(before) + 4 + 2  # size: image + mask; nearest: mask

    mask_path = _source_files(root, "EX")["IDRiD_01"]
    stat = mask_path.stat()
    os.utime(mask_path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    decoded = []
    original = idrid_module.read_lesion_mask
    def counting_read(path):
        decoded.append(Path(path).name)
        return original(path)

    monkeypatch.setattr(idrid_module, "read_lesion_mask", counting_read)
    _all_items(IDRiD(root, lesion="EX", size=(24, 36), cache_dir=cache))
    assert decoded == ["IDRiD_01_EX.tif"]


def test_cache_dir_none_writes_nothing_and_auto_uses_ga_cache_dir(tmp_path, monkeypatch):
    root = _small_tree(tmp_path / "data")
    files_before = sorted(p for p in root.rglob("*"))
    env_cache = tmp_path / "env-cache"
    monkeypatch.setenv("GA_CACHE_DIR", str(env_cache))
    _all_items(IDRiD(root, size=(24, 36), cache_dir=None))
    assert not env_cache.exists()
    _all_items(IDRiD(root, size=(24, 36)))
    assert len(list(env_cache.glob("*.npz"))) == 4
    assert sorted(p for p in root.rglob("*")) == files_before  # nothing written next to the data


def test_a_corrupt_cache_entry_is_recomputed(tmp_path):
    root = _small_tree(tmp_path / "data")
    cache = tmp_path / "cache"
    first = _all_items(IDRiD(root, lesion="EX", size=(24, 36), cache_dir=cache))
    for entry in cache.glob("*.npz"):
        entry.write_bytes(b"not a zip file")
    _assert_same_items(first, _all_items(IDRiD(root, lesion="EX", size=(24, 36), cache_dir=cache)))
    assert not list(cache.glob("*.tmp"))


def test_an_unwritable_cache_folder_only_disables_caching(tmp_path):
    root = _small_tree(tmp_path / "data")
    not_a_folder = tmp_path / "cache-is-a-file"
    not_a_folder.write_text("")
    items = _all_items(IDRiD(root, lesion="EX", size=(24, 36), cache_dir=not_a_folder))
    _assert_same_items(items, _all_items(IDRiD(root, lesion="EX", size=(24, 36), cache_dir=None)))


# --- bad input ------------------------------------------------------------------------------------

ILL_CASES = [
    ({"lesion": "XX"}, "lesion must be one or several distinct codes of \\['MA', 'HE', 'EX', 'SE', 'OD'\\]"),
    ({"lesion": ["EX", "EX"]}, "distinct"),
    ({"lesion": []}, "lesion"),
    ({"lesion": None}, "lesion"),
    ({"split": "val"}, "split must be one of \\('train', 'test', 'all'\\); got 'val'"),
    ({"size": (384,)}, "size must be two positive ints"),
    ({"size": (0, 512)}, "size"),
    ({"size": (384.0, 512)}, "size"),
    ({"size": "384x512"}, "size"),
    ({"ids": ["IDRiD_77"]}, "not found: \\['IDRiD_77'\\]"),
    ({"ids": ["IDRiD_03"], "split": "train"}, "not found: \\['IDRiD_03'\\]"),
    ({"ids": "IDRiD_01"}, "list of image ids"),
    ({"ids": []}, "non-empty"),
    ({"mask_resize": "bicubic"}, "mask_resize"),
]


@pytest.mark.parametrize("kwargs, message", [
    ({"transform": "flip"}, "transform must be a callable"),
    ({"cache_dir": 123}, "cache_dir must be 'auto', a folder path or None, got 123"),
])
def test_transform_and_cache_dir_are_checked_when_the_dataset_is_built(tmp_path, kwargs, message):
    with pytest.raises(TypeError, match=message):
        IDRiD(_small_tree(tmp_path), **kwargs)


def test_crop_fov_must_be_a_bool(tmp_path):
    root = _small_tree(tmp_path)
    with pytest.raises(TypeError, match=r"crop_fov must be True or False; got 'False'"):
        IDRiD(root, cache_dir=None, crop_fov="False")


def test_two_masks_of_one_image_and_lesion_are_an_error(tmp_path):
    root = _small_tree(tmp_path)
    mask = _source_files(root, "EX")["IDRiD_01"]
    shutil.copy(mask, mask.with_suffix(".tiff"))
    with pytest.raises(ValueError, match=r"EX mask of image 'IDRiD_01' appears twice"):
        discover_idrid(root)


@pytest.mark.parametrize("kwargs, message", ILL_CASES)
def test_bad_arguments_raise_naming_the_argument(tmp_path, kwargs, message):
    root = _small_tree(tmp_path)
    with pytest.raises(ValueError, match=message):
        IDRiD(root, cache_dir=None, **kwargs)


def test_a_folder_that_is_not_idrid_says_what_was_expected_and_found(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "notes.txt").write_text("")
    with pytest.raises(ValueError) as error:
        IDRiD(tmp_path, cache_dir=None)
    message = str(error.value)
    assert "1. Original Images" in message and "2. All Segmentation Groundtruths" in message
    assert "'images/'" in message and "'notes.txt'" in message


def test_a_missing_root_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="does-not-exist"):
        discover_idrid(tmp_path / "does-not-exist")


def test_a_tree_without_images_says_so(tmp_path):
    (tmp_path / "A. Segmentation" / "1. Original Images" / "a. Training Set").mkdir(parents=True)
    with pytest.raises(ValueError, match="no IDRiD_NN.jpg image"):
        discover_idrid(tmp_path)


def test_an_empty_split_is_an_error(tmp_path):
    root = make_synthetic_idrid(tmp_path, n_train=2, n_test=0, size=(48, 72))
    with pytest.raises(ValueError, match="split 'test' has no image.*2 training and 0 testing"):
        IDRiD(root, split="test", cache_dir=None)


def test_a_lesion_without_any_ground_truth_folder_is_an_error(tmp_path):
    root = _small_tree(tmp_path)
    for set_name in SET_FOLDERS.values():
        masks = _base(root) / "2. All Segmentation Groundtruths" / set_name
        shutil.rmtree(masks / "1. Microaneurysms", ignore_errors=True)
    with pytest.raises(ValueError, match="lesion 'MA'.*1. Microaneurysms"):
        IDRiD(root, lesion=["EX", "MA"], cache_dir=None)


def test_an_unreadable_image_is_named(tmp_path):
    root = _small_tree(tmp_path)
    broken = _base(root) / "1. Original Images" / "a. Training Set" / "IDRiD_02.jpg"
    broken.write_bytes(b"this is not a JPEG")
    with pytest.raises(OSError, match="IDRiD_02.jpg"):
        IDRiD(root, cache_dir=None)


def test_a_truncated_image_is_named_when_decoded(tmp_path):
    root = _small_tree(tmp_path)
    truncated = _base(root) / "1. Original Images" / "a. Training Set" / "IDRiD_01.jpg"
    content = truncated.read_bytes()
    truncated.write_bytes(content[: len(content) * 2 // 3])  # header intact, pixels cut
    dataset = IDRiD(root, cache_dir=None)
    with pytest.raises(OSError, match="IDRiD_01.jpg"):
        dataset[0]


def test_an_unreadable_mask_is_named(tmp_path):
    root = _small_tree(tmp_path)
    _source_files(root, "EX")["IDRiD_01"].write_bytes(b"garbage")
    with pytest.raises(OSError, match="IDRiD_01_EX.tif"):
        IDRiD(root, lesion="EX", cache_dir=None)


def test_a_mask_of_another_size_names_both_files_and_sizes(tmp_path):
    root = _small_tree(tmp_path)
    mask_path = _source_files(root, "OD")["IDRiD_02"]
    Image.open(mask_path).resize((70, 48)).save(mask_path)
    with pytest.raises(ValueError) as error:
        IDRiD(root, lesion="OD", cache_dir=None)
    message = str(error.value)
    assert "IDRiD_02_OD.tif" in message and "IDRiD_02.jpg" in message
    assert "70x48" in message and "72x48" in message


def test_stray_files_are_reported_never_silently_dropped(tmp_path):
    root = _small_tree(tmp_path)
    images = _base(root) / "1. Original Images" / "a. Training Set"
    shutil.copy(images / "IDRiD_01.jpg", images / "IDRiD_01 (copy).jpg")
    mask = _source_files(root, "EX")["IDRiD_01"]
    shutil.copy(mask, mask.with_name("IDRiD_42_EX.tif"))
    with pytest.warns(UserWarning) as caught:
        layout = discover_idrid(root)
    messages = " ".join(str(w.message) for w in caught)
    assert "IDRiD_01 (copy).jpg" in messages and "IDRiD_42_EX.tif" in messages
    assert "1 masks without an image" in layout.summary() and "not named like IDRiD files" in layout.summary()


# --- cross-validation folds ----------------------------------------------------------------------

IDRID_IDS = [f"IDRiD_{i:02d}" for i in range(1, 82)]


@settings(max_examples=40, deadline=None)
@given(n_ids=st.integers(2, 90), data=st.data(), seed=st.integers(0, 1000))
def test_folds_are_disjoint_covering_and_balanced(n_ids, data, seed):
    ids = [f"IDRiD_{i:02d}" for i in range(1, n_ids + 1)]
    n_folds = data.draw(st.integers(2, n_ids))
    folds = kfold_ids(ids, n_folds=n_folds, seed=seed)
    tests = [test for _, test in folds]
    assert sorted(sum(tests, [])) == sorted(ids)  # covering, and disjoint since no id repeats
    assert max(map(len, tests)) - min(map(len, tests)) <= 1
    for train, test in folds:
        assert sorted(train + test) == sorted(ids) and not set(train) & set(test)


def test_folds_are_stable_for_a_seed_and_ignore_input_order():
    folds = kfold_ids(IDRID_IDS, n_folds=3, seed=0)
    assert folds == kfold_ids(list(reversed(IDRID_IDS)), n_folds=3, seed=0)
    assert folds != kfold_ids(IDRID_IDS, n_folds=3, seed=1)
    assert [len(test) for _, test in folds] == [27, 27, 27]
    # Pinned: the paper's 3 folds over the 81 images must not change between versions.
    assert folds[0][1] == [
        "IDRiD_04", "IDRiD_07", "IDRiD_08", "IDRiD_09", "IDRiD_13", "IDRiD_22", "IDRiD_23", "IDRiD_26", "IDRiD_28",
        "IDRiD_29", "IDRiD_30", "IDRiD_37", "IDRiD_38", "IDRiD_40", "IDRiD_43", "IDRiD_47", "IDRiD_49", "IDRiD_50",
        "IDRiD_51", "IDRiD_56", "IDRiD_57", "IDRiD_60", "IDRiD_64", "IDRiD_65", "IDRiD_68", "IDRiD_70", "IDRiD_78",
    ]  # fmt: skip
    assert fold_of(IDRID_IDS, 3, 0)["IDRiD_04"] == 0


def test_folds_feed_the_dataset_ids(mixed_tree):
    layout = discover_idrid(mixed_tree)
    for train_ids, test_ids in kfold_ids(layout.ids("all"), n_folds=3, seed=0):
        train = IDRiD(mixed_tree, split="all", ids=train_ids, size=(24, 36), cache_dir=None)
        test = IDRiD(mixed_tree, split="all", ids=test_ids, size=(24, 36), cache_dir=None)
        assert len(train) == 6 and len(test) == 3


@pytest.mark.parametrize(
    "ids, n_folds, message",
    [
        (IDRID_IDS[:5], 1, "n_folds must be an int in \\[2, 5\\]"),
        (IDRID_IDS[:5], 6, "n_folds"),
        (["IDRiD_01", "IDRiD_01", "IDRiD_02"], 2, "duplicated: \\['IDRiD_01'\\]"),
        ("IDRiD_01", 2, "string"),
        ([], 2, "at least 2 image ids"),
    ],
)
def test_bad_fold_arguments_raise(ids, n_folds, message):
    with pytest.raises(ValueError, match=message):
        kfold_ids(ids, n_folds=n_folds)


# --- real IDRiD (GA_IDRID_ROOT) ------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_root():
    return Path(REAL_ROOT)


@pytest.fixture(scope="module")
def real_ids(real_root):
    """Two training images that have both EX and HE masks: enough to check, fast to decode."""
    ex, he = _source_files(real_root, "EX"), _source_files(real_root, "HE")
    training = _base(real_root) / "1. Original Images" / "a. Training Set"
    ids = sorted(i for i in ex if i in he and (training / f"{i}.jpg").exists())
    return ids[:2]


@pytest.fixture(scope="module")
def real_dataset(real_root, real_ids, tmp_path_factory):
    cache = tmp_path_factory.mktemp("real-cache")
    return IDRiD(real_root, lesion=["EX", "HE"], split="train", ids=real_ids, cache_dir=cache)


@needs_real_idrid
def test_real_discovery_counts_match_the_files(real_root):
    layout = discover_idrid(real_root)
    for split, set_name in SET_FOLDERS.items():
        images = list((_base(real_root) / "1. Original Images" / set_name).glob("IDRiD_*.jpg"))
        assert layout.counts(split)["images"] == len(images)
    for code in LESION_FOLDERS:
        assert len(layout.masks[code]) == len(_source_files(real_root, code))
    assert layout.counts("all")["EX"] > 0 and layout.counts("all")["HE"] > 0


@needs_real_idrid
def test_real_items_have_the_paper_size(real_dataset, real_ids):
    item = real_dataset[0]
    assert item["image"].shape == (3, 384, 512) and item["mask"].shape == (2, 384, 512)
    assert item["id"] == real_ids[0]


@needs_real_idrid
def test_real_lesion_fractions_match_a_direct_count(real_root, real_dataset):
    for index, image_id in enumerate(real_dataset.ids):
        box = real_dataset.crop_box(image_id)
        mask = real_dataset[index]["mask"].numpy()
        for channel, code in enumerate(["EX", "HE"]):
            lesion = _reference_mask(_source_files(real_root, code)[image_id])
            inside = lesion[box.top : box.bottom, box.left : box.right].sum()
            assert inside == lesion.sum(), (image_id, code)  # the crop never cuts a lesion
            expected = inside / (box.height * box.width)
            assert expected > 0
            assert abs(mask[channel].mean() - expected) <= 0.1 * expected + 10 / mask[channel].size, (image_id, code)


@needs_real_idrid
def test_real_fov_box_holds_the_whole_bright_disc(real_root, real_dataset):
    for image_id in real_dataset.ids:
        box = real_dataset.crop_box(image_id)
        with Image.open(_base(real_root) / "1. Original Images" / "a. Training Set" / f"{image_id}.jpg") as photo:
            small = np.asarray(photo.reduce(8)).max(-1)
        rows, cols = np.nonzero(small > 60)  # clearly inside the field of view
        assert box.left <= cols.min() * 8 + 8 and (cols.max() + 1) * 8 <= box.right + 8
        assert box.top <= rows.min() * 8 + 8 and (rows.max() + 1) * 8 <= box.bottom + 8
        outside = np.concatenate([small[:, : box.left // 8 - 1].ravel(), small[:, box.right // 8 + 1 :].ravel()])
        assert outside.size == 0 or np.percentile(outside, 99) < 30  # what was cropped is background


@needs_real_idrid
def test_real_masks_sit_on_the_lesions(real_dataset):
    """Alignment of image and masks after crop and resize: exudates are yellow, haemorrhages dark."""
    for index in range(len(real_dataset)):
        item = real_dataset[index]
        image, (ex, he) = item["image"], item["mask"].bool()
        fov = image.sum(0) > 0.3
        background = fov & ~ex & ~he
        yellowness = image[1] - image[2]
        assert yellowness[ex].mean() > yellowness[background].mean() + 0.05
        assert image.sum(0)[he].mean() < image.sum(0)[background].mean()


@needs_real_idrid
def test_real_cache_hit_is_identical_and_root_may_be_the_segmentation_folder(
    real_root, real_dataset, real_ids, monkeypatch
):
    first = _all_items(real_dataset)
    monkeypatch.setattr(idrid_module, "read_fundus_image", lambda path: pytest.fail(f"decoded {path}"))
    again = IDRiD(real_root, lesion=["EX", "HE"], split="train", ids=real_ids, cache_dir=real_dataset.cache.directory)
    _assert_same_items(first, _all_items(again))
    inner = IDRiD(_base(real_root), lesion="EX", split="train", ids=real_ids[:1], cache_dir=None)
    assert inner.ids == real_ids[:1]


@needs_real_idrid
def test_real_masks_without_crop_match_the_full_frame_count(real_root, real_ids):
    dataset = IDRiD(
        real_root, lesion=["EX", "HE"], ids=real_ids[:1], size=(356, 536), crop_fov=False, cache_dir=None
    )
    mask = dataset[0]["mask"].numpy()
    for channel, code in enumerate(["EX", "HE"]):
        expected = _reference_mask(_source_files(real_root, code)[real_ids[0]]).mean()
        assert abs(mask[channel].mean() - expected) <= 0.1 * expected, code


@pytest.mark.parametrize("call, message", [
    (lambda: find_fov_box(np.zeros((10, 10, 3), np.float32)), "uint8 array .* got dtype float32"),
    (lambda: find_fov_box(np.zeros((10, 10, 1), np.uint8)), r"got dtype uint8 and shape \(10, 10, 1\)"),
    (lambda: resize_mask(np.zeros((8, 8)), Box(5, 5, 5, 5), (2, 2)), "non-empty crop inside the 8 x 8 image"),
    (lambda: resize_mask(np.zeros((8, 8)), Box(0, 0, 9, 8), (2, 2)), "inside the 8 x 8 image"),
    (lambda: resize_mask(np.zeros((8, 8)), [0, 0, 8, 8], (2, 2)), r"box must be a Box\(top, left, bottom, right\)"),
    (lambda: resize_mask(np.zeros((8, 8, 2)), Box(0, 0, 8, 8), (2, 2)), r"2D \(h, w\) array; got shape \(8, 8, 2\)"),
])
def test_preprocessing_inputs_are_checked(call, message):
    with pytest.raises(ValueError, match=message):
        call()
