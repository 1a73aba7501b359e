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

import numpy as np
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
    expected = {
        "encoder": set(bench.ENCODER_CONTENDERS) - (set() if has("timm") else {"timm SE"}),
        "skip": set(bench.SKIP_CONTENDERS),
    }
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
    optional = {
        "MONAI AttentionUnet": "monai",
        "MONAI BasicUNet": "monai",
        "smp Unet (resnet18)": "segmentation_models_pytorch",
    }
    for name, package in optional.items():
        assert (name in results) == has(package) or any(name in note for note in run["notes"])
    for name, result in results.items():
        for mode in bench.MODES:
            assert positive_finite(result[mode]["median_ms"]) and positive_finite(result[mode]["images_per_s"]), name
        assert positive_finite(result["saved_activation_bytes"]) and positive_finite(result["peak_memory_bytes"])
    assert results["baseline"]["train"]["vs_baseline"] == 1.0


def test_profile_step_profiles_a_cpu_step_by_default_without_cuda(capsys, keep_threads, monkeypatch):
    """Without a GPU the profiler runs on the CPU (CUDA was the default and failed before any step); asking for CUDA
    there is refused by name."""
    profile = load_script("profile_step")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    torch.set_num_threads(1)
    profile.main(["--model", "baseline", "--batch", "1", "--size", "32,32", "--steps", "1", "--rows", "3"])
    out = capsys.readouterr().out
    assert "baseline, batch 1 at 32x32, 1 steps" in out and "aten::" in out
    with pytest.raises(SystemExit):
        profile.main(["--device", "cuda"])
    assert "no CUDA device here" in capsys.readouterr().err


def test_bench_patches_quick_times_the_loader_and_the_training_step(tmp_path, keep_threads):
    bench = load_script("bench_patches")
    bench.main([*QUICK, "--scales", "0.5", "--out", str(tmp_path), "--stem", "patches"])
    saved = json.loads((tmp_path / "patches.json").read_text())
    (result,) = saved["results"]
    assert result["scale"] == 0.5 and (tmp_path / "patches.md").exists()
    for key in ("preprocess_s_per_image", "loader_images_per_s", "train_step_images_per_s"):
        assert positive_finite(result[key]), key


def has(package: str) -> bool:
    return importlib.util.find_spec(package) is not None


@pytest.mark.parametrize(
    "layer, channels, element_size, forward, total",
    [
        # bytes per element of x, hand-derived from docs/benchmarks.md's floor table (N = 1, M = 1 / K maps per element)
        ("SE", 64, 4, 12, 28),
        ("CGA", 32, 4, 16, 36),  # one channel per group: maps are x; re-reading x (4) equals keeping them (8 M = 8)
        ("CGA", 32, 2, 8, 18),  # bf16, one channel per group: re-read x (2 bytes) instead of keeping maps (8)
        ("CGA", 512, 4, 12 + 8 / 16, 28 + 12 / 16),  # 16 channels per group: keep the maps
        ("SGE", 64, 4, 16, 32 + 4),  # 2 channels per group: keeping a' and the maps (16 M = 8) vs re-reading x (4)
        ("SGE", 512, 4, 16, 32 + 16 / 16),
    ],
)
def test_floor_bytes_match_the_documented_model(layer, channels, element_size, forward, total):
    bench = load_script("bench_layers")
    features = 16 * channels * 1024
    maps = features // channels * 32
    assert bench.floor_bytes(layer, "fwd", features, maps, element_size) == forward * features
    assert bench.floor_bytes(layer, "fwd+bwd", features, maps, element_size) == total * features


def test_sgau_floor_leaves_out_what_concat_skip_does_too():
    """SGAU's attention is timed as SGAU minus ConcatSkip, which reads low and writes it: forward reads high twice
    and the maps (kept, 8 M, or high re-read): 2 H e + min(8 M, H e); backward (3 L + 2 H) e + 8 M."""
    bench = load_script("bench_layers")
    low, high, maps = 8 * 32 * 64 * 64, 8 * 64 * 32 * 32, 8 * 32 * 32 * 32
    assert bench.floor_bytes("SGAU attention", "fwd", 0, maps, 4, low=low, high=high) == 2 * high * 4 + 8 * maps
    assert bench.floor_bytes("SGAU attention", "fwd+bwd", 0, maps, 4, low=low, high=high) == (
        2 * high * 4 + 8 * maps + (3 * low + 2 * high) * 4 + 8 * maps
    )


