"""A synthetic IDRiD look-alike, written in the official layout and file formats.

For tests, CI and a first try where IDRiD itself is not available. :func:`make_synthetic_idrid` writes
``A. Segmentation/...`` exactly like the download (see :mod:`group_attention.fundus.data.idrid`): JPEG fundus
photographs and red-on-black TIFF masks (palette or RGB), one training image without a haemorrhage
mask, soft exudate masks for only some images. Each photograph has a dark background around a circular
orange-red field of view clipped at top and bottom like IDRiD's, vignetting, a darker macula, vessels
leaving a bright optic disc, small bright yellow hard exudates (EX), dark red haemorrhage blobs (HE),
tiny dark microaneurysms (MA) and pale soft exudates (SE). Lesions are painted with hard edges into the
image from the very masks that are saved (only the JPEG is lossy), so the masks are exact and a model
can learn them: lesions differ from the background in colour, and haemorrhages from vessels in shape.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, features

from ..._checks import check_int
from ...atomic import atomic_write_text
from .idrid import IDRiDSource
from .idrid_layout import IMAGES_FOLDER, LESIONS, MASKS_FOLDER, SET_FOLDERS, TOP_FOLDER
from .preprocess import check_size

__all__ = ["make_synthetic_idrid", "render_fundus", "MASK_ENCODINGS", "SyntheticIDRiDSource"]

MASK_ENCODINGS = ("palette", "rgb", "mixed")
MARKER_FILE = "synthetic-idrid.json"

# Colours (RGB) of the fundus and its structures, chosen near real IDRiD photographs.
_FUNDUS = np.array([205.0, 92.0, 38.0], dtype=np.float32)
_VESSEL = np.array([125.0, 28.0, 20.0], dtype=np.float32)
_OPTIC_DISC = np.array([250.0, 218.0, 150.0], dtype=np.float32)
_LESION_COLOURS = {
    "EX": np.array([242.0, 222.0, 88.0]),  # bright yellow
    "HE": np.array([98.0, 16.0, 10.0]),  # dark red
    "MA": np.array([112.0, 22.0, 14.0]),  # dark red dots
    "SE": np.array([228.0, 208.0, 178.0]),  # pale, whitish
}
# Lesion radii as fractions of the image height (IDRiD: 2848 px high).
_RADIUS = {"EX": (0.004, 0.011), "HE": (0.010, 0.028), "MA": (0.003, 0.005), "SE": (0.022, 0.040)}


@dataclass(frozen=True)
class _ImagePlan:
    """What one synthetic image contains and which of its mask files are written."""

    image_id: str
    split: str
    index: int
    has_he: bool
    has_se: bool


def render_fundus(
    rng: np.random.Generator,
    size: tuple[int, int],
    draw_he: bool = True,
    draw_se: bool = False,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Draw one synthetic fundus photograph and its exact lesion masks.

    Args:
        rng: the random generator (the picture is a pure function of its state).
        size: ``(H, W)`` of the picture.
        draw_he: draw haemorrhages (False: none, matching a missing HE mask).
        draw_se: draw soft exudates.

    Shape:
        Returns the image ``(H, W, 3)`` uint8 and ``{code: (H, W) bool}`` for every code of
        :data:`~group_attention.fundus.data.idrid.LESIONS` (all-False where none was drawn).
    """
    height, width = check_size(size)
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float32)
    centre = (height / 2 + rng.uniform(-0.02, 0.02) * height, width / 2 + rng.uniform(-0.02, 0.02) * width)
    radius = height * rng.uniform(0.58, 0.62)  # > H/2: the disc is clipped at top and bottom, as in IDRiD
    distance = np.hypot(rows - centre[0], cols - centre[1]) / radius
    fov = distance <= 1.0

    image = _fundus_background(rng, distance, height, width)
    od_side = rng.choice([-1.0, 1.0])  # left or right eye
    od_centre = (
        centre[0] + rng.uniform(-0.08, 0.08) * radius,
        centre[1] + od_side * rng.uniform(0.5, 0.6) * radius,
    )
    macula = (centre[0] + rng.uniform(-0.05, 0.05) * radius, centre[1] - od_side * 0.1 * radius)
    macula_distance = np.hypot(rows - macula[0], cols - macula[1]) / (0.15 * radius)
    image *= (1.0 - 0.25 * np.exp(-(macula_distance**2)))[..., None]

    od_radius = max(2.0, height * rng.uniform(0.075, 0.09))
    od_distance = np.hypot(rows - od_centre[0], cols - od_centre[1]) / od_radius
    masks = {code: np.zeros((height, width), dtype=bool) for code in LESIONS}
    masks["OD"] = (od_distance <= 1.0) & fov
    od_glow = np.clip(1.1 - 0.4 * od_distance[masks["OD"]], 0.0, 1.0)[:, None]
    image[masks["OD"]] = od_glow * _OPTIC_DISC + (1 - od_glow) * image[masks["OD"]]

    vessels = (_vessel_layer(rng, height, width, od_centre, centre, radius) * fov)[..., None]
    image = image * (1 - 0.6 * vessels) + 0.6 * vessels * _VESSEL

    # Lesions never overlap each other or the optic disc, so every painted pixel has one true label.
    occupied = masks["OD"].copy()
    lesion_counts = {
        "EX": rng.integers(8, 30),
        "HE": rng.integers(2, 9) if draw_he else 0,
        "MA": rng.integers(3, 12),
        "SE": rng.integers(1, 4) if draw_se else 0,
    }
    for code, count in lesion_counts.items():
        for _ in range(count):
            # Hard exudates gather around the macula, as in diabetic maculopathy.
            near, spread = (macula, 0.35) if code == "EX" and rng.random() < 0.7 else (centre, 0.8)
            placed = _place_lesion(rng, code, height, near, spread * radius, distance, occupied)
            if placed is not None:
                window, shape = placed
                masks[code][window] |= shape
                occupied[window] |= shape
        image[masks[code]] = _LESION_COLOURS[code] * rng.uniform(0.92, 1.05, size=3)

    # One noise field serves both regions: sensor noise on the retina, dark noise around it.
    noise = rng.standard_normal(size=image.shape, dtype=np.float32)
    image = np.where(fov[..., None], image + 3.0 * noise, 4.0 + 2.0 * noise)
    return np.clip(image, 0, 255).astype(np.uint8), masks


