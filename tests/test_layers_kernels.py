"""The layers' Triton kernels (their CUDA path) against float64 references written from the equations.

On a machine with CUDA the tests run the kernels on the GPU. Without one, ``test_kernels_in_triton_interpreter``
runs this file again in a subprocess with ``TRITON_INTERPRET=1`` and ``GROUP_ATTENTION_KERNELS=triton``, where the
same kernels run on CPU tensors in Triton's interpreter; the other tests are skipped in the parent process because
the subprocess runs them.
"""

from __future__ import annotations

import contextlib
import copy
import os
import subprocess
import sys
import warnings

import pytest
import references
import torch

from group_attention import CGA, SE, SGAU, SGE, _compat
from group_attention.layers import get_kernels, kernels, set_kernels

HAVE_TRITON = _compat.triton_supported()  # installed, and new enough for the kernels
INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1" and get_kernels() == "triton"
if torch.cuda.is_available() and HAVE_TRITON:
    DEVICE = "cuda"
elif INTERPRETED and HAVE_TRITON:
    DEVICE = "cpu"
else:
    DEVICE = None

needs_kernels = pytest.mark.skipif(DEVICE is None, reason="run by test_kernels_in_triton_interpreter (no CUDA)")


# A quick cross-section of the kernel tests for the default run; the whole file runs in the slow one.
INTERPRETER_QUICK = "test_trial_kernel or (cga_kernels_match and 32-4) or sgau_kernels_match or constant_inputs"


@pytest.mark.parametrize(
    "selection", [pytest.param(INTERPRETER_QUICK, id="quick"), pytest.param(None, id="all", marks=pytest.mark.slow)]
)
def test_kernels_in_triton_interpreter(selection):
    if DEVICE is not None:
        pytest.skip("the kernels are tested directly in this process")
    if not HAVE_TRITON:
        pytest.skip("Triton is not installed or older than 3.0: the layers use PyTorch operations only")
    env = {**os.environ, "TRITON_INTERPRET": "1", "GROUP_ATTENTION_KERNELS": "triton"}
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__]
    if selection is not None:
        command += ["-k", selection]
    result = subprocess.run(
        command,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    assert " passed" in result.stdout and " failed" not in result.stdout


def _randomize(module: torch.nn.Module, std: float = 0.5) -> torch.nn.Module:
    torch.manual_seed(1)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.normal_(0, std)
    return module


@contextlib.contextmanager
def _no_tf32():
    """Full float32 precision in cuDNN's convolutions (SGAU's transposed convolution), which use TF32 by default."""
    previous = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32 = previous


def _compare(module, reference, inputs, *, dtype=torch.float32, tolerance=2e-5, kernel_function=None):
    """Output and gradients (inputs and parameters) of ``module`` on ``DEVICE`` with ``dtype`` inputs (under
    autocast when not float32, as inside a network) against ``reference`` in float64 on CPU, relative to each
    tensor's largest magnitude; checks the kernels ran."""
    params = list(module.parameters())
    expected_inputs = [x.double().requires_grad_() for x in inputs]
    expected_params = [p.detach().double().requires_grad_() for p in params]
    expected = reference(*expected_inputs, *expected_params)
    grad = torch.randn(expected.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    expected_grads = torch.autograd.grad(expected, expected_inputs + expected_params, grad)
    module = module.to(DEVICE)
    device_inputs = [x.to(DEVICE, dtype).requires_grad_() for x in inputs]
    with torch.autocast(DEVICE, dtype=dtype, enabled=dtype != torch.float32), _no_tf32():
        out = module(*device_inputs)
    if kernel_function is not None:
        assert type(out.grad_fn).__name__ == kernel_function + "Backward"
    assert out.dtype == dtype and torch.isfinite(out).all()
    with _no_tf32():
        grads = torch.autograd.grad(out, device_inputs + list(module.parameters()), grad.to(DEVICE, dtype))
    for name, actual, wanted in zip(
        ["output", *(f"grad {i}" for i in range(len(grads)))], (out, *grads), (expected, *expected_grads)
    ):
        assert torch.isfinite(actual).all(), name
        error = ((actual.detach().double().cpu() - wanted).abs().max() / wanted.abs().max().clamp_min(1e-12)).item()
        assert error < tolerance, f"{name}: relative error {error:.2e}"


CGA_CASES = [
    # (channels, groups, shape, gate): one channel per group (maps are x), several, more than a tile's 16, several
    # tiles of positions, 1D and 3D
    (32, 32, (2, 32, 9, 13), "group"),
    (64, 16, (2, 64, 7, 5), "group"),
    (64, 2, (1, 64, 6, 7), "group"),
    (32, 32, (1, 32, 50, 61), "group"),
    (64, 32, (1, 64, 33, 40), "channel"),
    (16, 4, (2, 16, 100), "group"),
    (96, 32, (2, 96, 5, 6, 7), "group"),
    (512, 256, (2, 512, 3, 4), "channel"),  # the gate's linear map in several chunks of outputs
]


@needs_kernels
@pytest.mark.parametrize("channels,groups,shape,gate", CGA_CASES)
def test_cga_kernels_match_the_equations(channels, groups, shape, gate):
    layer = _randomize(CGA(channels, groups, gate=gate))
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0)) * 3 + 1

    def reference(x, weight, bias):
        return references.cga(x, weight, bias, groups, gate=gate)

    _compare(layer, reference, [x], kernel_function="_ChannelGroupAttentionKernels")


