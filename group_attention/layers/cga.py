"""Channel Group Attention (CGA), eqs 1-2 of Ye et al., "GANet: Group attention network for diabetic retinopathy
image segmentation", SPIE Medical Imaging 2020 (doi:10.1117/12.2548310)."""

from __future__ import annotations


import torch
from torch import nn

from .._checks import check_choice, check_feature_map, check_groups
from ._group_ops import DEFAULT_EPS, expand_groups, group_sum, spatial_dims, spatial_standardize

GATE_MODES = ("group", "channel")


class CGA(nn.Module):
    r"""Channel Group Attention: reweight channels by how salient their group's summed map is.

    The ``C`` channels are split into ``m`` groups of ``C / m`` consecutive channels. Each group is summed over its
    channels into one map, standardized over space and squashed by a sigmoid (eq. 1, the "Submodule"); the ``m`` maps
    are globally average-pooled, mapped by a learned linear layer and a sigmoid to channel weights that multiply the
    input (eq. 2):

    .. math::
        s_g = \sigma\Big(\mathrm{Norm}\big(\textstyle\sum_{c \in g} F_c\big)\Big), \qquad
        Y = \sigma\big(W \, \mathrm{GP}(s) + b\big) \otimes F

    where :math:`\mathrm{Norm}(t) = (t - \mu_t) / (\sigma_t + \epsilon)` over space.

    The paper leaves the shape of the learned map open. With ``gate="group"`` (default) :math:`W` maps the ``m``
    pooled values to ``m`` group weights (``m*m + m`` parameters), each weight shared by the ``C / m`` channels of its
    group: five such modules with m = 32 add 5,280 parameters, the 6K of Table 1 (6.981M -> 6.987M). ``gate="channel"``
    maps to ``C`` channel weights (``m*C + C`` parameters; 32.7K for the paper's encoder), which the table rules out
    for GANet but which is offered for experiments.

    Args:
        channels: number of input channels ``C``; the first positional argument, so ``CGA`` works as timm's
            ``attn_layer``.
        groups: number of groups ``m`` (default 32, the paper's); must divide ``channels``.
        gate: ``"group"`` (one weight per group, default) or ``"channel"`` (one weight per channel).
        eps: added to the spatial standard deviation (default 1e-5).
        device, dtype: factory keyword arguments for the parameters (timm passes them).

    Shape:
        - Input: ``(B, C, *spatial)`` with 1 to 3 spatial dims (images or volumes), any memory format.
        - Output: same shape, dtype and device as the input.

    Example:
        >>> cga = CGA(64, groups=32)
        >>> cga(torch.randn(2, 64, 24, 32)).shape
        torch.Size([2, 64, 24, 32])
    """

    def __init__(
        self,
        channels: int,
        groups: int = 32,
        *,
        gate: str = "group",
        eps: float = DEFAULT_EPS,
        device: "torch.device | str | None" = None,
        dtype: "torch.dtype | None" = None,
    ) -> None:
        super().__init__()
        check_groups("channels", channels, groups)
        check_choice("gate", gate, GATE_MODES)
        self.channels = channels
        self.groups = groups
        self.gate = gate
        self.eps = eps
        out_features = groups if gate == "group" else channels
        self.fc = nn.Linear(groups, out_features, device=device, dtype=dtype)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """PyTorch's default ``nn.Linear`` initialisation."""
        self.fc.reset_parameters()

    def group_saliency(self, x: torch.Tensor) -> torch.Tensor:
        """Eq. 1: the sigmoid of each group's standardized channel sum. ``(B, C, *spatial) -> (B, m, *spatial)``."""
        return torch.sigmoid(spatial_standardize(group_sum(x, self.groups), self.eps))

    def channel_weights(self, x: torch.Tensor) -> torch.Tensor:
        """Eq. 2 without the product: the weight of every channel in (0, 1). ``(B, C, *spatial) -> (B, C)``."""
        pooled = self.group_saliency(x).mean(spatial_dims(x))
        weights = torch.sigmoid(self.fc(pooled.to(self.fc.weight.dtype)))
        return expand_groups(weights, self.channels) if self.gate == "group" else weights

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_feature_map("x", x, self.channels, type(self).__name__)
        weights = self.channel_weights(x).to(x.dtype)
        return x * weights.view(*weights.shape, *([1] * (x.dim() - 2)))

    def extra_repr(self) -> str:
        return f"{self.channels}, groups={self.groups}, gate={self.gate!r}, eps={self.eps}"