def _fundus_background(rng: np.random.Generator, distance: np.ndarray, height: int, width: int) -> np.ndarray:
    """Orange-red retina with vignetting and smooth brightness variations, ``(H, W, 3)`` float."""
    colour = (_FUNDUS * rng.uniform(0.85, 1.1) + rng.uniform(-10, 10, size=3)).astype(np.float32)
    vignette = np.clip(1.0 - 0.45 * distance**2.5, 0.3, 1.0)
    coarse = Image.fromarray(rng.uniform(0.93, 1.07, size=(5, 7)).astype(np.float32))  # mode "F"
    texture = np.asarray(coarse.resize((width, height), Image.Resampling.BICUBIC))
    return colour * (vignette * texture)[..., None]


def _vessel_layer(rng, height, width, od_centre, centre, radius) -> np.ndarray:
    """Vessel opacity in [0, 1], ``(H, W)``: random smooth walks leaving the optic disc."""
    layer = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(layer)
    main_width = max(1, round(height / 150))
    towards_centre = np.arctan2(centre[0] - od_centre[0], centre[1] - od_centre[1])
    for index in range(int(rng.integers(6, 10))):
        angle = towards_centre + np.pi * (index / 4.0 - 1.0) + rng.normal(0, 0.2)
        points = _random_walk(rng, od_centre, angle, step=0.04 * radius, centre=centre, radius=radius)
        draw.line([(x, y) for y, x in points], fill=255, width=main_width)
        if len(points) > 4:  # one thinner branch per vessel
            start = points[int(rng.integers(1, len(points) - 2))]
            branch = _random_walk(rng, start, angle + rng.choice([-1, 1]) * 0.8, 0.03 * radius, centre, radius)
            draw.line([(x, y) for y, x in branch], fill=200, width=max(1, main_width - 1))
    layer = layer.filter(ImageFilter.GaussianBlur(0.5))
    return np.asarray(layer, dtype=np.float32) / 255.0


def _random_walk(rng, start, angle, step, centre, radius, max_steps=60) -> list[tuple[float, float]]:
    """Points ``(row, col)`` of a smoothly turning walk from ``start`` until it leaves the field of view."""
    points = [start]
    turn = rng.normal(0, 0.05)
    for _ in range(max_steps):
        turn = 0.7 * turn + rng.normal(0, 0.04)
        angle += turn
        row, col = points[-1][0] + step * np.sin(angle), points[-1][1] + step * np.cos(angle)
        if np.hypot(row - centre[0], col - centre[1]) > 0.97 * radius:
            break
        points.append((row, col))
    return points


