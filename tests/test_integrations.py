"""add_attention, remove_attention and sgau_skips on models built by torchvision, timm, smp and MONAI."""

from __future__ import annotations

import copy
import io
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from references import standardize
from torch import nn

from group_attention import CGA, SE, SGE, add_attention, remove_attention, sgau_skips
from group_attention._compat import torch_version
from group_attention.integrations import AttentionAfter, GatedSkip, SkipAttention

torchvision = pytest.importorskip("torchvision")
smp = pytest.importorskip("segmentation_models_pytorch")
monai_nets = pytest.importorskip("monai.networks.nets")
from torchvision.models import resnet18, resnet50  # noqa: E402
from torchvision.models.resnet import BasicBlock, Bottleneck  # noqa: E402


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def inserted_layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, (AttentionAfter, GatedSkip))]


def reference_skip_gate(low, high, groups, eps=1e-5):
    """Eq. 3's attended half in float64, one loop per group: low_g * (1 + Up(sigma(Norm(sum_k F_k GP(F_k)))))."""
    low, high = low.double(), high.double()
    low_per_group, high_per_group = low.shape[1] // groups, high.shape[1] // groups
    mode = {2: "bilinear", 3: "trilinear"}[low.dim() - 2]
    out = torch.empty_like(low)
    for b in range(low.shape[0]):
        for g in range(groups):
            group = high[b, g * high_per_group : (g + 1) * high_per_group].flatten(1)
            dot = (group * group.mean(1, keepdim=True)).sum(0)
            attention = torch.sigmoid(standardize(dot, eps)).view(1, 1, *high.shape[2:])
            attention = F.interpolate(attention, size=low.shape[2:], mode=mode, align_corners=False)[0, 0]
            chunk = low[b, g * low_per_group : (g + 1) * low_per_group]
            out[b, g * low_per_group : (g + 1) * low_per_group] = chunk * (1 + attention)
    return out


def small_basic_unet(spatial_dims=2):
    return monai_nets.BasicUNet(
        spatial_dims=spatial_dims, in_channels=1, out_channels=2, features=(8, 8, 16, 16, 32, 8)
    )


class Stem(nn.Module):
    """A module that declares no channel count: only a forward pass tells them."""

    def __init__(self):
        super().__init__()
        self.body = nn.Conv2d(3, 16, 3, padding=1)
        self.norm = nn.BatchNorm2d(16)

    def forward(self, x):
        return torch.relu(self.norm(self.body(x)))


class StemNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = Stem()
        self.head = nn.Conv2d(16, 2, 1)

    def forward(self, x):
        return self.head(self.stem(x))


# -- add_attention --------------------------------------------------------------------------------------------------
def test_cga_after_each_resnet18_block_adds_the_layers_parameters_and_runs_them():
    model = resnet18(weights=None, num_classes=3)
    before = count_parameters(model)
    inserted = add_attention(model, "cga", after=BasicBlock, groups=32)
    widths = [64, 64, 128, 128, 256, 256, 512, 512]
    assert [(i.name, i.channels) for i in inserted] == [
        (f"layer{stage}.{block}", width)
        for (stage, block), width in zip([(s, b) for s in (1, 2, 3, 4) for b in (0, 1)], widths)
    ]
    # CGA with group gates: m * m + m = 1056 parameters per layer (the paper's count, eq. 2), whatever the width.
    assert count_parameters(model) - before == 8 * (32 * 32 + 32)
    calls = []
    for item in inserted:
        item.layer.register_forward_hook(lambda module, args, out: calls.append(module))
    out = model(torch.randn(2, 3, 64, 64))
    out.sum().backward()
    assert out.shape == (2, 3)
    assert [id(m) for m in calls] == [id(i.layer) for i in inserted]
    assert all(p.grad is not None for i in inserted for p in i.layer.parameters())


def test_cga_after_each_resnet50_bottleneck_reads_the_width_from_bn3():
    model = resnet50(weights=None, num_classes=2)
    inserted = add_attention(model, CGA, after=Bottleneck, groups=32)
    assert [i.channels for i in inserted] == [256] * 3 + [512] * 4 + [1024] * 6 + [2048] * 3
    out = model(torch.randn(2, 3, 64, 64))
    out.sum().backward()
    assert out.shape == (2, 2)


