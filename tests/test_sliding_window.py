"""The core's sliding window: any number of spatial dimensions, any predictor, constant or Gaussian weights.

References: the whole-input forward pass (a window covering the input), a float64 brute force of the weighted mean
written out, and MONAI's ``sliding_window_inference`` (an independent implementation) where MONAI is installed.
"""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from group_attention import GANet
from group_attention.inference import gaussian_weight, sliding_window_inference, window_starts


def test_a_3d_volume_through_a_window_covering_it_equals_the_whole_volume_forward_pass():
    torch.manual_seed(0)
    model = GANet(1, 2, spatial_dims=3, channels=(4, 8), groups=2).eval()
    volume = torch.randn(2, 1, 12, 16, 20)
    with torch.no_grad():
        whole = model(volume)
    for roi in [(12, 16, 20), (64, 64, 64), 100]:  # exactly the volume, or larger: clipped to it
        result = sliding_window_inference(volume, roi, 4, model)
        torch.testing.assert_close(result, whole, rtol=0, atol=0)


def test_a_pointwise_predictor_gives_its_own_output_at_every_overlap_and_dimension():
    predictor = nn.Conv3d(2, 3, 1)
    volume = torch.randn(1, 2, 9, 13, 11)
    with torch.no_grad():
        expected = predictor(volume)
    for overlap, mode in itertools.product((0.0, 0.25, 0.6), ("constant", "gaussian")):
        result = sliding_window_inference(volume, (4, 5, 6), 3, predictor, overlap, mode)
        torch.testing.assert_close(result, expected, rtol=1e-5, atol=1e-6)


class WindowMean(nn.Module):
    """Depends on the whole window: each window's mean everywhere, per channel."""

    def forward(self, x):
        return x.mean(dim=tuple(range(2, x.dim())), keepdim=True).expand_as(x).clone()


@pytest.mark.parametrize("mode", ["constant", "gaussian"])
def test_overlapping_windows_blend_as_the_written_out_weighted_mean(mode):
    torch.manual_seed(1)
    image = torch.rand(2, 1, 23, 30)
    roi, overlap = (8, 12), 0.4
    result = sliding_window_inference(image, roi, 5, WindowMean(), overlap, mode).double()
    weight = gaussian_weight(roi).double() if mode == "gaussian" else torch.ones(roi, dtype=torch.float64)
    total = torch.zeros(2, 1, 23, 30, dtype=torch.float64)
    weights = torch.zeros(23, 30, dtype=torch.float64)
    for top in window_starts(23, 8, overlap):
        for left in window_starts(30, 12, overlap):
            window = image[:, :, top : top + 8, left : left + 12].double()
            total[:, :, top : top + 8, left : left + 12] += window.mean(dim=(2, 3), keepdim=True) * weight
            weights[top : top + 8, left : left + 12] += weight
    torch.testing.assert_close(result, total / weights, rtol=1e-6, atol=1e-7)


def test_the_output_has_the_predictor_channels_and_float32_on_the_requested_device():
    image = torch.randint(0, 255, (1, 3, 20, 24), dtype=torch.uint8)
    result = sliding_window_inference(image, 8, 2, lambda x: x.float()[:, :1] / 255, device="cpu")
    assert result.shape == (1, 1, 20, 24) and result.dtype == torch.float32
    torch.testing.assert_close(result, image[:, :1].float() / 255)


def test_one_dimension_works_too():
    signal = torch.randn(3, 2, 50)
    predictor = nn.Conv1d(2, 4, 1)
    with torch.no_grad():
        torch.testing.assert_close(sliding_window_inference(signal, 16, 4, predictor), predictor(signal))


def test_it_agrees_with_monai_where_the_windows_are_the_same():
    monai_inferers = pytest.importorskip("monai.inferers")
    torch.manual_seed(2)
    predictor = nn.Conv2d(3, 2, 5, padding=2)  # border-sensitive: blending matters
    image = torch.randn(2, 3, 37, 45)
    with torch.no_grad():
        ours = sliding_window_inference(image, (16, 20), 3, predictor, 0.25, "constant")
        theirs = monai_inferers.sliding_window_inference(image, (16, 20), 3, predictor, 0.25, "constant")
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)


ILL_CASES = [
    (dict(inputs=torch.zeros(3, 8)), "at least one spatial dimension"),
    (dict(inputs=torch.zeros(0, 1, 8, 8)), "at least one item"),
    (dict(roi_size=(4,)), "one size per spatial dimension"),
    (dict(roi_size=(4, 0)), "roi_size\\[1\\]"),
    (dict(sw_batch_size=0), "sw_batch_size"),
    (dict(overlap=1.0), "overlap must be in"),
    (dict(mode="linear"), "mode must be one of"),
    (dict(predictor="net"), "predictor must be callable"),
    (dict(predictor=lambda x: x[:, :, :2]), "predictor must map"),
]


@pytest.mark.parametrize("change, message", ILL_CASES)
def test_bad_arguments_are_refused_naming_them(change, message):
    arguments = dict(inputs=torch.zeros(1, 1, 8, 8), roi_size=(4, 4), sw_batch_size=2, predictor=nn.Identity())
    arguments.update(change)
    with pytest.raises((ValueError, TypeError), match=message):
        sliding_window_inference(**arguments)