def _place_lesion(rng, code, height, near, spread, distance, occupied, tries=20):
    """One elliptic lesion inside the field of view, clear of ``occupied`` by at least one pixel.

    Returns ``(window, shape)``: a pair of slices into the image and the lesion's boolean mask there;
    None when no free place was found.
    """
    low, high = _RADIUS[code]
    rows, cols = distance.shape
    for _ in range(tries):
        semi_major = max(1.0, height * rng.uniform(low, high))
        semi_minor = max(0.8, semi_major * rng.uniform(0.5, 1.0))
        row, col = near[0] + rng.normal(0, spread / 2), near[1] + rng.normal(0, spread / 2)
        if not (0 <= row < rows and 0 <= col < cols) or distance[int(row), int(col)] > 0.9:
            continue
        window, shape = _ellipse(rows, cols, row, col, semi_major, semi_minor, rng.uniform(0, np.pi))
        if shape.any() and not (_dilate(shape) & occupied[window]).any() and (distance[window][shape] <= 0.95).all():
            return window, shape
    return None


def _ellipse(rows, cols, row, col, semi_major, semi_minor, angle):
    """Pixel centres inside a rotated ellipse, as ``(window, shape)``: slices into the ``(rows, cols)``
    image and the ``bool`` mask within them, the window leaving a free margin around the ellipse."""
    reach = int(np.ceil(semi_major)) + 2
    top, bottom = max(0, int(row) - reach), min(rows, int(row) + reach + 1)
    left, right = max(0, int(col) - reach), min(cols, int(col) + reach + 1)
    window_rows, window_cols = np.mgrid[top:bottom, left:right].astype(np.float32)
    dy, dx = window_rows - row, window_cols - col
    along = dx * np.cos(angle) + dy * np.sin(angle)
    across = -dx * np.sin(angle) + dy * np.cos(angle)
    shape = (along / semi_major) ** 2 + (across / semi_minor) ** 2 <= 1.0
    return (slice(top, bottom), slice(left, right)), shape


def _dilate(mask: np.ndarray) -> np.ndarray:
    """One-pixel dilation (3 x 3 neighbourhood)."""
    padded = np.pad(mask, 1)
    grown = np.zeros_like(mask)
    for dy in range(3):
        for dx in range(3):
            grown |= padded[dy : dy + mask.shape[0], dx : dx + mask.shape[1]]
    return grown


# --------------------------------------------------------------------------------------------------
# Writing the tree
# --------------------------------------------------------------------------------------------------


def _save(image: Image.Image, path: Path, **options) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **options)


def _mask_image(mask: np.ndarray, encoding: str) -> Image.Image:
    """Red lesion on black, as a palette image (index 1 = red) or an RGB image."""
    if encoding == "palette":
        image = Image.frombytes("P", (mask.shape[1], mask.shape[0]), mask.astype(np.uint8).tobytes())
        image.putpalette([0, 0, 0, 255, 0, 0])
        return image
    rgb = np.zeros(mask.shape + (3,), dtype=np.uint8)
    rgb[mask, 0] = 255
    return Image.fromarray(rgb)


def _file_encoding(mask_encoding: str, image_index: int, lesion_index: int) -> tuple[str, str | None]:
    """(palette or rgb, TIFF compression) of one mask file; "mixed" alternates so every lesion gets both."""
    if mask_encoding == "mixed":
        encoding = ("palette", "rgb")[(image_index + lesion_index) % 2]
    else:
        encoding = mask_encoding
    # Mostly deflate (small files); some palette masks stay uncompressed, like IDRiD's own.
    raw = encoding == "palette" and image_index % 4 == 1
    return encoding, (None if raw or not features.check("libtiff") else "tiff_deflate")


def _plan(n_train: int, n_test: int, rng: np.random.Generator) -> list[_ImagePlan]:
    total = n_train + n_test
    missing_he = int(rng.integers(0, n_train))  # like IDRiD: one training image has no HE mask
    with_se = rng.random(total) < 0.5  # like IDRiD: soft exudates annotated on about half the images
    with_se[int(rng.integers(0, n_train))] = True  # at least one SE mask in the training set
    return [
        _ImagePlan(
            image_id=f"IDRiD_{index + 1:02d}",
            split="train" if index < n_train else "test",
            index=index,
            has_he=index != missing_he,
            has_se=bool(with_se[index]),
        )
        for index in range(total)
    ]