def test_original_state_dict_loads_by_its_keys_with_only_the_new_keys_missing():
    source, model = resnet18(weights=None), resnet18(weights=None)
    with torch.no_grad():  # a "pretrained" model: weights that differ from the target's
        for p in source.parameters():
            p.add_(torch.randn_like(p))
    state = source.state_dict()
    inserted = add_attention(model, "cga", after=BasicBlock, groups=16)
    new_keys = [f"{i.name}.group_attention.{k}" for i in inserted for k in i.layer.state_dict()]
    result = model.load_state_dict(state, strict=False)
    assert sorted(result.missing_keys) == sorted(new_keys)
    assert result.unexpected_keys == []
    assert list(model.state_dict()) == [k for k in _merged_order(state, new_keys)]
    remove_attention(model)
    source.eval(), model.eval()
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(model(x), source(x), rtol=0, atol=0)


def _merged_order(state, new_keys):
    """The original keys in their order, each block's new keys right after that block's own keys."""
    keys = list(state)
    for key in new_keys:
        block = key.split(".group_attention.")[0] + "."
        last = max(i for i, k in enumerate(keys) if k.startswith(block))
        keys.insert(last + 1, key)
    return keys


def test_converted_state_dict_round_trips_strictly_and_keeps_metadata():
    model = resnet18(weights=None)
    add_attention(model, "se", after=BasicBlock)
    copy_ = resnet18(weights=None)
    add_attention(copy_, "se", after=BasicBlock)
    state = model.state_dict()
    copy_.load_state_dict(state)  # strict
    assert all(torch.equal(a, b) for a, b in zip(state.values(), copy_.state_dict().values()))
    assert state._metadata["layer1.0.bn1"] == resnet18(weights=None).state_dict()._metadata["layer1.0.bn1"]


def test_missing_original_keys_are_reported_by_their_original_names():
    model = resnet18(weights=None)
    state = model.state_dict()
    add_attention(model, "cga", after=BasicBlock)
    del state["layer1.0.conv1.weight"]
    result = model.load_state_dict(state, strict=False)
    assert "layer1.0.conv1.weight" in result.missing_keys
    assert not any(".module." in key for key in result.missing_keys)


def test_remove_attention_restores_outputs_and_state_dict_keys():
    model = resnet18(weights=None).eval()
    keys = list(model.state_dict())
    x = torch.randn(2, 3, 64, 64)
    expected = model(x)
    add_attention(model, "sge", after=BasicBlock, groups=8)
    assert not torch.equal(model(x), expected)
    assert remove_attention(model) == [f"layer{s}.{b}" for s in (1, 2, 3, 4) for b in (0, 1)]
    assert list(model.state_dict()) == keys
    assert not inserted_layers(model)
    torch.testing.assert_close(model(x), expected, rtol=0, atol=0)


def test_name_patterns_match_one_name_per_star_and_any_depth_for_double_star():
    by_class = [i.name for i in add_attention(resnet18(weights=None), "cga", after=BasicBlock)]
    by_pattern = [i.name for i in add_attention(resnet18(weights=None), "cga", after="layer*.*")]
    assert by_pattern == by_class
    convs = add_attention(resnet18(weights=None), "se", after="**.conv2")
    assert [i.name for i in convs] == [f"layer{s}.{b}.conv2" for s in (1, 2, 3, 4) for b in (0, 1)]


def test_predicate_and_class_tuple_select_submodules():
    model = resnet18(weights=None)
    inserted = add_attention(model, "cga", after=lambda name, module: name in ("layer1.1", "layer3.0"))
    assert [(i.name, i.channels) for i in inserted] == [("layer1.1", 64), ("layer3.0", 256)]
    unet = small_basic_unet()
    from monai.networks.nets.basic_unet import Down, TwoConv

    inserted = add_attention(unet, "se", after=(TwoConv, Down), reduction=4)
    # A TwoConv inside a selected Down is selected too: both get a layer.
    assert {i.name for i in inserted} >= {"conv_0", "down_1", "down_1.convs", "upcat_1.convs"}
    assert unet(torch.randn(2, 1, 32, 32)).shape == (2, 2, 32, 32)


def test_a_pattern_that_matches_nothing_is_an_error():
    model = resnet18(weights=None)
    with pytest.raises(ValueError, match=r"after='encoder\.\*' matches no submodule.*layer1"):
        add_attention(model, "cga", after="encoder.*")


def test_groups_that_do_not_divide_the_channels_name_the_module_and_a_fix():
    model = nn.Sequential(nn.Conv2d(3, 64, 3), nn.ReLU(), nn.Conv2d(64, 48, 3))
    keys = list(model.state_dict())
    with pytest.raises(ValueError, match=r"after '2' \(Conv2d, 48 channels\).*groups=16"):
        add_attention(model, "cga", after=nn.Conv2d, groups=32)
    assert not inserted_layers(model) and list(model.state_dict()) == keys  # the first conv was not changed either


