"""Exported, traced and compiled layers and models give the eager answer at every input size, or refuse loudly.

Each case exports at one size with dynamic batch and spatial dims, then runs the exported program at the export size
and at other sizes and batch sizes (odd ones, and ones the U-Net must pad), against the eager module with random (not
initial) parameters; the eager module is itself checked against float64 references in test_layers.py.
"""

from __future__ import annotations

import inspect
import io
import warnings

import numpy as np
import pytest
import torch
from torch import nn
from torch.export import Dim

from group_attention import CGA, SE, SGAU, SGE, VARIANTS, ConcatSkip, GANet, build_variant
from group_attention._compat import needs_torch

pytestmark = pytest.mark.filterwarnings(
    "ignore::torch.jit.TracerWarning", "ignore::DeprecationWarning", "ignore::FutureWarning", "ignore::UserWarning"
)


def randomized(module: nn.Module, std: float = 0.5) -> nn.Module:
    torch.manual_seed(0)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.normal_(0, std)
        for buffer in module.buffers():
            if buffer.is_floating_point():
                buffer.uniform_(0.5, 1.5)
    return module.eval()


# name -> (module factory, example input shapes, other input shapes to check)
LAYERS_2D = {
    "cga": (lambda: CGA(16, 4), [(2, 16, 12, 10)], [[(3, 16, 7, 9)], [(1, 16, 1, 5)]]),
    "cga-channel-gate": (lambda: CGA(16, 4, gate="channel"), [(2, 16, 12, 10)], [[(3, 16, 7, 9)]]),
    "se": (lambda: SE(16, 4), [(2, 16, 12, 10)], [[(3, 16, 7, 9)]]),
    "sge": (lambda: SGE(16, 4), [(2, 16, 12, 10)], [[(3, 16, 7, 9)], [(1, 16, 1, 5)]]),
    "sgau": (
        lambda: SGAU(8, 16, 4),
        [(2, 8, 12, 10), (2, 16, 6, 5)],
        [[(3, 8, 14, 18), (3, 16, 7, 9)], [(1, 8, 9, 11), (1, 16, 5, 6)], [(2, 8, 10, 10), (2, 16, 3, 4)]],
    ),
    "concat": (lambda: ConcatSkip(8, 16), [(2, 8, 12, 10), (2, 16, 6, 5)], [[(3, 8, 15, 9), (3, 16, 7, 5)]]),
}
LAYERS_3D = {
    "cga-3d": (lambda: CGA(8, 4), [(2, 8, 6, 5, 4)], [[(1, 8, 3, 7, 5)]]),
    "sge-3d": (lambda: SGE(8, 4), [(2, 8, 6, 5, 4)], [[(1, 8, 3, 7, 5)]]),
    "sgau-3d": (
        lambda: SGAU(4, 8, 4, spatial_dims=3),
        [(2, 4, 6, 4, 4), (2, 8, 3, 2, 2)],
        [[(1, 4, 8, 6, 4), (1, 8, 4, 3, 2)]],
    ),
}
LAYERS = {**LAYERS_2D, **LAYERS_3D}


def inputs(shapes, seed):
    generator = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(shape, generator=generator) * 2 + 0.5 for shape in shapes)


# Before torch 2.6 there is no Dim.DYNAMIC (and torch.onnx.export takes dynamic_shapes from 2.5): the tests of
# dynamic-shape export skip there; tracing and the legacy ONNX exporter are tested on every torch.
DIM_DYNAMIC = "torch.export.Dim.DYNAMIC (dynamic-shape export, and torch.onnx.export(dynamo=True) with it)"
# torch.onnx.export takes dynamo= from torch 2.4; before that the legacy (TorchScript) exporter is its only one.
LEGACY_ONNX = {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}


def dynamic_shapes(shapes):
    if not hasattr(Dim, "DYNAMIC"):
        pytest.skip(str(needs_torch((2, 6), DIM_DYNAMIC)))
    return tuple({dim: Dim.DYNAMIC for dim in [0, *range(2, len(shape))]} for shape in shapes)


def assert_matches_eager(run, module, example_shapes, other_shapes):
    for seed, shapes in enumerate([example_shapes, *other_shapes]):
        args = inputs(shapes, seed)
        with torch.no_grad():
            expected = module(*args)
        actual = torch.as_tensor(run(*args))
        assert actual.shape == expected.shape
        torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5 * expected.abs().max().item())


def onnxruntime_runner(path):
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [item.name for item in session.get_inputs()]
    return lambda *args: session.run(None, {name: arg.numpy() for name, arg in zip(names, args)})[0]