def _check_arguments(n_train, n_test, mask_encoding, seed) -> None:
    check_int("seed", seed)
    check_int("n_train", n_train, minimum=1)
    check_int("n_test", n_test)
    if n_train + n_test > 99:
        raise ValueError(f"n_train + n_test must be at most 99 (IDRiD_NN ids); got {n_train + n_test}")
    if mask_encoding not in MASK_ENCODINGS:
        raise ValueError(f"mask_encoding must be one of {MASK_ENCODINGS}; got {mask_encoding!r}")


def _check_target(root: Path, overwrite: bool) -> None:
    """Raise unless ``root/A. Segmentation`` is absent, or ours and ``overwrite`` is set (replaced at the end)."""
    existing = root / TOP_FOLDER
    if not existing.exists():
        return
    if not (existing / MARKER_FILE).is_file():
        raise FileExistsError(
            f"{str(existing)!r} exists and was not written by make_synthetic_idrid; "
            f"choose another root (it is never deleted)"
        )
    if not overwrite:
        raise FileExistsError(f"{str(existing)!r} exists; pass overwrite=True to replace it")


def _move_into_place(top: Path, target: Path, trash: Path) -> None:
    """Rename the finished tree ``top`` to ``target``, moving an older tree there into ``trash`` first (put back
    if the rename fails)."""
    replaced = None
    if target.exists():
        replaced = trash
        os.replace(target, replaced)
    try:
        os.replace(top, target)
    except BaseException:
        if replaced is not None:
            os.replace(replaced, target)
        raise


def make_synthetic_idrid(
    root: str | os.PathLike,
    n_train: int = 54,
    n_test: int = 27,
    size: tuple[int, int] = (426, 640),
    seed: int = 0,
    mask_encoding: str = "mixed",
    nested: bool = False,
    overwrite: bool = False,
) -> Path:
    """Write a synthetic IDRiD "A. Segmentation" tree under ``root`` and return ``root``.

    Images are ``IDRiD_01 .. IDRiD_{n_train}`` in ``a. Training Set`` and the next ``n_test`` in
    ``b. Testing Set``. Every image has MA, EX and OD masks; exactly one training image has no HE mask
    (and no haemorrhage drawn); SE masks (and soft exudates) exist for about half the images, at least
    one in training; every lesion folder exists in every set with images, as in the download. The tree is written in
    a hidden folder under ``root`` and renamed into place when complete (replacing an older one only then), so an
    interrupted or failed run leaves no partial ``A. Segmentation`` and loses no earlier one. ``root`` then works as
    ``IDRiD(root, ...)`` and ``GA_IDRID_ROOT``.

    Args:
        root: folder to write ``A. Segmentation`` into (created if needed).
        n_train: training images, >= 1. Default 54 (IDRiD's).
        n_test: testing images, >= 0. Default 27 (IDRiD's).
        size: ``(H, W)`` of the JPEGs. Default ``(426, 640)``, IDRiD's 4288:2848 aspect at demo scale;
            tests use e.g. ``(96, 144)``.
        seed: int >= 0; the tree (every byte of it) is a pure function of the arguments. Default 0.
        mask_encoding: ``"palette"`` (index 1 = red), ``"rgb"`` (255, 0, 0) or ``"mixed"`` (default:
            both, alternating between files, some deflate-compressed).
        nested: write ``A. Segmentation/A. Segmentation/...`` as some downloads unpack.
        overwrite: replace a tree this function wrote before (a tree it did not write is never touched).

    Raises:
        ValueError: a bad argument (named, with the value received and what is valid).
        FileExistsError: ``root/A. Segmentation`` exists (and ``overwrite`` is False or it is not ours).

    Examples:
        >>> import tempfile
        >>> root = make_synthetic_idrid(tempfile.mkdtemp(), n_train=4, n_test=2, size=(96, 144))
        >>> sorted(p.name for p in (root / "A. Segmentation").iterdir())
        ['1. Original Images', '2. All Segmentation Groundtruths', 'synthetic-idrid.json']
    """
    _check_arguments(n_train, n_test, mask_encoding, seed)
    size = check_size(size)
    root = Path(root).expanduser()
    _check_target(root, overwrite)
    root.mkdir(parents=True, exist_ok=True)
    # The tree is built in a hidden sibling folder and renamed into place at the end, so that
    # "A. Segmentation exists" means "complete", even if this run is interrupted.
    staging = Path(tempfile.mkdtemp(dir=root, prefix=".synthetic-idrid-"))
    try:
        top = staging / TOP_FOLDER
        base = top / TOP_FOLDER if nested else top
        plans = _plan(n_train, n_test, np.random.default_rng([seed, 0]))
        for split in {plan.split for plan in plans}:  # every lesion folder, as in the download, masks or not
            for folder in LESIONS.values():
                (base / MASKS_FOLDER / SET_FOLDERS[split] / folder).mkdir(parents=True, exist_ok=True)
        for plan in plans:
            _write_image_and_masks(base, plan, size, seed, mask_encoding)
        marker = {
            "generator": "group_attention.fundus.data.make_synthetic_idrid",
            "n_train": n_train,
            "n_test": n_test,
            "size": list(size),
            "seed": seed,
            "mask_encoding": mask_encoding,
            "nested": nested,
            "without_HE_mask": [p.image_id for p in plans if not p.has_he],
            "with_SE_mask": [p.image_id for p in plans if p.has_se],
        }
        (top / MARKER_FILE).write_text(json.dumps(marker, indent=2) + "\n")
        _check_target(root, overwrite)  # again: another process may have written a tree meanwhile
        _move_into_place(top, root / TOP_FOLDER, staging / "replaced")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return root