@needs_kernels
@pytest.mark.parametrize("gate", ["group", "channel"])
def test_cga_kernels_gate_output_and_its_gradient(gate):
    """``forward_with_gate`` returns the weights too (the U-Net encoder pools x and scales by them): values and
    gradients through both outputs against the PyTorch operations in float64."""
    layer = _randomize(CGA(64, 16, gate=gate))
    x = torch.randn(2, 64, 7, 9, generator=torch.Generator().manual_seed(0)) * 2
    grad_y = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    results = {}
    for name, device, dtype in (("torch", "cpu", torch.float64), (get_kernels(), DEVICE, torch.float32)):
        module = copy.deepcopy(layer).to(device, dtype)
        inputs = x.to(device, dtype).requires_grad_()
        with kernels(name):
            y, weights = module.forward_with_gate(inputs)
        if name != "torch":
            assert type(y.grad_fn).__name__ == "_ChannelGroupAttentionKernelsBackward"
        grad_w = torch.linspace(-1, 1, weights.numel(), dtype=dtype, device=device).view_as(weights)
        loss = (y * grad_y.to(device, dtype)).sum() + (weights * grad_w).sum()
        results[name] = [
            t.detach().double().cpu() for t in (y, weights, *torch.autograd.grad(loss, [inputs, *module.parameters()]))
        ]
    for actual, wanted in zip(results[get_kernels()], results["torch"]):
        assert ((actual - wanted).abs().max() / wanted.abs().max()).item() < 2e-5


@needs_kernels
@pytest.mark.parametrize("channels,shape", [(32, (2, 32, 9, 13)), (64, (1, 64, 70, 50)), (24, (2, 24, 5, 6, 7))])
def test_se_kernels_match_the_equations(channels, shape):
    layer = _randomize(SE(channels, 8))
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0)) * 3 + 1
    _compare(layer, references.se, [x])


@needs_kernels
@pytest.mark.parametrize(
    "channels,groups,shape",
    [(32, 32, (2, 32, 9, 13)), (64, 16, (1, 64, 70, 50)), (64, 2, (2, 64, 5, 7)), (96, 32, (2, 96, 5, 6, 7))],
)
def test_sge_kernels_match_the_equations(channels, groups, shape):
    layer = _randomize(SGE(channels, groups), std=0.7)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0)) * 3 + 1

    def reference(x, weight, bias):
        return references.sge(x, weight, bias, groups)

    _compare(layer, reference, [x], kernel_function="_SpatialGroupEnhanceKernels")


SGAU_CASES = [
    # (low channels, high channels, groups, low shape, high shape): exact doubling (the gathered adjoint), odd sizes
    # (interpolation scale 5/9, ATen's adjoint), more channels per group than a tile holds, several tiles
    (32, 64, 32, (2, 32, 16, 24), (2, 64, 8, 12)),
    (64, 128, 32, (1, 64, 9, 13), (1, 128, 5, 7)),
    (64, 128, 2, (1, 64, 6, 8), (1, 128, 3, 4)),
    (16, 32, 4, (2, 16, 80, 60), (2, 32, 40, 30)),
    (32, 64, 32, (2, 32, 2, 6), (2, 64, 1, 3)),  # a one-row map: both interpolation ends clamp at once
]


