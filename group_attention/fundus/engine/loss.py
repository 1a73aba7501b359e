"""The training loss of a lesion model, per lesion as in the paper.

The paper's model has two logits (background, lesion) and the two-class generalized Dice loss over their softmax.
A model with one sigmoid logit ``z`` per lesion (``activation="sigmoid"``, and every joint model) gets the same loss
per lesion: ``softmax([0, z]) = [1 - sigmoid(z), sigmoid(z)]``, so the two-class loss of the logits ``[0, z]`` and
that lesion's mask is the paper's loss of a background and a lesion probability. A joint model's loss is the mean
over its lesions: the outputs are independent, as IDRiD's lesions overlap (HE and MA, EX and SE).

The Dice is computed per image (the paper's) or over the batch's pixels pooled (``dice_over="batch"``, the default
for patches): see :class:`~group_attention.fundus.engine.ExperimentConfig`'s ``dice_over``.
"""

from __future__ import annotations

import torch
from torch import nn

from ..._checks import check_choice
from ...losses import GeneralizedDiceLoss

__all__ = ["LesionLoss", "DICE_OVER"]

#: Where the Dice of a training batch is computed: each image's, or the batch's pixels pooled.
DICE_OVER = ("image", "batch")


class LesionLoss(nn.Module):
    """The two-class (generalized) Dice loss of every lesion of a model, averaged over its lesions.

    Args:
        activation: ``"softmax"`` (logits ``(B, 2, H, W)``: background and one lesion) or ``"sigmoid"`` (logits
            ``(B, L, H, W)``: one independent logit per lesion).
        weight_type: the class weights of :class:`~group_attention.losses.GeneralizedDiceLoss` (``"square"``: the
            paper's generalized Dice; ``"uniform"``: plain soft Dice).
        dice_over: ``"image"`` (each image's Dice, the paper's) or ``"batch"`` (the batch's pixels pooled, the
            ``batch`` option of :class:`~group_attention.losses.GeneralizedDiceLoss`).

    Shape:
        ``logits (B, K, H, W)``, ``masks (B, L, H, W)`` 0/1 (or ``(B, H, W)`` for one lesion) -> a scalar.
    """

    def __init__(self, activation: str, weight_type: str = "square", dice_over: str = "image") -> None:
        super().__init__()
        if activation not in ("softmax", "sigmoid"):
            raise ValueError(f"activation must be one of ['softmax', 'sigmoid'], got {activation!r}")
        self.activation, self.dice_over = activation, check_choice("dice_over", dice_over, DICE_OVER)
        # validate_args=False: our masks are 0/1 by construction, so the check's device sync is skipped.
        self.two_class = GeneralizedDiceLoss(
            "multiclass", weight_type=weight_type, validate_args=False, batch=dice_over == "batch"
        )

    def forward(self, logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        if masks.dim() == 3:
            masks = masks[:, None]
        if self.activation == "softmax":
            return self.two_class(logits, masks[:, 0].long())
        if masks.shape[1] != logits.shape[1]:
            raise ValueError(f"{logits.shape[1]} lesion logits but {masks.shape[1]} lesion masks")
        losses = [
            self.two_class(torch.stack([torch.zeros_like(logits[:, k]), logits[:, k]], dim=1), masks[:, k].long())
            for k in range(logits.shape[1])
        ]
        return torch.stack(losses).mean()

    def extra_repr(self) -> str:
        return (
            f"activation={self.activation!r}, weight_type={self.two_class.weight_type!r}, dice_over={self.dice_over!r}"
        )
