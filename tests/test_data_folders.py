"""PairedFolderSource: your own images and masks in plain folders, through IDRiD's preprocessing into the engine."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from group_attention.fundus.data import IDRiDSource, PairedFolderSource
from group_attention.fundus.engine import run_experiment
from tests.engine_runs import tiny_config

REAL_ROOT = os.environ.get("GA_IDRID_ROOT")
H, W = 40, 56


def _square_mask(k: int) -> np.ndarray:
    """Image k's lesion: a square at a position that depends on k (0/1)."""
    mask = np.zeros((H, W), np.uint8)
    top, left = 5 + 3 * k, 8 + 4 * k
    mask[top : top + 10, left : left + 12] = 1
    return mask


def _image(k: int) -> np.ndarray:
    rng = np.random.default_rng(k)
    image = rng.integers(60, 120, (H, W, 3), dtype=np.uint8)
    image[_square_mask(k) > 0] = (250, 230, 60)  # the lesion is bright: learnable
    return image


def _save_mask(mask01: np.ndarray, path: Path, encoding: str) -> None:
    if encoding == "0/255":
        Image.fromarray(mask01 * 255).save(path)
    elif encoding == "0/1":
        Image.fromarray(mask01).save(path)
    else:  # palette: index 1 is red
        palette = Image.fromarray(mask01, mode="L").convert("P")
        palette.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
        palette.save(path)


# (image extension, greyscale, mask extension, mask encoding): every format and encoding appears.
FORMATS = [
    (".png", False, ".png", "0/255"),
    (".jpg", False, ".tif", "0/1"),
    (".TIFF", True, ".png", "palette"),
    (".jpeg", True, ".tiff", "0/255"),
    (".tif", False, ".PNG", "palette"),
    (".png", True, ".tif", "0/1"),
]


def make_folders(root: Path, suffixes: bool = False, count: int = 6) -> tuple[Path, Path]:
    """``root/images`` and ``root/masks`` (per-class folder ``EX``, or ``<stem>_EX`` files) of ``count`` images."""
    images, masks = root / "images", root / "masks"
    images.mkdir(parents=True)
    (masks if suffixes else masks / "EX").mkdir(parents=True)
    for k in range(count):
        image_ext, grey, mask_ext, encoding = FORMATS[k % len(FORMATS)]
        picture = Image.fromarray(_image(k))
        (picture.convert("L") if grey else picture).save(images / f"case{k}{image_ext}")
        target = masks / f"case{k}_EX{mask_ext}" if suffixes else masks / "EX" / f"case{k}{mask_ext}"
        _save_mask(_square_mask(k), target, encoding)
    return images, masks


def test_items_are_the_files_images_and_masks_at_full_size(tmp_path):
    images, masks = make_folders(tmp_path)
    source = PairedFolderSource(images, masks, crop_fov=False)
    assert source.classes == ("EX",)
    assert source.ids("all") == [f"case{k}" for k in range(6)]
    dataset = source.dataset(["EX"], source.ids("all"), size=(H, W), cache_dir=None)
    for k, item in enumerate(dataset):
        assert item["id"] == f"case{k}"
        assert item["image"].shape == (3, H, W)
        np.testing.assert_array_equal(item["mask"][0].numpy(), _square_mask(k))
        image_ext, grey, _, _ = FORMATS[k]
        expected = np.asarray(Image.fromarray(_image(k)).convert("L").convert("RGB")) if grey else _image(k)
        if image_ext in (".jpg", ".jpeg"):  # lossy: the file's own pixels, as Pillow decodes them
            expected = np.asarray(Image.open(images / f"case{k}{image_ext}").convert("RGB"))
        np.testing.assert_array_equal((item["image"] * 255).round().byte().numpy(), expected.transpose(2, 0, 1))


def test_suffix_layout_pairs_the_same_masks(tmp_path):
    images, masks = make_folders(tmp_path, suffixes=True)
    source = PairedFolderSource(images, masks, classes=["EX"], mask_suffixes=True, crop_fov=False)
    item = source.dataset(["EX"], ["case3"], size=(H, W), cache_dir=None)[0]
    np.testing.assert_array_equal(item["mask"][0].numpy(), _square_mask(3))


