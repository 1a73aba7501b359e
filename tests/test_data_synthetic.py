"""The synthetic IDRiD look-alike: official layout and formats, exact masks, learnable, deterministic.

Files are checked with Pillow and NumPy directly, not with the loader under test.
"""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from group_attention.fundus.data import IDRiD, make_synthetic_idrid, render_fundus
from group_attention.fundus.data import synthetic as synthetic_module

SIZE = (96, 144)
FOLDERS = {
    "MA": "1. Microaneurysms",
    "HE": "2. Haemorrhages",
    "EX": "3. Hard Exudates",
    "SE": "4. Soft Exudates",
    "OD": "5. Optic Disc",
}
SETS = {"train": "a. Training Set", "test": "b. Testing Set"}


def _tree(root: Path, nested: bool = False) -> Path:
    base = root / "A. Segmentation"
    return base / "A. Segmentation" if nested else base


def _mask_files(base: Path, split: str, code: str) -> list[Path]:
    return sorted((base / "2. All Segmentation Groundtruths" / SETS[split] / FOLDERS[code]).glob("*.tif"))


def _red_on_black(path: Path) -> np.ndarray:
    """Reference mask reading, as the idrid-mini README says: any non-black pixel is lesion."""
    return np.asarray(Image.open(path).convert("L")) > 0


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return make_synthetic_idrid(tmp_path_factory.mktemp("synthetic"), n_train=8, n_test=4, size=SIZE, seed=0)


# --- layout and formats -------------------------------------------------------------------------------


def test_writes_the_official_folders_and_file_names(tree):
    base = _tree(tree)
    train = sorted(p.name for p in (base / "1. Original Images" / "a. Training Set").iterdir())
    test = sorted(p.name for p in (base / "1. Original Images" / "b. Testing Set").iterdir())
    assert train == [f"IDRiD_{i:02d}.jpg" for i in range(1, 9)]
    assert test == [f"IDRiD_{i:02d}.jpg" for i in range(9, 13)]
    for split, ids in (("train", range(1, 9)), ("test", range(9, 13))):
        for code in ("MA", "EX", "OD"):
            assert [p.name for p in _mask_files(base, split, code)] == [f"IDRiD_{i:02d}_{code}.tif" for i in ids]


def test_one_training_image_lacks_its_he_mask_and_se_exists_only_for_some(tree):
    base = _tree(tree)
    assert len(_mask_files(base, "train", "HE")) == 7
    assert len(_mask_files(base, "test", "HE")) == 4
    n_se = len(_mask_files(base, "train", "SE")) + len(_mask_files(base, "test", "SE"))
    assert 1 <= len(_mask_files(base, "train", "SE")) and n_se < 12


def test_images_are_rgb_jpegs_and_masks_tiffs_of_the_same_size(tree):
    base = _tree(tree)
    for image_path in sorted(base.glob("1. Original Images/*/*.jpg")):
        with Image.open(image_path) as image:
            assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (SIZE[1], SIZE[0]))
    for mask_path in sorted(base.glob("2. All Segmentation Groundtruths/*/*/*.tif")):
        with Image.open(mask_path) as mask:
            assert mask.format == "TIFF" and mask.size == (SIZE[1], SIZE[0])
            assert mask.mode in ("P", "RGB")


@pytest.mark.parametrize("encoding, modes", [("palette", {"P"}), ("rgb", {"RGB"}), ("mixed", {"P", "RGB"})])
def test_mask_encodings_are_red_on_black(tmp_path, encoding, modes):
    root = make_synthetic_idrid(tmp_path, n_train=3, n_test=1, size=(48, 72), mask_encoding=encoding)
    found = set()
    for path in sorted(_tree(root).glob("2. All Segmentation Groundtruths/*/*/*.tif")):
        with Image.open(path) as mask:
            found.add(mask.mode)
            colours = {tuple(c) for c in np.asarray(mask.convert("RGB")).reshape(-1, 3)}
        assert colours <= {(0, 0, 0), (255, 0, 0)}, path
    assert found == modes