def test_channels_unknown_without_example_input_is_an_error_that_says_so():
    with pytest.raises(ValueError, match=r"'stem' \(Stem\).*example_input"):
        add_attention(StemNet(), "cga", after="stem", groups=8)


def test_example_input_measures_channels_without_touching_batchnorm_statistics_or_modes():
    model = StemNet().train()
    model.head.eval()  # a mixed-mode model: each module's mode must come back as it was
    stats = {k: v.clone() for k, v in model.state_dict().items()}
    inserted = add_attention(model, "cga", after="stem", example_input=torch.randn(2, 3, 16, 16), groups=8)
    assert [(i.name, i.channels) for i in inserted] == [("stem", 16)]
    for key, value in stats.items():
        assert torch.equal(model.state_dict()[key], value), key
    assert model.training and model.stem.training and model.stem.module.norm.training and not model.head.training


def test_example_input_that_does_not_reach_a_selected_module_is_an_error():
    model = StemNet()
    model.unused = Stem()
    with pytest.raises(ValueError, match="'unused'.*not called"):
        add_attention(model, "cga", after=Stem, example_input=torch.randn(1, 3, 8, 8), groups=8)


def test_sequential_channels_come_from_its_last_declaring_member():
    model = nn.Sequential(nn.Sequential(nn.Conv2d(3, 32, 3), nn.BatchNorm2d(32), nn.ReLU()), nn.Conv2d(32, 4, 1))
    assert [(i.name, i.channels) for i in add_attention(model, "cga", after="0", groups=8)] == [("0", 32)]


def test_inserting_twice_after_one_module_is_an_error():
    model = resnet18(weights=None)
    add_attention(model, "cga", after=BasicBlock)
    with pytest.raises(ValueError, match="'layer1.0' already has a CGA"):
        add_attention(model, "se", after="layer1.0")


@pytest.mark.parametrize("layer, error", [("none", ValueError), ("cbam", ValueError), (CGA(64), TypeError)])
def test_layer_must_be_a_name_class_or_factory(layer, error):
    with pytest.raises(error):
        add_attention(resnet18(weights=None), layer, after=BasicBlock)


@pytest.mark.parametrize("after", [3, (), [BasicBlock], nn.ReLU()])
def test_after_of_the_wrong_kind_is_a_type_error(after):
    with pytest.raises(TypeError, match="after must be"):
        add_attention(resnet18(weights=None), "cga", after=after)


def test_wrapped_module_attributes_stay_readable_and_the_model_copies_and_pickles():
    model = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.Conv2d(32, 2, 1))
    add_attention(model, SE, after="0", reduction=4)
    assert model[0].out_channels == 32 and model[0].weight.shape == (32, 3, 3, 3)
    x = torch.randn(1, 3, 8, 8)
    clone = copy.deepcopy(model)
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    torch.testing.assert_close(clone(x), model(x))
    torch.testing.assert_close(loaded(x), model(x))
    assert list(clone.state_dict()) == list(model.state_dict())


def test_timm_resnet_blocks_get_their_width_from_bn3():
    timm = pytest.importorskip("timm")
    model = timm.create_model("resnet26", pretrained=False, num_classes=2)
    from timm.models.resnet import Bottleneck as TimmBottleneck

    inserted = add_attention(model, SGE, after=TimmBottleneck, groups=16)
    assert [i.channels for i in inserted] == [256] * 2 + [512] * 2 + [1024] * 2 + [2048] * 2
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 2)


def test_converted_model_is_finite_under_bf16_autocast_and_for_constant_input():
    model = resnet18(weights=None, num_classes=2).eval()  # batch 1 is for inference: torchvision's BN needs 2
    add_attention(model, "cga", after=BasicBlock)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(torch.randn(1, 3, 32, 32))
    assert torch.isfinite(out).all()
    assert torch.isfinite(model(torch.ones(1, 3, 32, 32))).all()


# -- sgau_skips -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "shape_low, shape_high",
    [((2, 8, 12, 10), (2, 16, 6, 5)), ((1, 8, 6, 4, 8), (1, 8, 3, 2, 4)), ((2, 8, 9, 7), (2, 8, 5, 4))],
)
def test_skip_attention_is_eq3_gating(shape_low, shape_high):
    low, high = torch.randn(shape_low), torch.randn(shape_high)
    out = SkipAttention(8, groups=4)(low, high)
    torch.testing.assert_close(out.double(), reference_skip_gate(low, high, 4), rtol=1e-5, atol=1e-5)