@needs_kernels
@pytest.mark.parametrize("low_channels,high_channels,groups,low_shape,high_shape", SGAU_CASES)
def test_sgau_kernels_match_the_equations(low_channels, high_channels, groups, low_shape, high_shape):
    layer = _randomize(SGAU(low_channels, high_channels, groups), std=0.2)
    low = torch.randn(low_shape, generator=torch.Generator().manual_seed(0)) * 2 + 1
    high = torch.randn(high_shape, generator=torch.Generator().manual_seed(1)) + 0.5

    def reference(low, high, weight, bias):
        return references.sgau(low, high, weight, bias, groups)

    _compare(layer, reference, [low, high], kernel_function="_SpatialGroupAttentionSkipKernels")


@needs_kernels
def test_kernels_under_bfloat16():
    x = torch.randn(2, 64, 12, 16, generator=torch.Generator().manual_seed(0))
    _compare(
        _randomize(CGA(64, 32)),
        lambda x, w, b: references.cga(x, w, b, 32),
        [x],
        dtype=torch.bfloat16,
        tolerance=3e-2,
        kernel_function="_ChannelGroupAttentionKernels",
    )
    _compare(_randomize(SE(64, 8)), references.se, [x], dtype=torch.bfloat16, tolerance=3e-2)
    _compare(
        _randomize(SGE(64, 32), std=0.7),
        lambda x, w, b: references.sge(x, w, b, 32),
        [x],
        dtype=torch.bfloat16,
        tolerance=5e-2,
        kernel_function="_SpatialGroupEnhanceKernels",
    )
    high = torch.randn(2, 128, 6, 8, generator=torch.Generator().manual_seed(1))
    _compare(
        _randomize(SGAU(64, 128, 32), std=0.2),
        lambda low, high, w, b: references.sgau(low, high, w, b, 32),
        [x, high],
        dtype=torch.bfloat16,
        tolerance=3e-2,
        kernel_function="_SpatialGroupAttentionSkipKernels",
    )


@needs_kernels
@pytest.mark.parametrize("value", [0.0, 3.0])
def test_kernels_on_constant_inputs(value):
    """Constant maps standardize to exactly 0, so the gates are constant and the maps' gradient vanishes: with an
    output gradient of ones, CGA's ``dx`` is its channel weight and SGE's ``sigmoid(beta)`` (hand-derived); outputs
    match the PyTorch operations and nothing is NaN."""
    torch.manual_seed(0)
    cases = [
        ("cga", _randomize(CGA(32, 32)), [torch.full((1, 32, 5, 6), value)]),
        ("cga", _randomize(CGA(64, 32)), [torch.full((2, 64, 5, 6), value)]),
        ("sge", _randomize(SGE(64, 32)), [torch.full((2, 64, 5, 6), value)]),
        (
            "sgau",
            _randomize(SGAU(32, 64, 32), std=0.2),
            [torch.full((1, 32, 8, 10), value), torch.full((1, 64, 4, 5), value)],
        ),
    ]
    for kind, layer, inputs in cases:
        layer = layer.to(DEVICE)
        results = {}
        for name in ("torch", get_kernels()):
            with kernels(name):
                device_inputs = [x.to(DEVICE).requires_grad_() for x in inputs]
                out = layer(*device_inputs)
                grads = torch.autograd.grad(out, device_inputs + list(layer.parameters()), torch.ones_like(out))
            results[name] = (out, *grads)
        torch.testing.assert_close(results[get_kernels()][0], results["torch"][0], rtol=1e-6, atol=1e-6)
        for name, (_out, grad_x, *_) in results.items():  # both paths
            assert all(torch.isfinite(t).all() for t in results[name]), name
            if kind == "cga":
                weights = layer.channel_weights(device_inputs[0].detach())
                torch.testing.assert_close(grad_x, weights.view(*weights.shape, 1, 1).expand_as(grad_x))
            elif kind == "sge":
                gate = torch.sigmoid(layer.bias.detach()).repeat_interleave(2).view(1, 64, 1, 1)
                torch.testing.assert_close(grad_x, gate.expand_as(grad_x))
            else:  # SGAU: d low = 1 + A with A = sigmoid(0) = 1/2
                torch.testing.assert_close(grad_x, torch.full_like(grad_x, 1.5))