def legacy_onnx(module, args, path):
    names = [f"input{index}" for index in range(len(args))]
    axes = {name: {dim: f"{name}_{dim}" for dim in [0, *range(2, arg.dim())]} for name, arg in zip(names, args)}
    torch.onnx.export(module, args, str(path), **LEGACY_ONNX, input_names=names, dynamic_axes=axes)
    return onnxruntime_runner(path)


def dynamo_onnx(module, args, path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module, args, str(path), dynamo=True, dynamic_shapes=dynamic_shapes([a.shape for a in args]), verbose=False
        )
    return onnxruntime_runner(path)


def saved_and_loaded_trace(module, args):
    """``torch.jit.trace``, saved with ``torch.jit.save`` and loaded back."""
    with torch.no_grad():
        traced = torch.jit.trace(module, args)
    buffer = io.BytesIO()
    torch.jit.save(traced, buffer)
    buffer.seek(0)
    return torch.jit.load(buffer)


# -- layers ------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(LAYERS))
def test_torch_export_is_right_at_every_size(name):
    make, shapes, others = LAYERS[name]
    module = randomized(make())
    program = torch.export.export(module, inputs(shapes, 0), dynamic_shapes=dynamic_shapes(shapes))
    assert_matches_eager(program.module(), module, shapes, others)


@pytest.mark.parametrize("name", list(LAYERS))
def test_legacy_onnx_export_is_right_at_every_size(name, tmp_path):
    make, shapes, others = LAYERS[name]
    module = randomized(make())
    run = legacy_onnx(module, inputs(shapes, 0), tmp_path / "layer.onnx")
    assert_matches_eager(run, module, shapes, others)


@pytest.mark.parametrize(
    "name", ["cga", "sgau"] + [pytest.param(n, marks=pytest.mark.slow) for n in LAYERS if n not in ("cga", "sgau")]
)
def test_dynamo_onnx_export_is_right_at_every_size(name, tmp_path):
    make, shapes, others = LAYERS[name]
    module = randomized(make())
    run = dynamo_onnx(module, inputs(shapes, 0), tmp_path / "layer.onnx")
    assert_matches_eager(run, module, shapes, others)


@pytest.mark.parametrize("name", list(LAYERS))
def test_a_traced_layer_saves_loads_and_is_right_at_other_sizes(name):
    make, shapes, others = LAYERS[name]
    module = randomized(make())
    assert_matches_eager(saved_and_loaded_trace(module, inputs(shapes, 0)), module, shapes, others)


@pytest.mark.parametrize(
    "make",
    [
        lambda: CGA(8, 4),
        lambda: SE(8),
        lambda: SGE(8, 4),
        lambda: SGAU(8, 8, 4),
        lambda: ConcatSkip(8, 8),
        lambda: GANet(channels=(8, 16), groups=4),
    ],
    ids=["cga", "se", "sge", "sgau", "concat", "ganet"],
)
def test_torchscript_refuses_at_once_naming_torch_export(make):
    with pytest.raises(RuntimeError, match=r"does not support torch.jit.script.*torch\.export\.export"):
        torch.jit.script(make())


@pytest.mark.parametrize("name", ["cga", "cga-channel-gate", "se", "sge"])
def test_fx_symbolic_trace_records_the_layer_and_runs_right(name):
    make, shapes, others = LAYERS_2D[name]
    module = randomized(make())
    graph = torch.fx.symbolic_trace(module)
    assert_matches_eager(graph, module, shapes, others)


@pytest.mark.parametrize("make", [lambda: SGAU(8, 16, 4), lambda: ConcatSkip(8, 16)], ids=["sgau", "concat"])
def test_fx_symbolic_trace_of_a_skip_refuses_naming_the_leaf_module_route(make):
    with pytest.raises(TypeError, match="register_notrace_module"):
        torch.fx.symbolic_trace(make())


def test_timm_fx_feature_extraction_of_a_model_with_the_layers():
    """timm's FX feature extraction traces through resnet blocks holding CGA, SE or SGE and returns the stages'
    outputs, computed by hand here from the same model."""
    from timm.models import FeatureGraphNet, create_model

    for layer in (CGA, SE, SGE):
        model = randomized(create_model("resnet18", pretrained=False, block_args=dict(attn_layer=layer)), std=0.05)
        features = FeatureGraphNet(model, out_indices=(1, 2))
        x = torch.randn(1, 3, 64, 64)
        with torch.no_grad():
            stem = model.maxpool(model.act1(model.bn1(model.conv1(x))))
            first = model.layer1(stem)
            expected = [first, model.layer2(first)]
            for got, want in zip(features(x), expected):
                torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5 * want.abs().max().item())