def test_missing_mask_is_an_error_listing_the_image_unless_empty(tmp_path):
    images, masks = make_folders(tmp_path)
    (masks / "EX" / "case2.png").unlink()
    with pytest.raises(ValueError, match=r"1 images have no mask.*case2\.TIFF.*missing-mask empty"):
        PairedFolderSource(images, masks)
    source = PairedFolderSource(images, masks, missing_mask="empty", crop_fov=False)
    item = source.dataset(["EX"], ["case2"], size=(H, W), cache_dir=None)[0]
    assert item["mask"].sum() == 0
    assert "without mask (empty): ['case2']" in source.summary()


def test_summary_counts_sizes_and_lesion_share(tmp_path):
    images, masks = make_folders(tmp_path, count=3)
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(masks / "EX" / "stray.png")
    text = PairedFolderSource(images, masks).summary()
    share = 100 * 3 * 120 / (3 * H * W)  # three 10 x 12 squares
    assert "3 images" in text and f"smallest {W}x{H}" in text and f"largest {W}x{H}" in text
    assert f"EX: masks 3/3, lesion pixels {share:.3f}%" in text
    assert "mask files matching no image: 1" in text and "stray.png" in text


def test_split_files_give_train_and_test(tmp_path):
    images, masks = make_folders(tmp_path)
    (tmp_path / "train.txt").write_text("case0\ncase1\n# a comment\n\ncase2\ncase3\n")
    (tmp_path / "test.txt").write_text("case5\ncase4\n")
    source = PairedFolderSource(images, masks, splits={"train": tmp_path / "train.txt", "test": tmp_path / "test.txt"})
    assert source.ids("train") == ["case0", "case1", "case2", "case3"]
    assert source.folds("official") == [(["case0", "case1", "case2", "case3"], ["case4", "case5"])]


def test_without_split_files_only_all_exists(tmp_path):
    source = PairedFolderSource(*make_folders(tmp_path))
    with pytest.raises(ValueError, match="split 'train' needs split files"):
        source.ids("train")


def test_split_file_ids_that_match_no_image_are_named(tmp_path):
    images, masks = make_folders(tmp_path)
    (tmp_path / "train.txt").write_text("case0\ncase9\n")
    (tmp_path / "test.txt").write_text("case5\n")
    with pytest.raises(ValueError, match=r"split file '.*train\.txt' lists 1 ids that match no image.*case9"):
        PairedFolderSource(images, masks, splits={"train": tmp_path / "train.txt", "test": tmp_path / "test.txt"})


def test_unreadable_image_is_named(tmp_path):
    images, masks = make_folders(tmp_path)
    (images / "case1.jpg").write_bytes(b"not a picture")
    source = PairedFolderSource(images, masks)
    with pytest.raises(OSError, match=r"cannot read image file '.*case1\.jpg'"):
        source.check_data()
    with pytest.raises(OSError, match=r"cannot read image file '.*case1\.jpg'"):
        source.dataset(["EX"], ["case1"], size=(H, W), cache_dir=None)


def test_mask_of_another_size_is_named(tmp_path):
    images, masks = make_folders(tmp_path)
    Image.fromarray(np.zeros((H, W + 1), np.uint8)).save(masks / "EX" / "case0.png")
    source = PairedFolderSource(images, masks)
    with pytest.raises(ValueError, match=rf"mask '.*case0\.png' is {W + 1}x{H}.*image '.*case0\.png' is {W}x{H}"):
        source.dataset(["EX"], ["case0"], size=(H, W), cache_dir=None)
    with pytest.raises(ValueError, match=r"mask '.*case0\.png'"):
        source.check_data()


def test_mask_with_more_than_two_values_is_named(tmp_path):
    images, masks = make_folders(tmp_path)
    labels = _square_mask(0) * 255
    labels[0, 0] = 128
    Image.fromarray(labels).save(masks / "EX" / "case0.png")
    source = PairedFolderSource(images, masks)
    with pytest.raises(ValueError, match=r"mask file '.*case0\.png' holds 3 values \(0, 128, 255\)"):
        source.dataset(["EX"], ["case0"], size=(H, W), cache_dir=None)[0]
    with pytest.raises(ValueError, match=r"mask file '.*case0\.png' holds 3 values"):
        source.check_data()


