"""group_attention._compat: each feature check takes its fallback when the newer API is missing.

The newest torch runs these: ``_compat`` is shown a torch from which the newer attributes are removed (only
``_compat`` sees it; torch itself keeps them), as torch 2.2 would look. ``bash .ci/floor`` runs the whole suite on
the real torch 2.2.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from group_attention import CGA, _compat
from group_attention.layers import dispatch, kernels


class Without:
    """A view of ``module`` without the dotted attribute paths in ``removed`` and with ``replaced`` substituted."""

    def __init__(self, module, removed=(), replaced=None):
        self._module, self._removed, self._replaced = module, set(removed), dict(replaced or {})

    def __getattr__(self, name):
        if name in self._removed:
            raise AttributeError(f"module {self._module.__name__!r} has no attribute {name!r}")
        if name in self._replaced:
            return self._replaced[name]
        prefix = name + "."
        removed = {path[len(prefix) :] for path in self._removed if path.startswith(prefix)}
        replaced = {path[len(prefix) :]: value for path, value in self._replaced.items() if path.startswith(prefix)}
        value = getattr(self._module, name)
        return Without(value, removed, replaced) if removed or replaced else value


# What torch 2.2 lacks of what _compat prefers (each added in the release _compat's comments name), and the constant
# by which _compat knows it.
TORCH_2_2_MISSING = {
    "compiler.is_compiling": "HAS_COMPILER_IS_COMPILING",
    "compiler.is_exporting": "HAS_COMPILER_IS_EXPORTING",
    "fx._symbolic_trace.is_fx_symbolic_tracing": "HAS_IS_FX_SYMBOLIC_TRACING",
    "amp.is_autocast_available": "HAS_AUTOCAST_AVAILABLE",
    "amp.GradScaler": "HAS_AMP_GRAD_SCALER",
}


def show_compat(monkeypatch, removed=tuple(TORCH_2_2_MISSING), **replaced):
    """Make ``_compat`` see torch without ``removed``; ``replaced`` maps dotted paths (``__`` for dots) to values."""
    replaced = {path.replace("__", "."): value for path, value in replaced.items()}
    monkeypatch.setattr(_compat, "torch", Without(torch, removed, replaced))
    for path, flag in TORCH_2_2_MISSING.items():
        monkeypatch.setattr(_compat, flag, path not in removed)


@pytest.mark.skipif(_compat.torch_version() < (2, 9), reason="torch.fx's is_fx_symbolic_tracing needs torch>=2.9")
def test_the_newest_torch_has_every_api_compat_prefers():
    """Else the tests below would not test the fallbacks against the real APIs' answers."""
    assert all(getattr(_compat, flag) for flag in TORCH_2_2_MISSING.values())


@pytest.mark.parametrize("answer", [False, True])
def test_is_compiling_asks_dynamo_where_torch_compiler_lacks_it(monkeypatch, answer):
    calls = []
    dynamo = SimpleNamespace(is_compiling=lambda: calls.append(1) or answer)
    show_compat(monkeypatch, _dynamo=dynamo)
    assert _compat.is_compiling() is answer
    assert calls == [1]


def test_is_compiling_prefers_torch_compiler(monkeypatch):
    dynamo = SimpleNamespace(is_compiling=lambda: pytest.fail("the fallback was asked though torch.compiler answers"))
    show_compat(monkeypatch, removed=(), _dynamo=dynamo, compiler__is_compiling=lambda: True)
    assert _compat.is_compiling() is True


def test_is_exporting_is_false_where_torch_compiler_lacks_it(monkeypatch):
    show_compat(monkeypatch)
    assert _compat.is_exporting() is False
    show_compat(monkeypatch, removed=(), compiler__is_exporting=lambda: True)
    assert _compat.is_exporting() is True


def test_fx_tracing_falls_back_to_is_fx_tracing(monkeypatch):
    show_compat(monkeypatch, fx___symbolic_trace__is_fx_tracing=lambda: True)
    assert _compat.is_fx_symbolic_tracing() is True
    show_compat(monkeypatch, fx___symbolic_trace__is_fx_tracing=lambda: False)
    assert _compat.is_fx_symbolic_tracing() is False


def test_fx_symbolic_trace_of_a_layer_works_with_the_fallback(monkeypatch):
    show_compat(monkeypatch)
    layer = CGA(16, 4).eval()
    x = torch.randn(2, 16, 6, 5)
    graph = torch.fx.symbolic_trace(layer)  # would fail inside the fused Function if the layer missed the tracing
    torch.testing.assert_close(graph(x), layer(x))