@needs_kernels
def test_layouts_and_dtypes_the_kernels_do_not_take_use_pytorch_operations():
    layer = CGA(64, 32).to(DEVICE)
    x = torch.randn(2, 64, 6, 8, device=DEVICE)
    assert type(layer(x).grad_fn).__name__ == "_ChannelGroupAttentionKernelsBackward"
    channels_last = x.contiguous(memory_format=torch.channels_last)
    assert type(layer(channels_last).grad_fn).__name__ == "_ChannelGroupAttentionBackward"
    assert type(layer.double()(x.double()).grad_fn).__name__ == "_ChannelGroupAttentionBackward"
    with kernels("torch"):
        assert type(layer.float()(x).grad_fn).__name__ == "_ChannelGroupAttentionBackward"
    assert get_kernels() != "torch"


def test_kernel_choice_is_checked_and_restored():
    before = get_kernels()
    with pytest.raises(ValueError, match="kernels must be one of"):
        set_kernels("cuda")
    with kernels("torch"):
        assert get_kernels() == "torch"
        layer = CGA(64, 32)
        assert type(layer(torch.randn(1, 64, 4, 4)).grad_fn).__name__ == "_ChannelGroupAttentionBackward"
    assert get_kernels() == before


def test_without_triton_the_layers_use_pytorch_operations(monkeypatch):
    """Where Triton cannot be imported, even ``kernels("triton")`` falls back to PyTorch operations, silently."""
    from group_attention.layers import dispatch as _kernels

    monkeypatch.setattr(_kernels, "_triton_module", None)
    monkeypatch.setattr(_kernels, "_interpreting", lambda: True)
    with kernels("triton"):
        x = torch.randn(1, 64, 4, 4)
        assert not _kernels.use_triton(x)
        assert type(CGA(64, 32)(x).grad_fn).__name__ == "_ChannelGroupAttentionBackward"


@needs_kernels
def test_layouts_for_very_large_inputs(monkeypatch):
    """Beyond CUDA's 65535 tiles per grid the tiles grow, and past 64 tiles the standardization's sums are merged
    before the kernel that reads them all: both, forced at small sizes, against the float64 references."""
    from group_attention.layers.fused.triton import common, sgau

    monkeypatch.setattr(common, "MAX_GRID_TILES", 3)
    monkeypatch.setattr(sgau, "MAX_INLINE_SUM_TILES", 1)
    x = torch.randn(1, 64, 50, 61, generator=torch.Generator().manual_seed(0)) * 3 + 1
    assert common._launch(x, 32).tiles <= 3
    _compare(
        _randomize(CGA(64, 4)),
        lambda x, w, b: references.cga(x, w, b, 4),
        [x],
        kernel_function="_ChannelGroupAttentionKernels",
    )
    _compare(_randomize(SE(64, 8)), references.se, [x])
    _compare(
        _randomize(SGE(64, 4), std=0.7),
        lambda x, w, b: references.sge(x, w, b, 4),
        [x],
        kernel_function="_SpatialGroupEnhanceKernels",
    )
    low = torch.randn(1, 16, 100, 122, generator=torch.Generator().manual_seed(1))
    high = torch.randn(1, 32, 50, 61, generator=torch.Generator().manual_seed(2)) + 0.5
    _compare(
        _randomize(SGAU(16, 32, 4), std=0.2),
        lambda low, high, w, b: references.sgau(low, high, w, b, 4),
        [low, high],
        kernel_function="_SpatialGroupAttentionSkipKernels",
    )


@needs_kernels
def test_trial_kernel_computes_its_hand_derived_value():
    from group_attention.layers.fused.triton import common as _triton_kernels

    # sigmoid(-1) + sigmoid(1) = 1, and sigmoid(0) = 1/2
    assert _triton_kernels.trial(torch.device(DEVICE)).item() == pytest.approx(1.5, abs=1e-6)


