"""The layers in timm models: every family that takes ``attn_layer`` or ``se_layer`` builds and trains with CGA, SE
and SGE, with the keyword arguments timm passes (``act_layer`` as a class or a name, ``rd_ratio``)."""

from __future__ import annotations

import dataclasses
import functools

import pytest
import torch
from torch import nn

from group_attention import CGA, SE, SGE

timm = pytest.importorskip("timm")

LAYERS = {"cga": CGA, "se": SE, "sge": SGE}


def train_step(model: nn.Module, size: int = 64) -> None:
    model.train()
    out = model(torch.randn(2, 3, size, size))
    out.float().square().mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def count(model: nn.Module, layer: type) -> int:
    return sum(isinstance(module, layer) for module in model.modules())


@pytest.mark.parametrize("name", list(LAYERS))
def test_the_keywords_timm_passes_are_accepted(name):
    """cspnet passes act_layer (a class or a name such as 'leaky_relu'); efficientnet act_layer and rd_ratio."""
    layer = LAYERS[name]
    for kwargs in ({"act_layer": "leaky_relu"}, {"act_layer": nn.SiLU}, {"rd_ratio": 0.25, "act_layer": nn.ReLU}):
        module = layer(64, **kwargs)
        assert module(torch.randn(2, 64, 5, 5)).shape == (2, 64, 5, 5)


def test_se_takes_its_activations_by_timm_name_and_rd_ratio_sets_the_width():
    module = SE(64, act_layer="leaky_relu", gate_layer="hard_sigmoid", rd_ratio=0.25)
    assert isinstance(module.act, nn.LeakyReLU) and module.fc1.out_features == 16
    x = torch.randn(2, 64, 3, 3)
    weights = module.gate(module.fc2(module.act(module.fc1(x.mean((2, 3))))))
    torch.testing.assert_close(module(x), x * weights[:, :, None, None])
    with pytest.raises(ValueError, match="unknown activation name 'nonsense'"):
        SE(64, act_layer="nonsense")


@pytest.mark.parametrize("name", ["cga", "sge"])
def test_a_gate_other_than_the_sigmoid_is_refused(name):
    with pytest.raises(ValueError, match="gate_layer must be the sigmoid"):
        LAYERS[name](64, gate_layer="hard_sigmoid")


@pytest.mark.parametrize("name", list(LAYERS))
def test_a_keyword_timm_does_not_pass_is_refused_naming_timms(name):
    with pytest.raises(TypeError, match=r"unexpected keyword arguments \['reduce'\].*'rd_ratio'"):
        LAYERS[name](64, reduce=4)


@pytest.mark.parametrize("name", list(LAYERS))
def test_resnet_block_args(name):
    model = timm.create_model("resnet18", pretrained=False, num_classes=3, block_args=dict(attn_layer=LAYERS[name]))
    assert count(model, LAYERS[name]) == 8
    train_step(model)


@pytest.mark.parametrize("name", list(LAYERS))
def test_efficientnet_se_layer(name):
    """efficientnet probes se_layer(8, rd_ratio=1.0) and passes act_layer; its widths are multiples of 8."""
    layer = LAYERS[name] if name == "se" else functools.partial(LAYERS[name], groups=8)
    model = timm.create_model("efficientnet_b0", pretrained=False, num_classes=3, se_layer=layer)
    assert count(model, LAYERS[name]) == 16
    train_step(model, size=32)


@pytest.mark.parametrize("name", list(LAYERS))
def test_cspnet_attn_layer_with_act_layer(name):
    from timm.models.cspnet import CspNet, model_cfgs

    cfg = model_cfgs["cs3darknet_s"]
    layer = LAYERS[name] if name == "se" else functools.partial(LAYERS[name], groups=16)
    cfg = dataclasses.replace(cfg, stages=dataclasses.replace(cfg.stages, attn_layer=layer))
    model = CspNet(cfg, num_classes=3)
    assert count(model, LAYERS[name]) > 0
    train_step(model)


@pytest.mark.parametrize("name", ["cga", "sge"])
def test_repvgg_widths_that_32_groups_do_not_divide_name_the_fix(name):
    layer = LAYERS[name]
    with pytest.raises(
        ValueError,
        match=rf"channels=48 is not divisible by groups=32.*functools.partial\({layer.__name__}, groups=24\)",
    ):
        timm.create_model("repvgg_a0", pretrained=False, attn_layer=layer)
    model = timm.create_model(
        "repvgg_a0", pretrained=False, num_classes=3, attn_layer=functools.partial(layer, groups=16)
    )
    assert count(model, layer) > 0
    train_step(model, size=32)
