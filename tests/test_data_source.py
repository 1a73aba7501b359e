"""The data seam: what the engine can ask of a source, for the IDRiD download and the synthetic look-alike."""

import pytest
import torch
from idrid_trees import _base

from group_attention.fundus.data import (
    IDRiD,
    IDRiDSource,
    SegmentationSource,
    SyntheticIDRiDSource,
    make_synthetic_idrid,
)


@pytest.fixture(scope="module")
def download(tmp_path_factory):
    return make_synthetic_idrid(tmp_path_factory.mktemp("download"), n_train=4, n_test=2, size=(48, 72))


def _ids_in(root, set_name: str) -> list[str]:
    """Image ids of one official set, from the file names (not through the library)."""
    folder = _base(root) / "1. Original Images" / set_name
    return sorted(p.stem for p in folder.glob("IDRiD_*.jpg"))


def test_idrid_source_names_the_lesions_and_the_official_sets(download):
    source = IDRiDSource(download)
    assert isinstance(source, SegmentationSource) and source.synthetic is False
    assert source.classes == ("MA", "HE", "EX", "SE", "OD")
    assert (
        source.ids("train") == _ids_in(download, "a. Training Set") == ["IDRiD_01", "IDRiD_02", "IDRiD_03", "IDRiD_04"]
    )
    assert source.ids("test") == _ids_in(download, "b. Testing Set") and source.ids("all") == [
        f"IDRiD_{i:02d}" for i in range(1, 7)
    ]


def test_official_folds_train_on_the_training_set_and_test_on_the_testing_set(download):
    assert IDRiDSource(download).folds("official") == [
        (_ids_in(download, "a. Training Set"), _ids_in(download, "b. Testing Set"))
    ]


@pytest.mark.parametrize("n_folds", [2, 3])
def test_cross_validation_folds_are_disjoint_and_cover_every_image(download, n_folds):
    folds = IDRiDSource(download).folds("cv", n_folds=n_folds, seed=0)
    tests = [test for _, test in folds]
    assert len(folds) == n_folds and sorted(sum(tests, [])) == [f"IDRiD_{i:02d}" for i in range(1, 7)]
    for train, test in folds:
        assert not set(train) & set(test) and sorted(train + test) == sorted(sum(tests, []))


def test_the_dataset_gives_the_requested_ids_and_classes_at_the_size(download):
    dataset = IDRiDSource(download).dataset(["HE", "EX"], ["IDRiD_05", "IDRiD_02"], size=(24, 36), cache_dir=None)
    items = {item["id"]: item for item in dataset}
    assert sorted(items) == ["IDRiD_02", "IDRiD_05"]
    reference = IDRiD(download, lesion=["HE", "EX"], split="all", size=(24, 36), cache_dir=None)
    for image_id, item in items.items():
        expected = reference[reference.ids.index(image_id)]
        assert item["image"].shape == (3, 24, 36) and item["image"].dtype == torch.float32
        assert torch.equal(item["mask"], expected["mask"]) and torch.equal(item["image"], expected["image"])


def test_the_field_of_view_crop_can_be_turned_off(download):
    cropped = IDRiDSource(download).dataset(["EX"], ["IDRiD_01"], size=(24, 36), cache_dir=None)
    whole = IDRiDSource(download, crop_fov=False).dataset(["EX"], ["IDRiD_01"], size=(24, 36), cache_dir=None)
    assert cropped.config.crop_fov is True and whole.config.crop_fov is False
    assert not torch.equal(cropped[0]["image"], whole[0]["image"])
    assert tuple(whole.crop_box("IDRiD_01")) == (0, 0, 48, 72)  # the whole 48 x 72 frame


def test_unknown_classes_and_protocols_are_named(download):
    source = IDRiDSource(download)
    with pytest.raises(ValueError, match=r"lesion must be one of \['MA', 'HE', 'EX', 'SE', 'OD'\], got 'XX'"):
        source.check_classes(["EX", "XX"])
    assert source.check_classes(["HE", "EX"]) == ("HE", "EX")
    with pytest.raises(ValueError, match=r"protocol must be one of \['cv', 'official'\], got 'loo'"):
        source.folds("loo")


def test_a_wrong_idrid_root_fails_when_the_source_is_built(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        IDRiDSource(tmp_path / "missing")
    with pytest.raises(ValueError, match="is not an IDRiD segmentation tree"):
        IDRiDSource(tmp_path)


def test_the_synthetic_source_writes_its_tree_once_when_prepared(tmp_path):
    source = SyntheticIDRiDSource(tmp_path / "synthetic", n_train=2, n_test=1, size=(48, 72), seed=3)
    assert source.synthetic is True and not (tmp_path / "synthetic").exists()  # nothing written before prepare()
    source.prepare()
    image = tmp_path / "synthetic" / "A. Segmentation" / "1. Original Images" / "a. Training Set" / "IDRiD_01.jpg"
    written = image.stat().st_mtime_ns
    SyntheticIDRiDSource(tmp_path / "synthetic", n_train=2, n_test=1, size=(48, 72), seed=3).prepare()
    assert image.stat().st_mtime_ns == written  # an existing tree is reused
    assert source.ids("train") == ["IDRiD_01", "IDRiD_02"] and source.ids("test") == ["IDRiD_03"]


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(n_train=0), ValueError, "n_train must be an int >= 1, got 0"),
        (dict(seed=-1), ValueError, "seed must be an int >= 0, got -1"),
        (dict(n_test=1.5), TypeError, "n_test must be an int >= 0, got 1.5"),
        (dict(size=(0, 10)), ValueError, "size must be two positive ints"),
    ],
)
def test_the_synthetic_source_checks_its_settings_before_writing(tmp_path, kwargs, error, message):
    with pytest.raises(error, match=message):
        SyntheticIDRiDSource(tmp_path / "synthetic", **kwargs)
    assert not (tmp_path / "synthetic").exists()