def test_launch_layout_stays_within_cudas_grid():
    """A grid's second dimension (the tiles) is at most 65535 on CUDA: a 4096 x 4097 map with 16 channels per group
    needs 65552 tiles of the usual 256 positions, so its tiles double instead."""
    if not HAVE_TRITON:
        pytest.skip("Triton is not installed or older than 3.0")
    from group_attention.layers.fused.triton import common as _triton_kernels

    usual = _triton_kernels._launch(torch.empty(8, 64, 192, 256, device="meta"), 32)
    assert (usual.block_k, usual.block_n, usual.tiles) == (2, 2048, 24)
    huge = _triton_kernels._launch(torch.empty(1, 512, 4096, 4097, device="meta"), 32)
    assert huge.block_k == 16 and huge.block_n == 512
    assert huge.tiles <= 65535 and huge.tiles * huge.block_n >= 4096 * 4097


class _FakeCudaTensor:
    """What ``use_triton`` looks at in a tensor, for a CUDA device this machine may not have."""

    def __init__(self, dtype=torch.float32, index=0):
        self.dtype, self.device, self.is_cuda = dtype, torch.device("cuda", index), True

    def is_contiguous(self):
        return True

    def numel(self):
        return 8


class _Trial:
    def __init__(self, error=None):
        self.error, self.calls = error, 0

    def trial(self, device):
        self.calls += 1
        if self.error is not None:
            raise self.error


@pytest.fixture
def fake_gpu(monkeypatch):
    """A CUDA device of a chosen compute capability, with a stand-in for the trial launch."""
    from group_attention.layers import dispatch as _kernels

    state = {"capability": (9, 0), "module": _Trial()}
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: state["capability"])
    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.setattr(_kernels, "triton_kernels", lambda: state["module"])
    monkeypatch.setattr(_kernels, "_capturing", lambda: False)
    monkeypatch.setattr(_kernels, "_trial_passed", {})
    monkeypatch.setattr(_kernels, "_capabilities", {})
    with kernels("auto"):
        yield state


@pytest.mark.parametrize(
    "capability,dtype,expected",
    [
        ((6, 1), torch.float32, False),  # Pascal: below Triton's floor
        ((7, 0), torch.float32, True),
        ((7, 5), torch.float16, True),
        ((7, 5), torch.bfloat16, False),  # Turing: no bfloat16 in PTX
        ((8, 0), torch.bfloat16, True),
    ],
)
def test_auto_uses_the_kernels_only_on_gpus_triton_serves(fake_gpu, capability, dtype, expected):
    from group_attention.layers import dispatch as _kernels

    fake_gpu["capability"] = capability
    assert _kernels.use_triton(_FakeCudaTensor(dtype), _FakeCudaTensor(torch.float32)) is expected
    with kernels("triton"):  # an explicit choice is not second-guessed
        assert _kernels.use_triton(_FakeCudaTensor(dtype))


def test_auto_leaves_rocm_to_an_explicit_choice(fake_gpu, monkeypatch):
    from group_attention.layers import dispatch as _kernels

    monkeypatch.setattr(torch.version, "hip", "6.2")
    assert not _kernels.use_triton(_FakeCudaTensor())
    with kernels("triton"):
        assert _kernels.use_triton(_FakeCudaTensor())


def test_auto_tries_each_gpu_once(fake_gpu):
    from group_attention.layers import dispatch as _kernels

    for _ in range(3):
        assert _kernels.use_triton(_FakeCudaTensor(index=0))
    assert _kernels.use_triton(_FakeCudaTensor(index=1))
    assert fake_gpu["module"].calls == 2


def test_auto_falls_back_with_one_warning_when_triton_cannot_run(fake_gpu):
    """Triton builds a launcher with a C compiler at run time; where that (or anything else in the toolchain) fails,
    the layers warn once and use PyTorch operations on that GPU; an explicit ``"triton"`` lets the error surface."""
    from group_attention.layers import dispatch as _kernels

    fake_gpu["module"] = _Trial(RuntimeError("Failed to find C compiler. Please specify via CC environment variable."))
    message = r"cuda:0 \(RuntimeError: Failed to find C compiler.*set_kernels\('torch'\)"
    with pytest.warns(RuntimeWarning, match=message):
        assert not _kernels.use_triton(_FakeCudaTensor())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not _kernels.use_triton(_FakeCudaTensor())
    assert fake_gpu["module"].calls == 1
    with kernels("triton"):
        assert _kernels.use_triton(_FakeCudaTensor())


