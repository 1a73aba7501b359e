"""Augmentation (paper section 3.1: random horizontal/vertical flips and rotation) keeps image and mask aligned.

References are independent: torch.flip and torch.rot90 for exact cases, and mask centroids for arbitrary
angles (resampling may move a boundary pixel, never the lesion).
"""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader, Dataset

from group_attention.fundus.data import FlipRotateParams, RandomFlipRotate, apply_flip_rotate, random_flip_rotate


def _params(hflip, vflip, angle):
    """Explicit parameters for a batch: lists of equal length."""
    return FlipRotateParams(torch.tensor(hflip), torch.tensor(vflip), torch.tensor(angle, dtype=torch.float32))


def _blobs(batch, height, width, seed=0):
    """(B, 1, H, W) float 0/1 masks made of a few filled rectangles, away from the border."""
    g = torch.Generator().manual_seed(seed)
    mask = torch.zeros(batch, 1, height, width)
    for b in range(batch):
        for _ in range(3):
            top = int(torch.randint(height // 4, height // 2, (1,), generator=g))
            left = int(torch.randint(width // 4, width // 2, (1,), generator=g))
            mask[b, 0, top : top + height // 6, left : left + width // 5] = 1
    return mask


def _centroid(weights):
    """(B, 2) centre of mass (row, col) of (B, H, W) non-negative weights."""
    rows = torch.arange(weights.shape[-2], dtype=torch.float64).view(1, -1, 1)
    cols = torch.arange(weights.shape[-1], dtype=torch.float64).view(1, 1, -1)
    total = weights.double().sum((-2, -1))
    return torch.stack([(weights * rows).sum((-2, -1)) / total, (weights * cols).sum((-2, -1)) / total], -1)


# --- flips are exact -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "hflip, vflip, dims",
    [(True, False, (-1,)), (False, True, (-2,)), (True, True, (-2, -1))],
)
def test_flip_equals_torch_flip_for_image_and_mask(hflip, vflip, dims):
    image, mask = torch.rand(2, 3, 10, 14), _blobs(2, 10, 14)
    out_image, out_mask = random_flip_rotate(image, mask, p_hflip=float(hflip), p_vflip=float(vflip), degrees=0)
    assert torch.equal(out_image, image.flip(dims))
    assert torch.equal(out_mask, mask.flip(dims))


def test_no_flip_no_rotation_is_identity():
    image, mask = torch.rand(3, 3, 9, 11), _blobs(3, 9, 11)
    out_image, out_mask = random_flip_rotate(image, mask, p_hflip=0, p_vflip=0, degrees=0)
    assert torch.equal(out_image, image) and torch.equal(out_mask, mask)


# --- rotation: counter-clockwise, quarter turns match rot90 -----------------------------------------


@pytest.mark.parametrize("angle, turns", [(90.0, 1), (-90.0, -1), (180.0, 2), (-180.0, 2)])
def test_quarter_turn_equals_rot90_on_square_images(angle, turns):
    image, mask = torch.rand(1, 3, 12, 12), _blobs(1, 12, 12)
    params = _params([False], [False], [angle])
    expected_image = torch.rot90(image, turns, dims=(-2, -1))
    torch.testing.assert_close(apply_flip_rotate(image, params, "bilinear"), expected_image, atol=1e-5, rtol=0)
    assert torch.equal(apply_flip_rotate(mask, params, "nearest"), torch.rot90(mask, turns, dims=(-2, -1)))


def test_quarter_turn_on_non_square_image_rotates_in_pixel_space():
    """The centred square of a 10 x 16 frame turns like rot90: no shear from the aspect ratio."""
    image = torch.rand(1, 2, 10, 16)
    turned = apply_flip_rotate(image, _params([False], [False], [90.0]), "nearest")
    centre = image[..., :, 3:13]
    assert torch.equal(turned[..., :, 3:13], torch.rot90(centre, 1, dims=(-2, -1)))


def test_rotation_fills_with_zeros_outside_the_frame():
    ones = torch.ones(1, 1, 21, 21)
    turned = apply_flip_rotate(ones, _params([False], [False], [45.0]), "nearest")
    assert turned[0, 0, 0, 0] == 0 and turned[0, 0, 10, 10] == 1


# --- image and mask stay aligned -----------------------------------------------------------------


def test_image_channel_equal_to_mask_stays_aligned_with_the_mask():
    """An image whose first channel is the mask: after any draw, thresholded it is still the mask."""
    mask = _blobs(16, 40, 56, seed=1)
    image = torch.cat([mask, torch.rand(16, 2, 40, 56)], dim=1)
    g = torch.Generator().manual_seed(3)
    out_image, out_mask = random_flip_rotate(image, mask, degrees=180, generator=g)
    drawn = out_image[:, :1] > 0.5
    agreement = (drawn == out_mask.bool()).float().mean()
    assert agreement > 0.99
    # Centre of mass of the lesion, bilinear image vs nearest mask: well under a pixel apart.
    distance = (_centroid(out_image[:, 0]) - _centroid(out_mask[:, 0])).norm(dim=-1)
    assert distance.max() < 0.5


def test_rotated_mask_keeps_its_area_and_lesion_position():
    """A 30-degree turn moves the mask's centroid exactly as rotating the centroid point does."""
    mask = _blobs(1, 41, 41, seed=2)
    turned = apply_flip_rotate(mask, _params([False], [False], [30.0]), "nearest")
    assert abs(turned.sum() - mask.sum()) / mask.sum() < 0.05
    row, col = _centroid(mask[:, 0])[0] - 20.0
    radians = torch.deg2rad(torch.tensor(30.0, dtype=torch.float64))
    # Counter-clockwise on screen (rows grow downwards): (col, row) -> (col cos + row sin, -col sin + row cos).
    cos, sin = torch.cos(radians), torch.sin(radians)
    expected = torch.stack([-col * sin + row * cos, col * cos + row * sin])
    assert (_centroid(turned[:, 0])[0] - 20.0 - expected).norm() < 0.5


# --- types, determinism, per-sample draws ---------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.bool, torch.uint8, torch.int64])
def test_mask_dtype_and_binary_values_are_kept(dtype):
    mask = _blobs(4, 24, 32).to(dtype)
    _, out_mask = random_flip_rotate(torch.rand(4, 3, 24, 32), mask, generator=torch.Generator().manual_seed(0))
    assert out_mask.dtype == dtype
    assert set(torch.unique(out_mask.to(torch.int64)).tolist()) <= {0, 1}


@settings(max_examples=25, deadline=None)
@given(
    batch=st.integers(1, 4),
    channels=st.integers(1, 4),
    height=st.integers(2, 24),
    width=st.integers(2, 24),
    degrees=st.floats(0, 180),
    seed=st.integers(0, 2**31),
)
def test_shapes_dtypes_and_binary_mask_for_any_input(batch, channels, height, width, degrees, seed):
    image = torch.rand(batch, channels, height, width)
    mask = (torch.rand(batch, 2, height, width) > 0.5).float()
    generator = torch.Generator().manual_seed(seed)
    out_image, out_mask = random_flip_rotate(image, mask, degrees=degrees, generator=generator)
    assert out_image.shape == image.shape and out_mask.shape == mask.shape
    assert out_image.dtype == image.dtype
    assert set(torch.unique(out_mask).tolist()) <= {0.0, 1.0}
    assert out_image.min() >= 0 and out_image.max() <= 1 + 1e-6


def test_same_seed_same_draw_other_seed_other_draw():
    image, mask = torch.rand(8, 3, 16, 16), _blobs(8, 16, 16)
    first = random_flip_rotate(image, mask, generator=torch.Generator().manual_seed(5))
    again = random_flip_rotate(image, mask, generator=torch.Generator().manual_seed(5))
    other = random_flip_rotate(image, mask, generator=torch.Generator().manual_seed(6))
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert not torch.equal(first[0], other[0])


def test_each_sample_gets_its_own_draw():
    image = torch.rand(1, 3, 16, 16).expand(8, -1, -1, -1)
    out, _ = random_flip_rotate(image, generator=torch.Generator().manual_seed(0))
    assert len({tuple(o.flatten()[:20].tolist()) for o in out}) > 1


# --- the per-item transform ------------------------------------------------------------------------


def test_item_transform_matches_batched_function_and_passes_other_keys():
    item = {"image": torch.rand(3, 20, 30), "mask": _blobs(1, 20, 30)[0], "id": "IDRiD_07"}
    original = {key: value.clone() if isinstance(value, torch.Tensor) else value for key, value in item.items()}
    out = RandomFlipRotate(degrees=90, seed=11)(item)
    expected_image, expected_mask = random_flip_rotate(
        item["image"][None], item["mask"][None], degrees=90, generator=torch.Generator().manual_seed(11)
    )
    assert out["id"] == "IDRiD_07"
    assert torch.equal(out["image"], expected_image[0]) and torch.equal(out["mask"], expected_mask[0])
    assert item.keys() == original.keys() and item["id"] == original["id"]  # the input dict is not modified
    assert torch.equal(item["image"], original["image"]) and torch.equal(item["mask"], original["mask"])


def test_item_transform_is_reproducible_from_its_seed():
    item = {"image": torch.rand(3, 16, 16), "mask": _blobs(1, 16, 16)[0], "id": "IDRiD_01"}
    a, b = RandomFlipRotate(seed=3), RandomFlipRotate(seed=3)
    assert all(torch.equal(a(item)["image"], b(item)["image"]) for _ in range(3))


class _SameItem(Dataset):
    def __init__(self, transform):
        self.transform = transform
        image = torch.arange(3 * 8 * 8, dtype=torch.float32).view(3, 8, 8) / 192
        self.item = {"image": image, "mask": torch.zeros(1, 8, 8)}

    def __len__(self):
        return 8

    def __getitem__(self, index):
        return self.transform(self.item)


# Forking a process that has torch's threads warns on Python >= 3.12; these workers only run the transform.
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_dataloader_workers_do_not_repeat_each_others_draws():
    torch.manual_seed(0)
    loader = DataLoader(_SameItem(RandomFlipRotate(seed=0)), batch_size=1, num_workers=2)
    images = [batch["image"] for batch in loader]
    worker0, worker1 = images[0::2], images[1::2]  # workers take batches round-robin
    assert not all(torch.equal(a, b) for a, b in zip(worker0, worker1))


# --- bad input and devices -------------------------------------------------------------------------

ILL_CASES = [
    ({"p_hflip": 1.5}, "p_hflip"),
    ({"p_vflip": -0.1}, "p_vflip"),
    ({"degrees": 200}, "degrees"),
    ({"degrees": -1}, "degrees"),
]


@pytest.mark.parametrize("kwargs, name", ILL_CASES)
def test_bad_arguments_raise_naming_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=name):
        random_flip_rotate(torch.rand(1, 3, 8, 8), **kwargs)
    with pytest.raises(ValueError, match=name):
        RandomFlipRotate(**kwargs)


def test_unbatched_or_mismatched_inputs_raise():
    with pytest.raises(ValueError, match="B, C, H, W"):
        random_flip_rotate(torch.rand(3, 8, 8))
    with pytest.raises(ValueError, match="mask"):
        random_flip_rotate(torch.rand(2, 3, 8, 8), torch.zeros(1, 1, 8, 8))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_batch_matches_cpu_for_the_same_draw():
    image, mask = torch.rand(8, 3, 64, 96), _blobs(8, 64, 96)
    params = FlipRotateParams(torch.rand(8) < 0.5, torch.rand(8) < 0.5, torch.rand(8) * 360 - 180)
    on_cpu = apply_flip_rotate(image, params, "bilinear")
    torch.testing.assert_close(apply_flip_rotate(image.cuda(), params, "bilinear").cpu(), on_cpu, atol=1e-4, rtol=0)
    on_gpu = apply_flip_rotate(mask.cuda(), params, "nearest").cpu()
    assert (on_gpu == apply_flip_rotate(mask, params, "nearest")).float().mean() > 0.999
    _, out_mask = random_flip_rotate(image.cuda(), mask.cuda(), generator=torch.Generator("cuda").manual_seed(0))
    assert out_mask.device.type == "cuda"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"p_hflip": "0.5"}, "p_hflip must be a real number, got '0.5'"),
        ({"degrees": None}, "degrees must be a real number, got None"),
    ],
)
def test_augmentation_settings_must_be_numbers(kwargs, message):
    with pytest.raises(TypeError, match=message):
        RandomFlipRotate(**kwargs)