def test_empty_folder_is_named(tmp_path):
    images, masks = make_folders(tmp_path)
    (tmp_path / "nothing").mkdir()
    (tmp_path / "nothing" / "notes.txt").write_text("no pictures")
    with pytest.raises(ValueError, match=r"image folder '.*nothing' holds no image file"):
        PairedFolderSource(tmp_path / "nothing", masks)
    (masks / "HE").mkdir()
    with pytest.raises(ValueError, match=r"'HE' mask folder '.*HE' holds no image file"):
        PairedFolderSource(images, masks)


def test_duplicate_stems_name_both_files(tmp_path):
    images, masks = make_folders(tmp_path)
    shutil.copy(images / "case0.png", images / "case0.jpg")
    with pytest.raises(ValueError, match=r"duplicate file stem 'case0'.*case0\.jpg'.*case0\.png'"):
        PairedFolderSource(images, masks)


def test_crop_settings_do_not_share_cache_entries(tmp_path):
    images, masks = tmp_path / "images", tmp_path / "masks"
    (masks / "EX").mkdir(parents=True)
    images.mkdir()
    fundus = np.zeros((H, W, 3), np.uint8)
    fundus[10:30, 14:42] = 150  # a bright field of view on black: cropped when crop_fov is on
    Image.fromarray(fundus).save(images / "eye.png")
    Image.fromarray(np.zeros((H, W), np.uint8)).save(masks / "EX" / "eye.png")
    cache = tmp_path / "cache"
    cropped = PairedFolderSource(images, masks).dataset(["EX"], ["eye"], (H, W), cache)[0]["image"]
    whole = PairedFolderSource(images, masks, crop_fov=False).dataset(["EX"], ["eye"], (H, W), cache)[0]["image"]
    assert (cropped > 0).all()  # the crop fills the frame with the field of view
    np.testing.assert_array_equal((whole[0] * 255).round().byte().numpy(), fundus[..., 0])


def test_paired_folders_train_end_to_end(tmp_path):
    images, masks = make_folders(tmp_path / "data")
    source = PairedFolderSource(images, masks, crop_fov=False)
    config = tiny_config(epochs=2, size=(32, 48), cache_dir=str(tmp_path / "cache"))
    run_experiment(config, tmp_path / "out", progress=False, source=source)
    run = tmp_path / "out" / "runs" / "ganet" / "EX" / "fold1"
    metrics = json.loads((run / "metrics.json").read_text())
    assert sorted(metrics["test_ids"] if "test_ids" in metrics else metrics["spec"]["test_ids"]) == sorted(
        source.folds("cv", n_folds=2, seed=0)[0][1]
    )
    assert (run / "log.csv").exists() and (run / "checkpoint_best.pt").exists()
    assert (tmp_path / "out" / "results.md").exists()


@pytest.mark.skipif(REAL_ROOT is None, reason="set GA_IDRID_ROOT to the IDRiD download")
def test_real_idrid_reorganized_into_folders_gives_bit_equal_items(tmp_path):
    idrid = IDRiDSource(REAL_ROOT)
    ids = idrid.ids("all")
    with_both = [i for i in ids if i in idrid.layout.masks["EX"] and i in idrid.layout.masks["HE"]][:3]
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    for name in ("EX", "HE"):
        (masks / name).mkdir(parents=True)
    for image_id in with_both:
        source_image = idrid.layout.images[image_id]
        os.symlink(source_image, images / source_image.name)
        for name in ("EX", "HE"):
            mask = idrid.layout.masks[name][image_id]
            os.symlink(mask, masks / name / f"{image_id}{mask.suffix}")
    folders = PairedFolderSource(images, masks)
    assert folders.ids("all") == with_both
    size = (96, 128)
    expected = idrid.dataset(["EX", "HE"], with_both, size, cache_dir=None)
    got = folders.dataset(["EX", "HE"], with_both, size, cache_dir=None)
    for reference, item in zip(expected, got, strict=True):
        assert item["id"] == reference["id"]
        assert item["mask"].sum() > 0
        np.testing.assert_array_equal(item["image"].numpy(), reference["image"].numpy())
        np.testing.assert_array_equal(item["mask"].numpy(), reference["mask"].numpy())
