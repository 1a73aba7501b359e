"""Batch norm's statistics of models trained on patches: each run's test with the statistics its checkpoint holds,
and with statistics estimated again from windows of its training crops (``ExperimentConfig.bn_windows``).

The test is the experiment's own: the sliding window over each test crop at the training scale, pooled AUPR (with
its binning bound) and Dice over every pixel of the test photographs at their original resolution. Only the
checkpoint's running mean and variance change between the rows of a run; its weights are those it trained.

    python benchmarks/bn_statistics.py --windows 16 64 --out-stem bn-statistics \
        runs/beyond20-he/scale0125 runs/beyond20amp-batch/GANet_patches-at-025_joint_seed0_EX+HE
    # then: benchmarks/results/bn-statistics.{md,json}
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _timing import machine_info, markdown_table, report, report_header  # noqa: E402
from exact_aupr import trained_models  # noqa: E402

from group_attention.fundus import load_model  # noqa: E402
from group_attention.fundus.engine.config import ExperimentConfig  # noqa: E402
from group_attention.fundus.engine.io import read_json  # noqa: E402
from group_attention.fundus.engine.patches import PatchSampler, load_scaled_arrays  # noqa: E402
from group_attention.fundus.engine.windows import calibrate_batch_norm, evaluate_windows  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def parse_arguments(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="output folders of examples/idrid_ganet.py runs on patches")
    parser.add_argument("--windows", type=int, nargs="+", default=[64], help="window counts to estimate from")
    parser.add_argument("--seed", type=int, default=0, help="seeds the draw of the windows")
    parser.add_argument("--results", default=str(REPO / "benchmarks" / "results"))
    parser.add_argument("--out-stem", default="bn-statistics")
    arguments = parser.parse_args(argv)
    if any(count < 1 for count in arguments.windows):
        parser.error(f"--windows must be counts >= 1, got {arguments.windows}")
    return arguments


def score(model, arrays, indices, spec, amp: bool) -> list[dict]:
    return evaluate_windows(
        model, arrays, indices, spec.patch, list(spec.lesion_channels), spec.activation, original=True, amp=amp
    )


def measure_run(folder: Path, counts: list[int], seed: int) -> list[list]:
    """Rows ``[run, statistics, lesion, AUPR, bound, Dice]`` of every model in ``folder``."""
    saved = read_json(folder / "config.json")["config"]
    config = ExperimentConfig(**saved)
    if not config.patch_mode:
        raise ValueError(f"{folder} is not a run on patches (no scale in its config.json)")
    source = config.data_source(folder)
    rows = []
    for run, checkpoint in trained_models(folder):
        spec_ids = run["spec"]
        model = load_model(checkpoint)
        spec = model.inference_spec
        ids = spec_ids["train_ids"] + spec_ids["test_ids"]
        arrays = load_scaled_arrays(source, list(spec.lesions), ids, spec.scale, config.cache_dir)
        sampler = PatchSampler(arrays, arrays.indices_of(spec_ids["train_ids"]), spec.patch, config.lesion_share)
        test = arrays.indices_of(spec_ids["test_ids"])
        held = {key: value.clone() for key, value in model.state_dict().items()}
        recorded = saved.get("bn_windows") or 0
        for count in [None, *counts]:
            model.load_state_dict(held)
            if count is None:
                label = f"the checkpoint's ({recorded} windows)" if recorded else "the checkpoint's (training's)"
            else:
                windows = sampler.windows(count, torch.Generator().manual_seed(seed))
                calibrate_batch_norm(model, sampler, windows, batch_size=config.batch_size, amp=config.amp)
                label = f"{len(windows)} training windows"
            for lesion, metrics in zip(spec.lesions, score(model, arrays, test, spec, config.amp)):
                rows.append(
                    [
                        folder.name,
                        label,
                        lesion,
                        f"{100 * metrics['aupr']:.1f}",
                        f"±{100 * metrics['aupr_error_bound']:.1f}",
                        f"{100 * metrics['dice']:.1f}",
                    ]
                )
            print(rows[-1], flush=True)
    return rows


def main(argv=None) -> None:
    arguments = parse_arguments(argv)
    rows = []
    for folder in arguments.runs:
        rows += measure_run(folder, arguments.windows, arguments.seed)
    machine = machine_info(torch.device("cpu"))
    lines = report_header("Batch norm's statistics of models trained on patches", machine)
    lines += [
        "Each run's test (pooled over every pixel of its test photographs at the original resolution, the "
        "experiment's sliding window), with the batch-norm statistics its checkpoint holds and with statistics "
        f"estimated again from windows of its training crops (seed {arguments.seed}); the weights are unchanged.",
        "",
        markdown_table(["run", "statistics", "lesion", "pooled AUPR (%)", "binning bound", "pooled Dice (%)"], rows),
        "",
    ]
    payload = {"machine": machine, "settings": {**vars(arguments), "runs": [str(r) for r in arguments.runs]}}
    report(arguments.results, arguments.out_stem, lines, {**payload, "rows": rows})


if __name__ == "__main__":
    main()
