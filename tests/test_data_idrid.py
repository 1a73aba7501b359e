"""The IDRiD dataset: items, mask fractions against direct counts, the cache, bad input, real data.

Synthetic trees (every mask encoding, nested downloads) always run; real-data tests read the root from
GA_IDRID_ROOT (the folder containing "A. Segmentation", e.g. /work/shared/data/idrid-mini) and skip when it is unset.
"""

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from idrid_trees import (
    LESION_FOLDERS,
    SET_FOLDERS,
    SIZE,
    _all_items,
    _assert_same_items,
    _base,
    _reference_mask,
    _small_tree,
    _source_files,
    needs_real_idrid,
)
from PIL import Image
from torch.utils.data import DataLoader

import group_attention.fundus.data.preprocessed as preprocessed_module
from group_attention.fundus.data import (
    IDRiD,
    RandomFlipRotate,
    discover_idrid,
    make_synthetic_idrid,
)


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


def test_cache_hits_return_identical_tensors_without_decoding(tmp_path, monkeypatch):
    root = _small_tree(tmp_path / "data")
    cache = tmp_path / "cache"
    first = _all_items(IDRiD(root, lesion=["EX", "HE"], split="all", size=(24, 36), cache_dir=cache))
    # 3 images; EX for all, HE for 2 of them (one training image has none): 3 + 3 + 2 entries.
    assert len(list(cache.glob("*.npz"))) == 8

    def must_not_decode(path):
        raise AssertionError(f"decoded {path} despite the cache")

    monkeypatch.setattr(preprocessed_module, "read_fundus_image", must_not_decode)
    monkeypatch.setattr(preprocessed_module, "read_lesion_mask", must_not_decode)
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
    original = preprocessed_module.read_lesion_mask

    def counting_read(path):
        decoded.append(Path(path).name)
        return original(path)

    monkeypatch.setattr(preprocessed_module, "read_lesion_mask", counting_read)
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


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"transform": "flip"}, "transform must be a callable"),
        ({"cache_dir": 123}, "cache_dir must be 'auto', a folder path or None, got 123"),
    ],
)
def test_transform_and_cache_dir_are_checked_when_the_dataset_is_built(tmp_path, kwargs, message):
    with pytest.raises(TypeError, match=message):
        IDRiD(_small_tree(tmp_path), **kwargs)


def test_crop_fov_must_be_a_bool(tmp_path):
    root = _small_tree(tmp_path)
    with pytest.raises(TypeError, match=r"crop_fov must be True or False; got 'False'"):
        IDRiD(root, cache_dir=None, crop_fov="False")


@pytest.mark.parametrize("kwargs, message", ILL_CASES)
def test_bad_arguments_raise_naming_the_argument(tmp_path, kwargs, message):
    root = _small_tree(tmp_path)
    with pytest.raises(ValueError, match=message):
        IDRiD(root, cache_dir=None, **kwargs)


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
    monkeypatch.setattr(preprocessed_module, "read_fundus_image", lambda path: pytest.fail(f"decoded {path}"))
    again = IDRiD(real_root, lesion=["EX", "HE"], split="train", ids=real_ids, cache_dir=real_dataset.cache.directory)
    _assert_same_items(first, _all_items(again))
    inner = IDRiD(_base(real_root), lesion="EX", split="train", ids=real_ids[:1], cache_dir=None)
    assert inner.ids == real_ids[:1]


@needs_real_idrid
def test_real_masks_without_crop_match_the_full_frame_count(real_root, real_ids):
    dataset = IDRiD(real_root, lesion=["EX", "HE"], ids=real_ids[:1], size=(356, 536), crop_fov=False, cache_dir=None)
    mask = dataset[0]["mask"].numpy()
    for channel, code in enumerate(["EX", "HE"]):
        expected = _reference_mask(_source_files(real_root, code)[real_ids[0]]).mean()
        assert abs(mask[channel].mean() - expected) <= 0.1 * expected, code
