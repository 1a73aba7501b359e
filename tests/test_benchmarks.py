"""Smoke tests of the benchmark scripts: ``--quick`` runs write Markdown and JSON with every contender timed.

Only the plumbing is checked (contenders present, times positive and finite, files written): timings themselves
are machine- and load-dependent and never asserted.
"""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"benchmarks_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def positive_finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


# One thread: on a shared two-core machine a two-thread parallel region stalls whenever the other core is busy.
QUICK = ["--quick", "--threads", "1"]


@pytest.fixture
def keep_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_bench_layers_quick_writes_every_contender(tmp_path, keep_threads):
    bench = load_script("bench_layers")
    payload = bench.main([*QUICK, "--out", str(tmp_path), "--stem", "layers"])
    saved = json.loads((tmp_path / "layers.json").read_text())
    assert saved["benchmark"] == "layers" and saved["machine"]["torch"] == torch.__version__
    assert (tmp_path / "layers.md").read_text().startswith("# Layer benchmark")
    (run,) = payload["runs"]
    assert run["settings"]["dtype"] == "fp32" and run["settings"]["device"] == "cpu"
    kinds = {case["kind"]: case for case in run["cases"]}
    assert set(kinds) == {"encoder", "skip"}
    expected = {"encoder": set(bench.ENCODER_CONTENDERS) - (set() if has("timm") else {"timm SE"}),
                "skip": set(bench.SKIP_CONTENDERS)}
    for kind, case in kinds.items():
        for mode in bench.MODES:
            results = case["results"][mode]
            assert set(results) == expected[kind]
            for name, summary in results.items():
                assert positive_finite(summary["median_ms"]) and positive_finite(summary["min_ms"]), (kind, name)
                assert all(positive_finite(t) for t in summary["samples_ms"])
    encoder = kinds["encoder"]["results"]
    assert positive_finite(encoder["fwd+bwd"]["CGA"]["floor_ms"]) and positive_finite(encoder["fwd"]["CGA"]["vs_floor"])
    assert positive_finite(kinds["skip"]["results"]["fwd"]["SGAU"]["floor_ms"])


def test_bench_models_quick_writes_every_variant(tmp_path, keep_threads):
    bench = load_script("bench_models")
    payload = bench.main([*QUICK, "--out", str(tmp_path), "--stem", "models"])
    saved = json.loads((tmp_path / "models.json").read_text())
    assert saved["benchmark"] == "models" and (tmp_path / "models.md").exists()
    from group_attention import VARIANTS

    (run,) = payload["runs"]
    results = run["results"]
    assert set(VARIANTS) <= set(results)
    optional = {"MONAI AttentionUnet": "monai", "MONAI BasicUNet": "monai",
                "smp Unet (resnet18)": "segmentation_models_pytorch"}
    for name, package in optional.items():
        assert (name in results) == has(package) or any(name in note for note in run["notes"])
    for name, result in results.items():
        for mode in bench.MODES:
            assert positive_finite(result[mode]["median_ms"]) and positive_finite(result[mode]["images_per_s"]), name
        assert positive_finite(result["saved_activation_bytes"]) and positive_finite(result["peak_memory_bytes"])
    assert results["baseline"]["train"]["vs_baseline"] == 1.0


def has(package: str) -> bool:
    return importlib.util.find_spec(package) is not None
