"""Finding an IDRiD download's files: every level of the download, numeric order, and every stray or missing file
named."""

import shutil

import pytest
from idrid_trees import (
    LESION_FOLDERS,
    SET_FOLDERS,
    _base,
    _small_tree,
    _source_files,
    needs_real_idrid,
)

from group_attention.fundus.data import (
    IDRiD,
    discover_idrid,
    make_synthetic_idrid,
)


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


def test_two_masks_of_one_image_and_lesion_are_an_error(tmp_path):
    root = _small_tree(tmp_path)
    mask = _source_files(root, "EX")["IDRiD_01"]
    shutil.copy(mask, mask.with_suffix(".tiff"))
    with pytest.raises(ValueError, match=r"EX mask of image 'IDRiD_01' appears twice"):
        discover_idrid(root)


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


@needs_real_idrid
def test_real_discovery_counts_match_the_files(real_root):
    layout = discover_idrid(real_root)
    for split, set_name in SET_FOLDERS.items():
        images = list((_base(real_root) / "1. Original Images" / set_name).glob("IDRiD_*.jpg"))
        assert layout.counts(split)["images"] == len(images)
    for code in LESION_FOLDERS:
        assert len(layout.masks[code]) == len(_source_files(real_root, code))
    assert layout.counts("all")["EX"] > 0 and layout.counts("all")["HE"] > 0
