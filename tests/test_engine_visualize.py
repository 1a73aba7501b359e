"""The pictures: Fig. 5 overlay colours and Fig. 4 attention panels."""

from __future__ import annotations

import numpy as np
import torch

from group_attention.fundus.engine.visualize import FALSE_NEGATIVE, FALSE_POSITIVE, TRUE_POSITIVE, overlay


def test_overlay_colours_follow_figure_5():
    image = torch.zeros(3, 1, 4)
    prediction = torch.tensor([[1, 1, 0, 0]])
    truth = torch.tensor([[1, 0, 1, 0]])
    pixels = [tuple(p) for p in np.asarray(overlay(image, prediction, truth)).reshape(-1, 3).tolist()]
    assert pixels == [TRUE_POSITIVE, FALSE_POSITIVE, FALSE_NEGATIVE, (0, 0, 0)]
    assert (TRUE_POSITIVE, FALSE_POSITIVE, FALSE_NEGATIVE) == ((255, 255, 0), (255, 0, 0), (0, 0, 255))


def test_attention_figure_leaves_the_models_recording_as_it_was():
    from group_attention import GANet
    from group_attention.fundus.engine import attention_panels

    model = GANet(channels=(32, 64), num_classes=1)
    model.record_attention = True
    image = torch.rand(3, 32, 32)
    model(image[None])
    recorded = model.attention_maps()
    assert attention_panels(model, image, torch.zeros(32, 32)) is not None
    assert model.attention_maps() is not None and all(a is b for a, b in zip(model.attention_maps(), recorded))