# -- models ------------------------------------------------------------------------------------------------------------
MODEL_SHAPES = [(2, 3, 32, 48)]
MODEL_OTHERS = [[(1, 3, 37, 53)], [(3, 3, 16, 17)], [(1, 3, 8, 8)]]  # sizes the U-Net must pad, and the smallest


def small_variant(name, spatial_dims=2):
    return randomized(build_variant(name, channels=(8, 16, 32), groups=4, spatial_dims=spatial_dims), std=0.2)


@pytest.mark.parametrize(
    "variant", ["ganet"] + [pytest.param(v, marks=pytest.mark.slow) for v in VARIANTS if v != "ganet"]
)
def test_every_table_1_variant_exports_right_at_every_size(variant):
    module = small_variant(variant)
    program = torch.export.export(module, inputs(MODEL_SHAPES, 0), dynamic_shapes=dynamic_shapes(MODEL_SHAPES))
    assert_matches_eager(program.module(), module, MODEL_SHAPES, MODEL_OTHERS)


@pytest.mark.slow
def test_ganet_3d_exports_right_at_every_size():
    module = small_variant("ganet", spatial_dims=3)
    shapes = [(2, 3, 8, 12, 8)]
    program = torch.export.export(module, inputs(shapes, 0), dynamic_shapes=dynamic_shapes(shapes))
    assert_matches_eager(program.module(), module, shapes, [[(2, 3, 5, 9, 11)]])


@pytest.mark.parametrize(
    "exporter", [legacy_onnx, pytest.param(dynamo_onnx, marks=pytest.mark.slow)], ids=["legacy", "dynamo"]
)
def test_ganet_onnx_is_right_at_every_size(exporter, tmp_path):
    module = small_variant("ganet")
    run = exporter(module, inputs(MODEL_SHAPES, 0), tmp_path / "ganet.onnx")
    assert_matches_eager(run, module, MODEL_SHAPES, MODEL_OTHERS)


@pytest.mark.slow
@pytest.mark.parametrize("variant", [v for v in VARIANTS if v != "ganet"])
@pytest.mark.parametrize("exporter", [legacy_onnx, dynamo_onnx], ids=["legacy", "dynamo"])
def test_every_table_1_variant_onnx_is_right_at_every_size(variant, exporter, tmp_path):
    module = small_variant(variant)
    run = exporter(module, inputs(MODEL_SHAPES, 0), tmp_path / "model.onnx")
    assert_matches_eager(run, module, MODEL_SHAPES, MODEL_OTHERS)


@pytest.mark.parametrize("state", ["no_grad", pytest.param("inference_mode", marks=pytest.mark.slow), "requires_grad"])
def test_ganet_exports_in_every_grad_state(state):
    """A trained model is exported with parameters that require grad, or inside no_grad/inference_mode."""
    module = small_variant("ganet")
    module.requires_grad_(state == "requires_grad")
    context = {"no_grad": torch.no_grad, "inference_mode": torch.inference_mode}.get(state, torch.enable_grad)
    with context():
        program = torch.export.export(module, inputs(MODEL_SHAPES, 0), dynamic_shapes=dynamic_shapes(MODEL_SHAPES))
    assert_matches_eager(program.module(), module, MODEL_SHAPES, MODEL_OTHERS[:1])


def test_a_traced_ganet_saves_and_is_right_at_sizes_that_need_padding():
    module = small_variant("ganet")
    assert_matches_eager(saved_and_loaded_trace(module, inputs(MODEL_SHAPES, 0)), module, MODEL_SHAPES, MODEL_OTHERS)


def test_the_onnx_graph_depends_on_its_input():
    """The worst export bug is a constant graph: two different inputs must give two different outputs."""
    module = small_variant("ganet")
    buffer = io.BytesIO()
    torch.onnx.export(
        module,
        inputs(MODEL_SHAPES, 0),
        buffer,
        **LEGACY_ONNX,
        input_names=["x"],
        dynamic_axes={"x": {0: "b", 2: "h", 3: "w"}},
    )
    import onnxruntime

    session = onnxruntime.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    first, second = (
        session.run(None, {"x": x.numpy()})[0] for x in (inputs(MODEL_SHAPES, 1)[0], inputs(MODEL_SHAPES, 2)[0])
    )
    assert not np.allclose(first, second)