def test_skip_attention_is_finite_for_constant_high_features_and_batch_one():
    low, high = torch.randn(1, 4, 8, 8), torch.full((1, 4, 4, 4), 3.0, requires_grad=True)
    out = SkipAttention(4, groups=2)(low, high)
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(high.grad).all()
    torch.testing.assert_close(out, 1.5 * low)  # a constant map standardizes to 0: sigmoid(0) = 1/2


def test_skip_attention_rejects_groups_that_do_not_divide_the_channels():
    with pytest.raises(
        ValueError, match=r"channels=12 is not divisible by groups=8; valid groups: \[1, 2, 3, 4, 6, 12\]"
    ):
        SkipAttention(12, groups=8)


def test_smp_unet_sgau_skips_keep_parameters_shape_and_keys():
    model = smp.Unet("resnet18", encoder_weights=None, classes=2)
    assert count_parameters(model) == 14_328_354
    keys = list(model.state_dict())
    inserted = sgau_skips(model, groups=32)
    assert [(i.name, i.channels) for i in inserted] == [
        ("decoder.blocks.0", 256),
        ("decoder.blocks.1", 128),
        ("decoder.blocks.2", 64),
        ("decoder.blocks.3", 64),
    ]
    assert count_parameters(model) == 14_328_354
    assert list(model.state_dict()) == keys
    calls = []
    for item in inserted:
        item.layer.register_forward_hook(lambda module, args, out: calls.append(module))
    out = model(torch.randn(2, 3, 64, 64))
    out.mean().backward()
    assert out.shape == (2, 2, 64, 64)
    assert [id(m) for m in calls] == [id(i.layer) for i in inserted]


def test_smp_decoder_block_receives_the_gated_skip():
    model = smp.Unet("resnet18", encoder_weights=None, classes=2).eval()
    block = model.decoder.blocks[1]
    sgau_skips(model, groups=32)
    high, skip = torch.randn(2, 256, 8, 8), torch.randn(2, 128, 16, 16)
    expected = block(high, 16, 16, skip_connection=reference_skip_gate(skip, high, 32).float())
    torch.testing.assert_close(
        model.decoder.blocks[1](high, 16, 16, skip_connection=skip), expected, rtol=1e-4, atol=1e-4
    )
    torch.testing.assert_close(model.decoder.blocks[1](high, 16, 16, skip), expected, rtol=1e-4, atol=1e-4)


def test_smp_unet_with_cga_encoder_and_sgau_skips_restores_to_the_original():
    model = smp.Unet("resnet18", encoder_weights=None, classes=2).eval()
    state = model.state_dict()
    x = torch.randn(2, 3, 64, 64)
    expected = model(x)
    inserted = add_attention(model.encoder, "cga", after=BasicBlock, groups=32)
    sgau_skips(model, groups=32)
    result = model.load_state_dict(state, strict=False)
    assert sorted(result.missing_keys) == sorted(
        f"encoder.{i.name}.group_attention.{k}" for i in inserted for k in i.layer.state_dict()
    )
    assert not torch.allclose(model(x), expected)
    assert len(remove_attention(model)) == 8 + 4
    assert list(model.state_dict()) == list(state)
    torch.testing.assert_close(model(x), expected, rtol=0, atol=0)


@pytest.mark.parametrize("spatial_dims, size", [(2, (32, 32)), (3, (32, 32, 32))])
def test_monai_basic_unet_sgau_skips(spatial_dims, size):
    model = small_basic_unet(spatial_dims).eval()
    parameters = count_parameters(model)
    x = torch.randn(2, 1, *size)
    expected = model(x)
    inserted = sgau_skips(model, groups=8)
    assert [(i.name, i.channels) for i in inserted] == [
        ("upcat_4", 16),
        ("upcat_3", 16),
        ("upcat_2", 8),
        ("upcat_1", 8),
    ]
    assert count_parameters(model) == parameters
    model.train()
    out = model(x)
    out.mean().backward()
    assert out.shape == (2, 2, *size)
    remove_attention(model)
    torch.testing.assert_close(model.eval()(x), expected, rtol=0, atol=0)


def test_monai_upcat_receives_the_gated_skip():
    model = small_basic_unet().eval()
    upcat = model.upcat_3
    sgau_skips(model, groups=8)
    high, skip = torch.randn(2, 16, 4, 4), torch.randn(2, 16, 8, 8)
    torch.testing.assert_close(
        model.upcat_3(high, skip), upcat(high, reference_skip_gate(skip, high, 8).float()), rtol=1e-4, atol=1e-4
    )


def test_groups_not_dividing_a_skip_lists_valid_groups_and_changes_nothing():
    model = small_basic_unet()
    with pytest.raises(
        ValueError,
        match=r"groups=16 .*'upcat_2' joins 8 skip .*valid for every skip of this model: "
        r"\[1, 2, 4, 8\]",
    ):
        sgau_skips(model, groups=16)
    assert not inserted_layers(model)