def test_a_full_gpu_is_not_mistaken_for_a_triton_failure(fake_gpu):
    from group_attention.layers import dispatch as _kernels

    fake_gpu["module"] = _Trial(torch.cuda.OutOfMemoryError("CUDA out of memory"))
    with pytest.raises(torch.cuda.OutOfMemoryError):
        _kernels.use_triton(_FakeCudaTensor())
    assert _kernels._trial_passed == {}  # tried again next time


def test_no_trial_launch_inside_a_cuda_graph_capture(fake_gpu, monkeypatch):
    from group_attention.layers import dispatch as _kernels

    monkeypatch.setattr(_kernels, "_capturing", lambda: True)
    assert _kernels.use_triton(_FakeCudaTensor())
    assert fake_gpu["module"].calls == 0 and _kernels._trial_passed == {}


def test_kernels_launch_on_their_tensors_device(monkeypatch):
    """Triton launches on the current CUDA device: a launch wrapper makes its input's device current (a model on
    cuda:1 while cuda:0 is current) and leaves the current device alone otherwise."""
    if not HAVE_TRITON:
        pytest.skip("Triton is not installed or older than 3.0")
    from group_attention.layers.fused.triton import common as _triton_kernels

    entered = []

    @contextlib.contextmanager
    def device_context(device):
        entered.append(device)
        yield

    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "device", device_context)
    launch = _triton_kernels._on_input_device(lambda x, k: (entered[-1] if entered else None, k))
    assert launch(_FakeCudaTensor(index=1), k=3) == (torch.device("cuda", 1), 3)
    entered.clear()
    assert launch(_FakeCudaTensor(index=0), k=4) == (None, 4)
    assert launch(torch.zeros(1), k=5) == (None, 5) and entered == []


@needs_kernels
@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning", "ignore:`torch.jit.trace")
def test_traced_layers_record_pytorch_operations():
    """``torch.jit.trace`` (and ONNX export through it) cannot see a Triton launch: traced, the layers use PyTorch
    operations, so the trace computes the layer on new inputs too."""
    torch.manual_seed(0)
    x = torch.randn(2, 64, 6, 8)
    cases = [
        (_randomize(CGA(64, 32)), [x]),
        (_randomize(SE(64, 8)), [x]),
        (_randomize(SGE(64, 32), std=0.7), [x]),
        (_randomize(SGAU(32, 64, 32), std=0.2), [torch.randn(2, 32, 8, 10), torch.randn(2, 64, 4, 5)]),
    ]
    for layer, inputs in cases:
        layer = layer.to(DEVICE)
        inputs = [x.to(DEVICE) for x in inputs]
        with torch.no_grad():
            traced = torch.jit.trace(layer, tuple(inputs), check_trace=False)
            fresh = [torch.randn_like(x) * 2 + 1 for x in inputs]
            with kernels("torch"):
                expected = layer(*fresh)
            torch.testing.assert_close(traced(*fresh), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(DEVICE != "cpu", reason="needs 6 GB of untouched virtual memory: interpreter only")
def test_sgau_copies_up_right_past_two_billion_elements(monkeypatch):
    """SGAU's output copies ``up`` ``C_low H W`` elements past the attended half: with 32 channels at 8192 x 8192
    that is 2^31, beyond int32. Only program (0, 0) runs; the inputs are stride-0 views of small buffers."""
    from group_attention.layers.fused.triton import common, sgau

    channels, size = 32, 8192
    positions = size * size
    shape = (1, channels, size, size)
    low = torch.ones(4096, dtype=torch.float16).as_strided(shape, (0, 0, 0, 0))
    up = torch.full((4096,), 7.0, dtype=torch.float16).as_strided(shape, (0, 0, 0, 0))
    maps = torch.zeros(16384).as_strided((1, channels, size // 2, size // 2), (0, 0, 0, 1))  # 2 rows read
    stats = torch.zeros(channels, 4)  # scale 0: A = sigmoid(0) = 1/2
    arena = torch.empty(3 * channels * positions, dtype=torch.float16)  # channels * positions of slack first
    arena[:8].zero_()
    out = arena[channels * positions :].view(1, 2 * channels, size, size)
    monkeypatch.setattr(common._Launch, "grid", property(lambda self: (1, 1)))
    sgau.attend(low, up, maps, stats, out)
    assert out[0, 0, 0, :4].tolist() == [1.5] * 4
    assert out[0, channels, 0, :4].tolist() == [7.0] * 4
    assert arena[:4].tolist() == [0.0] * 4  # nothing written before the output