def test_mixed_encoding_gives_every_lesion_both_encodings(tree):
    base = _tree(tree)
    for code in ("MA", "EX", "OD"):
        modes = {Image.open(p).mode for split in SETS for p in _mask_files(base, split, code)}
        assert modes == {"P", "RGB"}, code


def test_nested_download_layout(tmp_path):
    root = make_synthetic_idrid(tmp_path, n_train=2, n_test=1, size=(48, 72), nested=True)
    inner = root / "A. Segmentation" / "A. Segmentation"
    assert (inner / "1. Original Images" / "a. Training Set" / "IDRiD_01.jpg").is_file()
    assert not (root / "A. Segmentation" / "1. Original Images").exists()


# --- exact masks, learnable colours ----------------------------------------------------------------


def test_rendered_masks_are_disjoint_and_inside_the_field_of_view():
    image, masks = render_fundus(np.random.default_rng(4), (120, 180), draw_he=True, draw_se=True)
    lesions = [masks[c] for c in ("MA", "HE", "EX", "SE", "OD")]
    assert sum(m.astype(int) for m in lesions).max() == 1
    for code, mask in masks.items():
        assert mask.any(), code
        assert image[mask].sum(axis=-1).min() > 60, code  # never on the black background


def test_draw_flags_switch_lesions_off():
    _, masks = render_fundus(np.random.default_rng(0), (96, 144), draw_he=False, draw_se=False)
    assert not masks["HE"].any() and not masks["SE"].any()


def test_jpeg_pixels_under_each_mask_have_the_lesion_colour(tree):
    """Hard exudates are yellow (green far above blue), haemorrhages dark: what a model can learn."""
    base = _tree(tree)
    for image_path in sorted(base.glob("1. Original Images/a. Training Set/*.jpg"))[:4]:
        rgb = np.asarray(Image.open(image_path), dtype=np.float64)
        truths = base / "2. All Segmentation Groundtruths" / "a. Training Set"
        masks = {code: truths / FOLDERS[code] / f"{image_path.stem}_{code}.tif" for code in ("EX", "HE", "OD")}
        fov = rgb.sum(-1) > 150
        ex = _red_on_black(masks["EX"])
        lesion_free = fov & ~ex & ~_red_on_black(masks["OD"])
        yellowness = rgb[..., 1] - rgb[..., 2]
        assert yellowness[ex].mean() > yellowness[lesion_free].mean() + 50
        if masks["HE"].exists():
            he = _red_on_black(masks["HE"])
            assert rgb[he].sum(-1).mean() < rgb[lesion_free].sum(-1).mean() - 80


def test_exudates_are_separable_by_colour_after_the_loader(tree):
    """End to end: a fixed colour rule on the loaded images recovers the loaded EX masks."""
    dataset = IDRiD(tree, lesion="EX", split="all", size=SIZE, cache_dir=None)
    image = np.stack([dataset[i]["image"].numpy() for i in range(len(dataset))])
    mask = np.stack([dataset[i]["mask"][0].numpy() for i in range(len(dataset))]) > 0
    predicted = (image[:, 1] - image[:, 2]) > 0.35
    dice = 2 * (predicted & mask).sum() / (predicted.sum() + mask.sum())
    assert dice > 0.7


# --- determinism, speed, safety -------------------------------------------------------------------


def _file_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_identical_files_other_seed_differs(tmp_path):
    a = make_synthetic_idrid(tmp_path / "a", n_train=3, n_test=1, size=(48, 72), seed=7)
    b = make_synthetic_idrid(tmp_path / "b", n_train=3, n_test=1, size=(48, 72), seed=7)
    c = make_synthetic_idrid(tmp_path / "c", n_train=3, n_test=1, size=(48, 72), seed=8)
    assert _file_bytes(a) == _file_bytes(b)
    image = "A. Segmentation/1. Original Images/a. Training Set/IDRiD_01.jpg"
    assert _file_bytes(a)[image] != _file_bytes(c)[image]