def test_unsupported_models_get_an_error_listing_the_supported_kinds_and_stay_unchanged():
    model = resnet18(weights=None)
    with pytest.raises(
        TypeError,
        match=r"supports \['segmentation_models_pytorch.Unet', "
        r"'monai.networks.nets.BasicUNet'\], got torchvision",
    ):
        sgau_skips(model)
    assert not inserted_layers(model)
    from group_attention import UNet

    with pytest.raises(TypeError, match='skip="sgau"'):
        sgau_skips(UNet(in_channels=3, num_classes=2))


def test_sgau_skips_twice_is_an_error():
    model = small_basic_unet()
    sgau_skips(model, groups=8)
    with pytest.raises(ValueError, match="already has a SkipAttention"):
        sgau_skips(model, groups=8)


# -- torch.compile, export, CUDA, imports ---------------------------------------------------------------------------
def converted_small_unet():
    model = small_basic_unet()
    from monai.networks.nets.basic_unet import TwoConv

    add_attention(model, "cga", after=TwoConv, groups=8)
    sgau_skips(model, groups=8)
    return model.eval()


def converted_decoder_block():
    """An smp decoder block with its skip gated and CGA after its second conv, with inputs for it."""
    model = smp.Unet("resnet18", encoder_weights=None, classes=2).eval()
    sgau_skips(model, groups=32)
    block = model.decoder.blocks[2]
    add_attention(block, "cga", after="conv2", groups=32)
    return block, (torch.randn(2, 128, 8, 8), 16, 16), {"skip_connection": torch.randn(2, 64, 16, 16)}


def test_converted_block_traces_as_one_graph_under_torch_compile():
    block, args, kwargs = converted_decoder_block()
    compiled = torch.compile(block, backend="eager", fullgraph=True)
    torch.testing.assert_close(compiled(*args, **kwargs), block(*args, **kwargs), rtol=1e-5, atol=1e-5)


def test_converted_block_exports_and_matches_eager():
    block, args, kwargs = converted_decoder_block()
    exported = torch.export.export(block, args, kwargs)
    # torch 2.2's unlifted module takes no keyword inputs (2.3's does); its ExportedProgram runs them
    run = exported.module() if torch_version() >= (2, 3) else exported
    torch.testing.assert_close(run(*args, **kwargs), block(*args, **kwargs), rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_converted_smp_unet_compiles_with_inductor_forward_and_backward():
    model = smp.Unet("resnet18", encoder_weights=None, classes=2, decoder_channels=(64, 32, 32, 32, 16))
    add_attention(model.encoder, "cga", after=BasicBlock, groups=32)
    sgau_skips(model, groups=32)
    model.eval()  # fixed BatchNorm statistics: eager and compiled runs see the same model
    x = torch.randn(2, 3, 64, 64)
    compiled = torch.compile(model, fullgraph=True, dynamic=False)
    out = compiled(x)
    out.square().mean().backward()
    compiled_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    expected = model(x)
    expected.square().mean().backward()
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-4)
    for compiled_grad, p in zip(compiled_grads, model.parameters()):
        torch.testing.assert_close(compiled_grad, p.grad, rtol=1e-3, atol=1e-4)


@pytest.mark.slow
def test_converted_unet_exports_and_matches_eager():
    model = converted_small_unet()
    x = torch.randn(2, 1, 32, 32)
    exported = torch.export.export(model, (x,))
    torch.testing.assert_close(exported.module()(x), model(x), rtol=1e-5, atol=1e-5)


@pytest.mark.cuda
def test_converted_models_run_forward_and_backward_on_cuda():
    unet = smp.Unet("resnet18", encoder_weights=None, classes=2)
    add_attention(unet.encoder, "cga", after=BasicBlock, groups=32)
    sgau_skips(unet, groups=32)
    unet = unet.cuda()
    out = unet(torch.randn(2, 3, 64, 64, device="cuda"))
    out.mean().backward()
    assert out.shape == (2, 2, 64, 64) and torch.isfinite(out).all()
    model = resnet18(weights=None).cuda()
    inserted = add_attention(model, "cga", after=BasicBlock)
    assert all(p.is_cuda for i in inserted for p in i.layer.parameters())
    model(torch.randn(2, 3, 64, 64, device="cuda")).sum().backward()


def test_importing_the_library_imports_no_framework():
    code = (
        "import sys, group_attention, group_attention.integrations; "
        "print([m for m in ('torchvision', 'segmentation_models_pytorch', 'monai') if m in sys.modules])"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
