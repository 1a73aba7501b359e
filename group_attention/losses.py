"""Generalized Dice loss, the training loss of GANet.

GANet (Ye et al., "GANet: Group attention network for diabetic retinopathy image segmentation",
Proc. SPIE 11313, 1131307, 2020, section 3.1) is trained with the generalized Dice loss of

    C. H. Sudre, W. Li, T. Vercauteren, S. Ourselin, M. J. Cardoso, "Generalised Dice overlap as a deep
    learning loss function for highly unbalanced segmentations", DLMIA 2017 (arXiv:1707.03237),

in which every class is weighted by the inverse square of its ground-truth volume so that a lesion of a
few hundred pixels counts as much as the background of the whole fundus image.

Shapes: ``logits`` ``(B, C, *spatial)``; ``target`` class indices ``(B, *spatial)`` or one-hot/soft ``(B, C,
*spatial)``; the loss is a scalar (or ``(B,)`` with ``reduction="none"``). The formula leaves classes absent from an
image undefined (infinite weight); the convention used here, and how it compares with MONAI, is written once in
:doc:`/losses_and_metrics` ("Empty classes: the convention").
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import _compat
from ._checks import check_bool, check_real

__all__ = ["GeneralizedDiceLoss", "generalized_dice_loss", "class_weights"]

MODES = ("multiclass", "binary", "multilabel")
REDUCTIONS = ("mean", "sum", "none")
WEIGHT_EXPONENTS = {"square": 2, "simple": 1, "uniform": 0}


def class_weights(volumes: Tensor, weight_type: str = "square") -> Tensor:
    r"""Sudre's class weights :math:`w_c \propto 1 / V_c^k`, rescaled so the rarest present class weighs 1.

    .. math::
        w_c = \begin{cases} (V_{\min} / V_c)^k & V_c > 0 \\ 1 & V_c = 0 \end{cases}
        \qquad V_{\min} = \min_{c:\,V_c > 0} V_c

    With :math:`k = 2` this is :math:`1/V_c^2` times the per-image constant :math:`V_{\min}^2`, which
    cancels in the Dice ratio. An absent class gets 1, the largest finite weight (MONAI's choice).
    A row with no present class gets all ones; :func:`generalized_dice_loss` does not use them.

    Args:
        volumes: ground-truth volume :math:`V_c = \sum_i g_{ci}` of every class, shape (..., C).
        weight_type: ``"square"`` (:math:`k=2`, Sudre), ``"simple"`` (:math:`k=1`) or
            ``"uniform"`` (:math:`k=0`, plain multi-class soft Dice). Default: ``"square"``.

    Returns:
        Tensor of the same shape and dtype as ``volumes`` (the default float dtype for integer volumes), values in
        (0, 1].

    Examples::

        >>> class_weights(torch.tensor([[100.0, 10.0, 0.0]]))
        tensor([[0.0100, 1.0000, 1.0000]])
    """
    exponent = _exponent_of(weight_type)
    if not volumes.is_floating_point():  # e.g. the sums of an integer mask
        volumes = volumes.to(torch.get_default_dtype())
    present = volumes > 0
    rarest = volumes.masked_fill(~present, float("inf")).amin(dim=-1, keepdim=True)
    # ratio <= 1 before the power, so tiny soft-label volumes cannot overflow or underflow to 0/0
    ratio = torch.where(present, rarest / volumes.clamp_min(torch.finfo(volumes.dtype).tiny), 1.0)
    return torch.where(present, ratio.pow(exponent), torch.ones_like(volumes))


def generalized_dice_loss(
    logits: Tensor,
    target: Tensor,
    mode: str = "multiclass",
    *,
    include_background: bool = True,
    reduction: str = "mean",
    smooth: float = 1e-5,
    weight_type: str = "square",
    validate_args: bool = True,
    batch: bool = False,
) -> Tensor:
    """Functional form of :class:`GeneralizedDiceLoss`; the arguments are documented there."""
    _check_options(mode, include_background, reduction, smooth, weight_type, validate_args, batch)
    _check_logits(logits, mode)
    with _autocast_disabled(logits.device.type):
        compute_dtype = torch.promote_types(logits.dtype, torch.float32)
        probabilities = _activate(logits.to(compute_dtype), mode)
        truth = _target_as_one_hot(target, logits, mode, validate_args).to(compute_dtype)
        if not include_background:
            probabilities, truth = probabilities[:, 1:], truth[:, 1:]
        per_image = _per_image_loss(probabilities.flatten(2), truth.flatten(2), smooth, weight_type, batch)
    return _reduce(per_image, reduction)


class GeneralizedDiceLoss(nn.Module):
    r"""Generalized Dice loss of Sudre et al. (2017), computed per image, as used to train GANet.

    .. math::
        \mathcal{L} = 1 - \frac{2 \sum_c w_c \sum_i g_{ci}\, p_{ci} + \epsilon}
                               {\sum_c w_c \sum_i (g_{ci} + p_{ci}) + \epsilon},
        \qquad w_c = \frac{1}{\left(\sum_i g_{ci}\right)^2}

    where :math:`p_{ci}` is the predicted probability and :math:`g_{ci}` the (one-hot or soft) ground
    truth of class :math:`c` at pixel :math:`i` of one image, and :math:`\epsilon` is ``smooth``.

    Empty classes (the usual case for a lesion-free IDRiD image): a class absent from the ground truth gets the
    weight of the rarest present class, and an image where every considered class is absent scores its mean
    predicted probability (never a constant 0 with zero gradient). Why, and the comparison with MONAI:
    :doc:`/losses_and_metrics` ("Empty classes: the convention").

    The weights are rescaled per image so the rarest present class weighs 1 (see
    :func:`class_weights`); the loss is unchanged up to the :math:`\epsilon` terms, which stay
    negligible even on large 3D volumes. Everything is computed in float32 (float64 for float64
    logits), also under ``torch.autocast``; the weights are treated as constants (no gradient).

    Args:
        mode: ``"multiclass"``: softmax over the C >= 2 channels, one class per pixel;
            ``"binary"``: sigmoid of the single foreground channel (C == 1);
            ``"multilabel"``: sigmoid of each of the C channels independently. Default: ``"multiclass"``.
        include_background: if ``False``, channel 0 is dropped after the softmax/sigmoid and before
            the loss. Not available with ``mode="binary"``, whose only channel is the foreground.
            Default: ``True``.
        reduction: ``"mean"`` or ``"sum"`` over the batch, or ``"none"`` for the per-image loss.
            Default: ``"mean"``.
        smooth: :math:`\epsilon >= 0`, added to numerator and denominator, in units of weighted
            pixels of the rarest present class. Default: ``1e-5``.
        weight_type: ``"square"`` (:math:`1/V^2`, Sudre), ``"simple"`` (:math:`1/V`) or
            ``"uniform"`` (all 1: multi-class soft Dice). Default: ``"square"``.
        validate_args: check target values (class indices in range, one-hot values in [0, 1]); costs
            one device synchronisation per call. Default: ``True``.
        batch: sum every class's volumes over the whole batch before taking the ratio, as MONAI's ``batch=True``
            and nnU-Net's "batch Dice": one loss for the batch's pixels pooled as one image, the class weights
            from the batch's volumes. For patches, where many hold no lesion: such a patch's false positives then
            count as much as those beside a lesion, instead of only its mean predicted probability. Default:
            ``False`` (per image, the paper's).

    Shape:
        - logits: :math:`(B, C, *)`, raw scores before softmax/sigmoid, with one or more spatial dims.
        - target: one of

          * class indices :math:`(B, *)` or :math:`(B, 1, *)`, an integer tensor with values in
            ``[0, C)`` (``"multiclass"``), or a 0/1 or soft mask (``"binary"``);
          * one-hot or soft labels :math:`(B, C, *)`, values in [0, 1] (all modes).
        - output: scalar for ``"mean"``/``"sum"``, :math:`(B,)` for ``"none"`` (:math:`(1,)` with ``batch``);
          float32 (float64 for float64 logits), in [0, 1].

    Examples::

        >>> loss_fn = GeneralizedDiceLoss("multiclass")
        >>> logits = torch.randn(2, 2, 32, 32, requires_grad=True)
        >>> target = torch.randint(0, 2, (2, 32, 32))
        >>> loss = loss_fn(logits, target)
        >>> loss.backward()
        >>> GeneralizedDiceLoss("binary", reduction="none")(torch.randn(4, 1, 8, 8, 8),
        ...                                                 torch.zeros(4, 8, 8, 8)).shape
        torch.Size([4])
    """

    def __init__(
        self,
        mode: str = "multiclass",
        *,
        include_background: bool = True,
        reduction: str = "mean",
        smooth: float = 1e-5,
        weight_type: str = "square",
        validate_args: bool = True,
        batch: bool = False,
    ) -> None:
        super().__init__()
        _check_options(mode, include_background, reduction, smooth, weight_type, validate_args, batch)
        self.batch = batch
        self.mode = mode
        self.include_background = include_background
        self.reduction = reduction
        self.smooth = float(smooth)
        self.weight_type = weight_type
        self.validate_args = validate_args

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return generalized_dice_loss(
            logits,
            target,
            self.mode,
            include_background=self.include_background,
            reduction=self.reduction,
            smooth=self.smooth,
            weight_type=self.weight_type,
            validate_args=self.validate_args,
            batch=self.batch,
        )

    def extra_repr(self) -> str:
        return (
            f"mode={self.mode!r}, include_background={self.include_background}, "
            f"reduction={self.reduction!r}, smooth={self.smooth}, weight_type={self.weight_type!r}, batch={self.batch}"
        )


def _per_image_loss(
    probabilities: Tensor, truth: Tensor, smooth: float, weight_type: str, batch: bool = False
) -> Tensor:
    """Loss of every image from (B, C, N) probabilities and ground truth, shape (B,); with ``batch`` the loss of the
    batch's pixels pooled as one image, shape (1,)."""
    pixels = (0, -1) if batch else (-1,)  # the sums of a class: over an image's pixels, or the batch's
    intersection = (probabilities * truth).sum(pixels, keepdim=True).squeeze(-1)
    predicted_volume = probabilities.sum(pixels, keepdim=True).squeeze(-1)
    true_volume = truth.sum(pixels, keepdim=True).squeeze(-1)
    weights = class_weights(true_volume.detach(), weight_type)
    numerator = 2.0 * (weights * intersection).sum(-1) + smooth
    denominator = (weights * (predicted_volume + true_volume)).sum(-1) + smooth

    no_class_present = (true_volume == 0).all(dim=-1)
    # the unused branch of torch.where still back-propagates, so it must stay finite (smooth may be 0)
    safe_denominator = torch.where(no_class_present, torch.ones_like(denominator), denominator)
    dice_loss = 1.0 - numerator / safe_denominator
    soft_false_positive_rate = probabilities.mean(dim=(0, -2, -1) if batch else (-2, -1)).reshape(dice_loss.shape)
    return torch.where(no_class_present, soft_false_positive_rate, dice_loss)


def _activate(logits: Tensor, mode: str) -> Tensor:
    return torch.softmax(logits, dim=1) if mode == "multiclass" else torch.sigmoid(logits)


def _target_as_one_hot(target: Tensor, logits: Tensor, mode: str, validate: bool) -> Tensor:
    """Target as (B, C, *spatial) one-hot or soft labels matching ``logits``."""
    if not isinstance(target, Tensor):
        raise TypeError(f"target must be a torch.Tensor, got {type(target).__name__}")
    batch, channels, *spatial = logits.shape
    index_shapes = ((batch, *spatial), (batch, 1, *spatial))
    if mode == "multiclass" and tuple(target.shape) in index_shapes:
        return _one_hot_from_indices(target.reshape(batch, *spatial), channels, validate)
    if mode == "binary" and tuple(target.shape) in index_shapes:
        target = target.reshape(batch, 1, *spatial)
    if target.shape != logits.shape:
        valid = [index_shapes[0], index_shapes[1]] if mode != "multilabel" else []
        valid.append(tuple(logits.shape))
        raise ValueError(
            f"target has shape {tuple(target.shape)}, which does not match logits {tuple(logits.shape)} "
            f"in mode={mode!r}; valid target shapes: {', '.join(map(str, valid))}"
        )
    if target.is_complex():
        raise TypeError(f"target must be a real tensor, got dtype {target.dtype}")
    if validate:
        _check_unit_interval(target, mode)
    return target


def _one_hot_from_indices(indices: Tensor, num_classes: int, validate: bool) -> Tensor:
    if indices.is_floating_point() or indices.is_complex():
        raise TypeError(
            f"target with class indices must be an integer tensor, got dtype {indices.dtype}; "
            "pass target.long(), or a float one-hot target of shape (B, C, *spatial)"
        )
    indices = indices.long()
    if validate:
        low, high = indices.min().item(), indices.max().item()
        if low < 0 or high >= num_classes:
            raise ValueError(
                f"target holds class indices in [{low}, {high}], but logits have {num_classes} channels; "
                f"valid indices are 0..{num_classes - 1}"
            )
    return F.one_hot(indices, num_classes).movedim(-1, 1)


def _check_unit_interval(target: Tensor, mode: str) -> None:
    if target.dtype == torch.bool:
        return
    low, high = target.min().item(), target.max().item()
    if not (0.0 <= low and high <= 1.0):  # also rejects NaN
        hint = (
            "a binary mask must hold 0 and 1: for a 0/255 mask pass target > 0"
            if mode == "binary"
            else "pass class indices as an integer tensor of shape (B, *spatial) with mode='multiclass'"
        )
        raise ValueError(f"target holds values in [{low}, {high}]; one-hot or soft targets must lie in [0, 1] ({hint})")


def _check_logits(logits: Tensor, mode: str) -> None:
    if not isinstance(logits, Tensor):
        raise TypeError(f"logits must be a torch.Tensor, got {type(logits).__name__}")
    if not logits.is_floating_point():
        raise TypeError(f"logits must be a floating-point tensor, got dtype {logits.dtype}")
    if logits.dim() < 3:
        raise ValueError(
            f"logits must have shape (B, C, *spatial) with at least one spatial dim, got {tuple(logits.shape)}"
        )
    if logits.numel() == 0:
        raise ValueError(f"logits must not be empty, got shape {tuple(logits.shape)}")
    channels = logits.shape[1]
    if mode == "binary" and channels != 1:
        raise ValueError(
            f"mode='binary' needs logits with 1 channel, got {channels}; "
            "use mode='multiclass' (softmax) or mode='multilabel' (sigmoid per channel)"
        )
    if mode == "multiclass" and channels < 2:
        raise ValueError(
            f"mode='multiclass' needs logits with at least 2 channels (softmax over one channel is constant), "
            f"got {channels}; use mode='binary' for a single foreground channel"
        )


def _check_options(
    mode: str,
    include_background: bool,
    reduction: str,
    smooth: float,
    weight_type: str,
    validate_args: bool,
    batch: bool,
) -> None:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    check_real("smooth", smooth)
    if not 0.0 <= smooth < float("inf"):
        raise ValueError(f"smooth must be a finite number >= 0, got {smooth!r}")
    _exponent_of(weight_type)
    check_bool("include_background", include_background)
    check_bool("validate_args", validate_args)
    check_bool("batch", batch)
    if mode == "binary" and not include_background:
        raise ValueError(
            "include_background=False drops channel 0, but mode='binary' has only the foreground channel; "
            "use include_background=True, or mode='multiclass' with a background channel"
        )


def _exponent_of(weight_type: str) -> int:
    if not isinstance(weight_type, str) or weight_type not in WEIGHT_EXPONENTS:
        raise ValueError(f"weight_type must be one of {tuple(WEIGHT_EXPONENTS)}, got {weight_type!r}")
    return WEIGHT_EXPONENTS[weight_type]


def _reduce(per_image: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return per_image.mean()
    if reduction == "sum":
        return per_image.sum()
    return per_image


def _autocast_disabled(device_type: str):
    # fp16 sums of 1/V^2-weighted volumes overflow or flush to zero; keep the loss in float32
    return _compat.autocast_disabled(device_type)