def test_no_temporary_files_are_left(tree):
    assert not [p for p in tree.rglob("*") if p.name.endswith(".tmp")]


def test_an_interrupted_run_leaves_no_partial_tree(tmp_path, monkeypatch):
    """The third file fails to save: neither a half-written file nor a partial "A. Segmentation" remains."""
    original_save = Image.Image.save
    saved = []

    def save_then_fail(self, fp, *args, **kwargs):
        if len(saved) == 2:
            Path(fp).write_bytes(b"partial")
            raise OSError("disk full")
        saved.append(fp)
        return original_save(self, fp, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", save_then_fail)
    with pytest.raises(OSError, match="disk full"):
        make_synthetic_idrid(tmp_path, n_train=2, n_test=0, size=(48, 72))
    assert not list(tmp_path.iterdir())


def test_a_failed_overwrite_keeps_the_previous_tree(tmp_path, monkeypatch):
    make_synthetic_idrid(tmp_path, n_train=2, n_test=0, size=(48, 72))
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    with pytest.raises(ValueError, match=r"seed must be an int >= 0, got -1"):
        make_synthetic_idrid(tmp_path, n_train=1, n_test=0, size=(48, 72), seed=-1, overwrite=True)

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(synthetic_module, "_write_image_and_masks", fail)
    with pytest.raises(OSError, match="disk full"):
        make_synthetic_idrid(tmp_path, n_train=1, n_test=0, size=(48, 72), overwrite=True)
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_every_lesion_folder_exists_even_without_masks(tmp_path):
    """One training image has no HE mask; with a single image the HE folder still exists (as in the download), so
    the dataset reads an all-zero haemorrhage channel."""
    root = make_synthetic_idrid(tmp_path, n_train=1, n_test=0, size=(48, 72))
    masks = root / "A. Segmentation" / "2. All Segmentation Groundtruths" / "a. Training Set"
    assert sorted(p.name for p in masks.iterdir()) == sorted(synthetic_module.LESIONS.values())
    item = IDRiD(root, lesion="HE", size=(48, 72), cache_dir=None)[0]
    assert item["mask"].sum() == 0


def test_marker_records_the_parameters(tree):
    marker = json.loads((tree / "A. Segmentation" / synthetic_module.MARKER_FILE).read_text())
    assert marker["n_train"] == 8 and marker["size"] == list(SIZE)
    assert len(marker["without_HE_mask"]) == 1


def test_existing_tree_needs_overwrite_and_foreign_trees_are_never_deleted(tmp_path):
    make_synthetic_idrid(tmp_path / "ours", n_train=2, n_test=0, size=(48, 72))
    with pytest.raises(FileExistsError, match="overwrite=True"):
        make_synthetic_idrid(tmp_path / "ours", n_train=2, n_test=0, size=(48, 72))
    make_synthetic_idrid(tmp_path / "ours", n_train=1, n_test=0, size=(48, 72), overwrite=True)
    assert len(list((tmp_path / "ours").rglob("*.jpg"))) == 1

    foreign = tmp_path / "foreign" / "A. Segmentation"
    foreign.mkdir(parents=True)
    (foreign / "keep.txt").write_text("real data")
    with pytest.raises(FileExistsError, match="not written by make_synthetic_idrid"):
        make_synthetic_idrid(tmp_path / "foreign", overwrite=True)
    assert (foreign / "keep.txt").read_text() == "real data"


ILL_CASES = [
    ({"n_train": 0}, "n_train"),
    ({"n_test": -1}, "n_test"),
    ({"n_train": 60, "n_test": 60}, "at most 99"),
    ({"size": (0, 10)}, "size"),
    ({"size": (96,)}, "size"),
    ({"mask_encoding": "jpeg"}, "mask_encoding"),
]


@pytest.mark.parametrize("kwargs, message", ILL_CASES)
def test_bad_arguments_raise_naming_them(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_synthetic_idrid(tmp_path, **kwargs)
    assert not (tmp_path / "A. Segmentation").exists()
