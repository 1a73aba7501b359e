"""Smoke test of benchmarks/bench_integrations.py: a --quick run times every conversion and writes its report.

Only the plumbing is checked (contenders present, times and ratios positive and finite, files written, parameter
counts as the conversions promise); timings are machine- and load-dependent and never asserted.
"""

from __future__ import annotations

import collections
import json
import math

import pytest
import torch

from tests.test_benchmarks import load_script


def load_bench():
    return load_script("bench_integrations")


@pytest.mark.slow  # three training steps of seventeen models: about a minute on two busy cores
def test_bench_integrations_quick_times_every_conversion(tmp_path):
    for module in ("torchvision", "segmentation_models_pytorch", "monai"):
        pytest.importorskip(module)
    bench = load_bench()
    threads = torch.get_num_threads()
    try:
        payload = bench.main(["--quick", "--threads", "1", "--out", str(tmp_path), "--stem", "integrations"])
    finally:
        torch.set_num_threads(threads)
    saved = json.loads((tmp_path / "integrations.json").read_text())
    assert saved["benchmark"] == "integrations"
    assert (tmp_path / "integrations.md").read_text().startswith("# Integrations benchmark")
    results = {r["model"]: r for r in payload["results"]}
    assert len(results) == 16  # families of 3, 5, 5 and 4 models; monai-groups8 shares the unmodified model's name
    assert all(math.isfinite(r["ratio"]) and r["ratio"] > 0 and r["median_ms"] > 0 for r in results.values())
    # SGAU skips add no parameters; CGA adds m * m + m = 1056 per layer (16 bottlenecks in a ResNet-50).
    assert results["smp unet-r34 + sgau skips"]["parameters"] == results["smp unet-r34"]["parameters"]
    assert results["monai basicunet + sgau skips"]["parameters"] == results["monai basicunet"]["parameters"]
    assert results["resnet50 + cga"]["parameters"] - results["resnet50"]["parameters"] == 16 * 1056


@pytest.mark.parametrize(
    "reason", ["Dynamo recompile limit exceeded\n  Explanation: ...", "cache_size_limit reached"], ids=["new", "2.2"]
)
def test_compiled_rows_are_refused_when_dynamo_gave_up_compiling_a_frame(monkeypatch, reason):
    """A frame over dynamo's recompile limit runs eagerly: the compiled rows would time partly eager models. Only
    hits since the family's compilation count (earlier ones in the process are someone else's)."""
    from torch._dynamo.utils import counters

    bench = load_bench()
    monkeypatch.setitem(counters, "unimplemented", collections.Counter({"some other graph break": 2}))
    before = bench.recompile_limit_hits()
    bench.check_fully_compiled(before)
    counters["unimplemented"][reason] += 1
    with pytest.raises(RuntimeError, match="recompile limit"):
        bench.check_fully_compiled(before)
    bench.check_fully_compiled(bench.recompile_limit_hits())


@pytest.mark.slow  # compiles five MONAI models: minutes when inductor's cache is cold
def test_bench_integrations_compile_times_every_monai_model_compiled(tmp_path):
    pytest.importorskip("monai")
    bench = load_bench()
    threads = torch.get_num_threads()
    try:
        payload = bench.main(
            ["--quick", "--compile", "--families", "monai", "--threads", "1", "--out", str(tmp_path), "--stem", "c"]
        )
    finally:
        torch.set_num_threads(threads)
    results = {r["model"]: r for r in payload["results"]}
    assert len(results) == 10  # five models, eager and compiled
    compiled = {name: r for name, r in results.items() if name.endswith(bench.COMPILED)}
    assert len(compiled) == 5
    assert all(r["reference"] == "monai basicunet" + bench.COMPILED for r in compiled.values())
    assert all(r["compile_s"] > 0 and math.isfinite(r["ratio_to_eager_reference"]) for r in compiled.values())
    cga = "monai basicunet + cga"
    assert results[cga + bench.COMPILED]["parameters"] == results[cga]["parameters"]
    assert "vs unmodified eager (paired)" in (tmp_path / "c.md").read_text()
