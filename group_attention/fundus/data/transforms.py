"""Data augmentation as in GANet (Ye et al., SPIE Medical Imaging 2020, section 3.1).

"Randomly horizontal flipping, randomly vertical flipping and random rotation", applied identically to
the image and its masks. :func:`random_flip_rotate` works on batches ``(B, C, H, W)`` on any device
(one independent draw per sample, e.g. on the GPU after the batch is moved there);
:class:`RandomFlipRotate` wraps it for single dataset items (``IDRiD(..., transform=...)``).

Flips are exact. The rotation is about the image centre, keeps the ``H x W`` frame and fills what comes
in from outside with zeros (black, like the fundus background); the image is resampled bilinearly, the
mask by nearest neighbour so it stays 0/1. A positive angle turns the picture counter-clockwise, so
90 degrees equals ``torch.rot90(x, 1, dims=(-2, -1))`` on square images.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import get_worker_info

from ..._checks import check_real

__all__ = ["FlipRotateParams", "sample_flip_rotate", "apply_flip_rotate", "random_flip_rotate", "RandomFlipRotate"]


@dataclass(frozen=True)
class FlipRotateParams:
    """One draw of the augmentation for a batch.

    Attributes:
        hflip: ``(B,)`` bool, flip left-right.
        vflip: ``(B,)`` bool, flip up-down.
        angle: ``(B,)`` float, rotation in degrees (counter-clockwise), applied after the flips.
    """

    hflip: Tensor
    vflip: Tensor
    angle: Tensor

    def to(self, device: torch.device | str) -> "FlipRotateParams":
        return FlipRotateParams(self.hflip.to(device), self.vflip.to(device), self.angle.to(device))


def _check_probability(name: str, value: float) -> None:
    check_real(name, value)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1]; got {value!r}")


def _check_degrees(degrees: float) -> None:
    check_real("degrees", degrees)
    if not 0.0 <= degrees <= 180.0:
        raise ValueError(f"degrees must be in [0, 180] (angles are drawn from [-degrees, degrees]); got {degrees!r}")


def sample_flip_rotate(
    batch: int,
    p_hflip: float = 0.5,
    p_vflip: float = 0.5,
    degrees: float = 180.0,
    generator: torch.Generator | None = None,
) -> FlipRotateParams:
    """Draw flips and angles for ``batch`` samples (on the generator's device, CPU by default).

    Args:
        batch: number of samples.
        p_hflip: probability of a horizontal (left-right) flip. Default 0.5.
        p_vflip: probability of a vertical (up-down) flip. Default 0.5.
        degrees: angles are uniform in ``[-degrees, degrees]``; 0 disables rotation. Default 180
            (fundus photographs have no preferred orientation).
        generator: torch random generator for reproducible draws; None uses the global RNG.
    """
    _check_probability("p_hflip", p_hflip)
    _check_probability("p_vflip", p_vflip)
    _check_degrees(degrees)
    device = generator.device if generator is not None else torch.device("cpu")
    draws = torch.rand(3, batch, generator=generator, device=device)
    return FlipRotateParams(
        hflip=draws[0] < p_hflip,
        vflip=draws[1] < p_vflip,
        angle=(2.0 * draws[2] - 1.0) * degrees,
    )


def _rotation_matrices(angle: Tensor, height: int, width: int) -> Tensor:
    """``(B, 2, 3)`` affine matrices for :func:`F.affine_grid` rotating by ``angle`` degrees in pixel space.

    affine_grid maps output to input positions in coordinates normalised per axis to [-1, 1]; a rotation
    must be done in pixel units, so the inverse rotation is conjugated with the per-axis scale
    ``S = diag(W / 2, H / 2)``: theta = S^-1 R(angle)^-1 S.
    """
    radians = torch.deg2rad(angle.double())
    cos, sin = torch.cos(radians), torch.sin(radians)
    zero = torch.zeros_like(cos)
    theta = torch.stack(
        [
            torch.stack([cos, -sin * height / width, zero], dim=-1),
            torch.stack([sin * width / height, cos, zero], dim=-1),
        ],
        dim=-2,
    )
    return theta


def apply_flip_rotate(x: Tensor, params: FlipRotateParams, mode: str = "bilinear") -> Tensor:
    """Apply a drawn augmentation to a batch.

    Args:
        x: ``(B, C, H, W)`` tensor of any dtype (non-float tensors are resampled as float and cast back).
        params: from :func:`sample_flip_rotate` with the same ``B``.
        mode: ``"bilinear"`` for images, ``"nearest"`` for masks.

    Shape:
        Returns ``(B, C, H, W)``, same dtype and device as ``x``.
    """
    if x.ndim != 4:
        raise ValueError(f"x must be a batch (B, C, H, W); got shape {tuple(x.shape)}")
    if params.angle.shape[0] != x.shape[0]:
        raise ValueError(f"params are for {params.angle.shape[0]} samples but x has batch {x.shape[0]}")
    params = params.to(x.device)
    x = torch.where(params.hflip.view(-1, 1, 1, 1), x.flip(-1), x)
    x = torch.where(params.vflip.view(-1, 1, 1, 1), x.flip(-2), x)
    rotated = params.angle != 0
    if not bool(rotated.any()):
        return x
    height, width = x.shape[-2:]
    compute_dtype = x.dtype if x.is_floating_point() else torch.float32
    theta = _rotation_matrices(params.angle[rotated], height, width).to(compute_dtype)
    selected = x[rotated].to(compute_dtype)
    grid = F.affine_grid(theta, list(selected.shape), align_corners=False)
    turned = F.grid_sample(selected, grid, mode=mode, padding_mode="zeros", align_corners=False)
    out = x.clone()
    out[rotated] = turned.round().to(x.dtype) if not x.is_floating_point() else turned
    return out


def random_flip_rotate(
    image: Tensor,
    mask: Tensor | None = None,
    p_hflip: float = 0.5,
    p_vflip: float = 0.5,
    degrees: float = 180.0,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor | None]:
    """Random flips and rotation, the same draw for each sample's image and mask.

    Args:
        image: ``(B, C, H, W)`` float, any device; resampled bilinearly.
        mask: optional ``(B, L, H, W)`` (float 0/1, bool or integer); resampled by nearest neighbour
            so it stays binary.
        p_hflip: probability of a left-right flip per sample. Default 0.5.
        p_vflip: probability of an up-down flip per sample. Default 0.5.
        degrees: rotation angle uniform in ``[-degrees, degrees]``, counter-clockwise positive.
            Default 180.
        generator: for reproducible draws (CPU or ``image``'s device); None uses the global RNG.

    Shape:
        Returns ``(image, mask)`` with the input shapes, dtypes and device.

    Examples:
        >>> image, mask = torch.rand(8, 3, 64, 64), (torch.rand(8, 1, 64, 64) > 0.9).float()
        >>> g = torch.Generator().manual_seed(0)
        >>> out_image, out_mask = random_flip_rotate(image, mask, generator=g)
        >>> out_image.shape, bool(((out_mask == 0) | (out_mask == 1)).all())
        (torch.Size([8, 3, 64, 64]), True)
    """
    if mask is not None and (mask.shape[0] != image.shape[0] or mask.shape[-2:] != image.shape[-2:]):
        raise ValueError(
            f"mask must be (B, L, H, W) matching image (B, C, H, W); got image {tuple(image.shape)}, "
            f"mask {tuple(mask.shape)}"
        )
    params = sample_flip_rotate(image.shape[0], p_hflip, p_vflip, degrees, generator)
    image = apply_flip_rotate(image, params, mode="bilinear")
    if mask is not None:
        mask = apply_flip_rotate(mask, params, mode="nearest")
    return image, mask


class RandomFlipRotate:
    """Random flips and rotation for one dataset item ``{"image": (C, H, W), "mask": (L, H, W), ...}``.

    Other keys pass through unchanged. With ``seed`` the draws are reproducible. In DataLoader worker
    processes, each worker re-seeds from ``(seed, the worker's seed)`` on first use, so workers do not
    repeat each other's draws and a fresh set of workers (each epoch) draws anew; seed the run with
    ``torch.manual_seed`` for reproducible multi-worker loading.

    Args:
        p_hflip: probability of a left-right flip. Default 0.5.
        p_vflip: probability of an up-down flip. Default 0.5.
        degrees: rotation angle uniform in ``[-degrees, degrees]``. Default 180.
        seed: seed of the private generator; None draws from torch's global RNG.

    Examples:
        >>> augment = RandomFlipRotate(seed=0)
        >>> item = augment({"image": torch.rand(3, 32, 48), "mask": torch.zeros(1, 32, 48), "id": "IDRiD_01"})
        >>> item["image"].shape, item["id"]
        (torch.Size([3, 32, 48]), 'IDRiD_01')
    """

    def __init__(self, p_hflip: float = 0.5, p_vflip: float = 0.5, degrees: float = 180.0, seed: int | None = None):
        _check_probability("p_hflip", p_hflip)
        _check_probability("p_vflip", p_vflip)
        _check_degrees(degrees)
        self.p_hflip, self.p_vflip, self.degrees, self.seed = p_hflip, p_vflip, degrees, seed
        self.generator = torch.Generator().manual_seed(seed) if seed is not None else None
        self._worker_seed: int | None = None

    def _generator_for_this_process(self) -> torch.Generator | None:
        worker = get_worker_info()
        if worker is not None and self.generator is not None and self._worker_seed != worker.seed:
            self._worker_seed = worker.seed
            self.generator.manual_seed(hash((self.seed, worker.seed)) & 0xFFFF_FFFF_FFFF)
        return self.generator

    def __call__(self, item: dict) -> dict:
        image = item["image"].unsqueeze(0)
        mask = item["mask"].unsqueeze(0) if "mask" in item else None
        image, mask = random_flip_rotate(
            image, mask, self.p_hflip, self.p_vflip, self.degrees, self._generator_for_this_process()
        )
        out = dict(item, image=image[0])
        if mask is not None:
            out["mask"] = mask[0]
        return out

    def __repr__(self) -> str:
        return (
            f"RandomFlipRotate(p_hflip={self.p_hflip}, p_vflip={self.p_vflip}, "
            f"degrees={self.degrees}, seed={self.seed})"
        )