def _write_image_and_masks(base: Path, plan: _ImagePlan, size, seed: int, mask_encoding: str) -> None:
    rng = np.random.default_rng([seed, 1, plan.index])
    image, masks = render_fundus(rng, size, draw_he=plan.has_he, draw_se=plan.has_se)
    set_name = SET_FOLDERS[plan.split]
    image_path = base / IMAGES_FOLDER / set_name / f"{plan.image_id}.jpg"
    # 4:4:4 chroma: with 4:2:0 a lesion of one or two pixels (small sizes) would lose its colour.
    _save(Image.fromarray(image), image_path, format="JPEG", quality=92, subsampling=0)
    for lesion_index, (code, folder) in enumerate(LESIONS.items()):
        if (code == "HE" and not plan.has_he) or (code == "SE" and not plan.has_se):
            continue  # a missing mask means no lesion, and none was drawn
        encoding, compression = _file_encoding(mask_encoding, plan.index, lesion_index)
        options = {"format": "TIFF"} | ({"compression": compression} if compression else {})
        path = base / MASKS_FOLDER / set_name / folder / f"{plan.image_id}_{code}.tif"
        _save(_mask_image(masks[code], encoding), path, **options)


class SyntheticIDRiDSource(IDRiDSource):
    """The synthetic look-alike as a :class:`~group_attention.fundus.data.source.SegmentationSource`: :meth:`prepare`
    writes it under ``root`` with :func:`make_synthetic_idrid` (once: an existing tree is reused), then it reads
    like :class:`~group_attention.fundus.data.IDRiDSource`.

    Args:
        root: folder to write ``A. Segmentation`` into.
        n_train, n_test, size, seed: as in :func:`make_synthetic_idrid` (checked here, before anything is written).

    Example:
        >>> import tempfile
        >>> source = SyntheticIDRiDSource(tempfile.mkdtemp(), n_train=2, n_test=1, size=(48, 72))
        >>> source.prepare()
        >>> source.ids("all"), source.synthetic
        (['IDRiD_01', 'IDRiD_02', 'IDRiD_03'], True)
    """

    synthetic = True

    def __init__(
        self,
        root: str | os.PathLike,
        n_train: int = 54,
        n_test: int = 27,
        size: tuple[int, int] = (426, 640),
        seed: int = 0,
    ) -> None:
        _check_arguments(n_train, n_test, "mixed", seed)
        self.n_train, self.n_test, self.size, self.seed = n_train, n_test, check_size(size), seed
        super().__init__(root)

    def prepare(self) -> None:
        """Write the tree unless ``root`` holds one of these settings already (``settings.json`` records them); a
        tree of other settings (left by a command that was refused or stopped) is replaced: generation is
        deterministic, so a rewrite never changes the images of a run being resumed."""
        marker = self.root / "settings.json"
        wanted = {"n_train": self.n_train, "n_test": self.n_test, "size": list(self.size), "seed": self.seed}
        current = json.loads(marker.read_text()) if marker.exists() else None
        if (self.root / TOP_FOLDER).exists() and current == wanted:
            return
        make_synthetic_idrid(
            self.root, n_train=self.n_train, n_test=self.n_test, size=self.size, seed=self.seed, overwrite=True
        )
        atomic_write_text(marker, json.dumps(wanted))
        self._layout = None  # searched again on first use

    def summary(self) -> str:
        return "synthetic look-alike " + super().summary()

    def __repr__(self) -> str:
        return (
            f"SyntheticIDRiDSource(root={str(self.root)!r}, n_train={self.n_train}, n_test={self.n_test}, "
            f"size={self.size}, seed={self.seed})"
        )
