"""Pictures a person can read: overlays at least 512 px wide with a legend of the Fig. 5 colours, and the Fig. 4
attention panels side by side with colour bars, the attention on its fixed 0..1 scale."""

from __future__ import annotations

import numpy as np
import torch

from group_attention import GANet
from group_attention.fundus.engine import attention_panels, overlay
from group_attention.fundus.engine.visualize import FALSE_NEGATIVE, FALSE_POSITIVE, TRUE_POSITIVE, overlay_figure

VIRIDIS_ENDS = ((68, 1, 84), (253, 231, 37))


def test_overlay_figure_is_at_least_512_wide_and_keeps_every_pixel_of_the_overlay():
    image = torch.rand(3, 12, 20)
    prediction, truth = torch.rand(12, 20) > 0.5, torch.rand(12, 20) > 0.5
    figure = np.asarray(overlay_figure(image, prediction, truth))
    assert figure.shape[1] >= 512
    factor = figure.shape[1] // 20  # a whole factor, nearest neighbour: each pixel becomes a factor x factor block
    small = np.asarray(overlay(image, prediction, truth))
    assert factor * 20 == figure.shape[1]
    assert np.array_equal(figure[: 12 * factor : factor, ::factor], small)
    assert np.array_equal(figure[factor - 1 : 12 * factor : factor, factor - 1 :: factor], small)


def test_overlay_legend_shows_the_three_colours_below_the_picture():
    image = torch.zeros(3, 8, 8)  # black: no legend colour in the picture itself
    figure = np.asarray(overlay_figure(image, torch.zeros(8, 8), torch.zeros(8, 8)))
    picture_height = 8 * (figure.shape[1] // 8)
    legend = figure[picture_height:].reshape(-1, 3)
    present = {tuple(pixel) for pixel in legend.tolist()}
    for colour in (TRUE_POSITIVE, FALSE_POSITIVE, FALSE_NEGATIVE):
        assert colour in present
    assert figure.shape[0] > picture_height + 10


def test_attention_figure_has_four_panels_and_colour_bars_with_both_ends_of_the_scale():
    torch.manual_seed(0)
    model = GANet(channels=(32, 64), num_classes=2)
    truth = torch.zeros(1, 32, 32)
    truth[0, 8:16, 8:16] = 1
    figure = np.asarray(attention_panels(model, torch.rand(3, 32, 32), truth))
    assert figure.shape[1] >= 4 * 256
    # The ground-truth panel (a): its white square, 8 of 32 pixels per side, scaled like the others.
    rows_with_white = np.where((figure[:, : figure.shape[1] // 4] == 255).all(-1).sum(1) > 40)[0]
    assert len(rows_with_white) > 0
    colours = {tuple(pixel) for pixel in figure.reshape(-1, 3).tolist()}
    for end in VIRIDIS_ENDS:  # the colour bars run from the lowest colour to the highest
        assert end in colours