def test_refloor_recomputes_a_stored_run(tmp_path, keep_threads):
    """The floors of a stored run, recomputed from its JSON, equal those the benchmark wrote (same model), and a
    raised bandwidth scales them down and is recorded."""
    bench, refloor = load_script("bench_layers"), load_script("refloor")
    bench.main([*QUICK, "--out", str(tmp_path), "--stem", "layers", "--no-skip"])
    stored = json.loads((tmp_path / "layers.json").read_text())
    again = refloor.refloor(
        json.loads((tmp_path / "layers.json").read_text()), bandwidth_at_least_largest=False, date="test"
    )
    for before, after in zip(stored["runs"][0]["cases"], again["runs"][0]["cases"]):
        for mode in bench.MODES:
            for name, summary in before["results"][mode].items():
                assert after["results"][mode][name]["floor_ms"] == pytest.approx(summary["floor_ms"])
    for case in stored["runs"][0]["cases"]:
        case["bandwidth_GBps"] /= 2  # as a launch-bound measurement would
    stored["runs"][0]["cases"][0]["bandwidth_GBps"] *= 2
    raised = refloor.refloor(stored, bandwidth_at_least_largest=True, date="test")
    assert any("copy bandwidth raised" in note for note in raised["runs"][0]["notes"])


def test_bench_revisions_quick_compares_a_commit_with_the_working_tree(tmp_path, keep_threads):
    """``--before HEAD`` imports the committed package beside the working tree's and times both on every case."""
    root = BENCHMARKS.parent
    if not (root / ".git").exists():
        pytest.skip("needs the git repository (the earlier package is read from a commit)")
    bench = load_script("bench_revisions")
    arguments = ["--before", "HEAD", "--rounds", "3", "--variants", "ganet", "--inference", "--out", str(tmp_path)]
    arguments += ["--stem", "revisions"]
    payload = bench.main([*QUICK, *arguments])
    assert (tmp_path / "revisions.md").read_text().startswith("# Before (")
    assert json.loads((tmp_path / "revisions.json").read_text())["benchmark"] == "revisions"
    assert len(payload["results"]) == len(bench.CGA_SHAPES) + len(bench.SKIP_SHAPES) + 2  # GANet's step, inference
    cases = [row["case"] for row in payload["results"][-2:]]
    assert cases == ["ganet, training step at 48x64", "ganet, inference at 48x64"]
    for row in payload["results"]:
        assert positive_finite(row["ratio_after_to_before"])
        assert positive_finite(row["before"]["median_ms"]) and positive_finite(row["after"]["median_ms"])
    assert "ga_before" in sys.modules and sys.modules["ga_before"] is not sys.modules["group_attention"]


def test_bench_revisions_ganet_shapes_times_cga_and_sgau_at_ganets_sizes(tmp_path, keep_threads):
    """``--ganet-shapes``: CGA at GANet's five encoder sizes and SGAU's whole skip at its four decoder levels."""
    if not (BENCHMARKS.parent / ".git").exists():
        pytest.skip("needs the git repository (the earlier package is read from a commit)")
    bench = load_script("bench_revisions")
    payload = bench.main([*QUICK, "--before", "HEAD", "--rounds", "2", "--ganet-shapes", "--out", str(tmp_path)])
    cases = [row["case"] for row in payload["results"]]
    assert len(cases) == len(bench.GANET_CGA_SHAPES) + len(bench.GANET_SGAU_SHAPES) == 9
    assert cases[0] == "CGA(groups=32) (2, 32, 48, 64)"  # quick: spatial sizes / 4
    assert cases[5] == "SGAU(groups=32) (2, 32, 48, 64) <- (2, 64, 24, 32)"
    assert all(positive_finite(row["ratio_after_to_before"]) for row in payload["results"])


def test_beyond_the_paper_records_each_runs_own_settings(tmp_path):
    """A run folder keeps the settings of the invocation that trained it (a later rerun reads finished runs back
    with other settings); a run trained before they were recorded says so instead of borrowing the rerun's."""
    beyond = load_script("beyond_the_paper")
    arguments = beyond.parse_arguments(["--data-root", str(tmp_path), "--parallel", "1", "--amp", "--budget", "20"])
    run = tmp_path / "run"
    run.mkdir()
    assert beyond.recorded_settings(run) is None
    assert beyond.describe_settings(beyond.recorded_settings(run)) == "not recorded"
    (run / beyond.RUN_SETTINGS).write_text(json.dumps(beyond.run_settings(arguments)))
    later = beyond.parse_arguments(["--data-root", str(tmp_path), "--parallel", "2"])
    assert beyond.run_settings(later)["parallel"] == 2
    recorded = beyond.recorded_settings(run)
    assert recorded == {"budget": 20.0, "lr": 1e-3, "amp": True, "parallel": 1}
    assert beyond.describe_settings(recorded) == "1 at once, bf16"
    assert beyond.describe_settings({**recorded, "amp": False, "parallel": 2}) == "2 at once"