def layer_output_and_grads(seed=0):
    torch.manual_seed(seed)
    layer = CGA(16, 4)
    with torch.no_grad():
        for parameter in layer.parameters():
            parameter.normal_()
    x = torch.randn(2, 16, 6, 5, requires_grad=True)
    y = layer(x)
    y.square().sum().backward()
    return y.detach(), x.grad, [p.grad for p in layer.parameters()]


@pytest.mark.parametrize("compiling", [False, True])
def test_a_layer_runs_forward_and_backward_on_torch_2_2s_api(monkeypatch, compiling):
    """The bug of torch 2.2: the first forward pass failed with an AttributeError on torch.compiler.is_compiling.
    With Dynamo's answer False the layer runs its fused Function, with True its functional form; both give the
    answer of the newest torch."""
    with kernels("torch"):
        expected = layer_output_and_grads()
        show_compat(monkeypatch, _dynamo=SimpleNamespace(is_compiling=lambda: compiling))
        assert dispatch.use_fused(torch.randn(1, 16, 2, 2)) is not compiling
        actual = layer_output_and_grads()
    torch.testing.assert_close(actual, expected)


@pytest.mark.filterwarnings("ignore:torch.is_autocast_cpu_enabled:DeprecationWarning")
def test_autocast_enabled_before_the_device_type_argument(monkeypatch):
    def is_autocast_enabled():  # torch < 2.4 takes no device type: the CUDA state
        return False

    show_compat(monkeypatch, is_autocast_enabled=is_autocast_enabled)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert _compat.is_autocast_enabled("cpu") is True
        assert _compat.is_autocast_enabled("cuda") is False
    assert _compat.is_autocast_enabled("cpu") is False


def test_autocast_availability_without_torch_amp_is_autocast_available(monkeypatch):
    show_compat(monkeypatch)
    assert _compat.is_autocast_available("cpu") and _compat.is_autocast_available("cuda")
    assert not _compat.is_autocast_available("meta")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        with _compat.autocast_disabled("cpu"):
            assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
    with _compat.autocast_disabled("meta"):  # no autocast there: nothing to turn off
        pass


@pytest.mark.filterwarnings("ignore:`torch.cuda.amp.GradScaler:FutureWarning")
def test_grad_scaler_without_torch_amp_grad_scaler(monkeypatch):
    show_compat(monkeypatch)
    assert not _compat.grad_scaler("cpu", enabled=False).is_enabled()
    with pytest.raises(RuntimeError, match=r"gradient scaling on 'cpu' needs torch>=2\.3"):
        _compat.grad_scaler("cpu", enabled=True)


@pytest.mark.skipif(not _compat.HAS_AMP_GRAD_SCALER, reason="torch.amp.GradScaler needs torch>=2.3")
def test_grad_scaler_with_torch_amp_grad_scaler():
    scaler = _compat.grad_scaler("cpu", enabled=True)
    assert isinstance(scaler, torch.amp.GradScaler) and scaler.is_enabled()


@pytest.mark.parametrize(
    "version, expected",
    [("2.2.2+cu121", (2, 2)), ("2.5.0a0+git1234", (2, 5)), ("2.10.0.dev20250101", (2, 10)), ("3.0.0", (3, 0))],
)
def test_torch_version(monkeypatch, version, expected):
    monkeypatch.setattr(torch, "__version__", version)
    assert _compat.torch_version() == expected


def test_require_torch_names_the_feature_and_both_versions(monkeypatch):
    monkeypatch.setattr(torch, "__version__", "2.2.2+cu121")
    _compat.require_torch((2, 2), "Anything")
    with pytest.raises(RuntimeError, match=r"Dynamic-shape export needs torch>=2\.6; this is torch 2\.2\.2\+cu121"):
        _compat.require_torch((2, 6), "Dynamic-shape export")


@pytest.mark.parametrize(
    "installed, supported", [("2.2.0", False), ("2.3.1", False), ("3.0.0", True), ("3.8.0+git1", True), (None, False)]
)
def test_the_kernels_need_triton_3(monkeypatch, installed, supported):
    def version(name):
        assert name == "triton"
        if installed is None:
            raise _compat.importlib.metadata.PackageNotFoundError(name)
        return installed

    monkeypatch.setattr(_compat.importlib.metadata, "version", version)
    assert _compat.triton_supported() is supported
    monkeypatch.setattr(dispatch, "_triton_module", False)  # not tried yet
    if not supported:
        assert dispatch.triton_kernels() is None
        with kernels("triton"):
            assert not dispatch.use_triton(torch.randn(2, 4, 3, 3))