def test_beyond_the_paper_gives_a_joint_model_the_time_of_its_separate_models_where_configured(tmp_path):
    """'time of 2 models' trains one joint model for the budget of both separate models together; every other
    configuration gives each model the budget, whatever its lesions."""
    beyond = load_script("beyond_the_paper")
    arguments = beyond.parse_arguments(["--data-root", str(tmp_path), "--budget", "20", "--out", str(tmp_path)])

    def minutes(name, lesions):
        command = beyond.training_command(arguments, name, 0, lesions)
        assert command[command.index("--lesion") + 1 : command.index("--folds")] == list(lesions)
        return float(command[command.index("--time-budget") + 1])

    assert minutes("GANet, patches at 0.125, joint, time of 2 models", ("EX", "HE")) == 40.0
    assert minutes("GANet, patches at 0.25, joint", ("EX", "HE")) == 20.0
    assert minutes("GANet, whole image 512x384, separate", ("HE",)) == 20.0
    for name, configuration in beyond.CONFIGURATIONS.items():
        assert configuration.models in ("separate", "joint"), name
        assert configuration.minutes == "run" or (configuration.minutes, configuration.models) == ("lesions", "joint")
    folder = beyond.run_folder(arguments, "GANet, patches at 0.125, joint, time of 2 models", 2, ("EX", "HE"))
    assert folder == tmp_path / "GANet_patches-at-0125_joint_time-of-2-models_seed2_EX+HE"


def _tiny_run_config(tmp_path, **overrides):
    """A U-Net experiment on a few small synthetic photographs, for the scripts that read run folders."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import engine_runs

    settings = dict(variants=("unet",), synthetic={"n_train": 4, "n_test": 2, "size": (64, 96)}, overlays=0)
    return engine_runs.tiny_config(**settings, cache_dir=str(tmp_path / "cache"), **overrides)


def test_bn_statistics_reproduces_a_patch_run_s_test_and_rescores_it_with_statistics_of_its_windows(tmp_path):
    """The script's row of a checkpoint's own statistics is the experiment's test, to the digit; the row of
    statistics estimated again differs only there (same run, same lesion)."""
    from group_attention.fundus.engine import run_experiment

    bn_statistics = load_script("bn_statistics")
    with pytest.raises(SystemExit):
        bn_statistics.parse_arguments(["somewhere", "--windows", "0"])
    config = _tiny_run_config(tmp_path, epochs=2, scale=0.5, patch=(16, 16), patches_per_image=2, bn_windows=0)
    (run,) = run_experiment(config, tmp_path / "run", progress=False)["runs"]
    rows = bn_statistics.measure_run(tmp_path / "run", [3], seed=0)
    assert [row[1] for row in rows] == ["the checkpoint's (training's)", "3 training windows"]
    assert rows[0][2] == rows[1][2] == "EX"
    assert rows[0][3] == f"{100 * run['test']['aupr']:.1f}" and rows[0][5] == f"{100 * run['test']['dice']:.1f}"


def test_exact_aupr_scores_every_pixel_of_the_test_photographs_as_scikit_learn(tmp_path):
    from sklearn.metrics import average_precision_score

    from group_attention.fundus import load_model, predict_probabilities, read_image
    from group_attention.fundus.data import IDRiDSource
    from group_attention.fundus.engine import run_experiment

    exact_aupr = load_script("exact_aupr")
    config = _tiny_run_config(tmp_path, epochs=1)
    (run,) = run_experiment(config, tmp_path / "run", progress=False)["runs"]
    root = tmp_path / "run" / "synthetic-idrid"
    source = IDRiDSource(root)
    checkpoint = tmp_path / "run" / "runs" / "unet" / "EX" / "fold1" / "checkpoint_best.pt"
    (exact, dice), *_ = exact_aupr.pooled_exact(checkpoint, source, run["test_ids"]).values()
    model = load_model(checkpoint)
    dataset = source.dataset(["EX"], run["test_ids"], (384, 512), None)
    scores = [predict_probabilities(model, read_image(dataset.images[i]))[0][0].ravel() for i in run["test_ids"]]
    truth = [dataset.original_masks(i)[0].ravel() for i in run["test_ids"]]
    assert exact == pytest.approx(average_precision_score(np.concatenate(truth), np.concatenate(scores)), abs=1e-9)
    exact_aupr.main([str(tmp_path / "run"), "--data-root", str(root), "--results", str(tmp_path / "out")])
    assert "| run | EX |" in (tmp_path / "out" / "exact-aupr.md").read_text()
