"""Exact pooled AUPR of trained checkpoints on test photographs of an IDRiD tree: every pixel of the photographs at
their original resolution, the probabilities of ``group-attention predict`` (whole-image and patch checkpoints
alike), sorted rather than binned, so the number carries no binning bound.

The experiment's tables report AUPR from score histograms with a guaranteed bound, which for 60 million pixels
whose probabilities crowd near 0 and 1 can reach 20 points; this script settles a comparison the bounds leave open.

    python benchmarks/exact_aupr.py --data-root /work/shared/data/idrid-mini --out-stem exact-aupr \
        runs/beyond20amp-bn/GANet_patches-at-0125_separate_seed0_EX ...
    # every run folder of examples/idrid_ganet.py: each model's best checkpoint on its own test photographs
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _timing import machine_info, markdown_table, report, report_header  # noqa: E402

from group_attention.fundus import load_model, predict_probabilities, read_image  # noqa: E402
from group_attention.fundus.data import IDRiDSource  # noqa: E402
from group_attention.fundus.engine.experiment import run_directory  # noqa: E402
from group_attention.fundus.engine.io import read_json  # noqa: E402
from group_attention.metrics import aupr, dice  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def parse_arguments(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="output folders of examples/idrid_ganet.py")
    parser.add_argument("--data-root", required=True, help="the IDRiD tree the runs trained on")
    parser.add_argument("--results", default=str(REPO / "benchmarks" / "results"))
    parser.add_argument("--out-stem", default="exact-aupr")
    return parser.parse_args(argv)


def pooled_exact(checkpoint: Path, source: IDRiDSource, test_ids: list[str]) -> dict[str, tuple[float, float]]:
    """``{lesion: (exact pooled AUPR, pooled Dice at 0.5)}`` of a checkpoint over ``test_ids``."""
    model = load_model(checkpoint)
    lesions = list(model.inference_spec.lesions)
    dataset = source.dataset(lesions, test_ids, (384, 512), None)
    scores: list[list[torch.Tensor]] = [[] for _ in lesions]
    truths: list[list[torch.Tensor]] = [[] for _ in lesions]
    for image_id in test_ids:
        probabilities, _ = predict_probabilities(model, read_image(dataset.images[image_id]))
        masks = dataset.original_masks(image_id)
        for k in range(len(lesions)):
            scores[k].append(torch.from_numpy(np.ascontiguousarray(probabilities[k])).flatten())
            truths[k].append(torch.from_numpy(masks[k]).flatten().bool())
    result = {}
    for k, lesion in enumerate(lesions):
        score, truth = torch.cat(scores[k])[None], torch.cat(truths[k])[None]
        result[lesion] = (float(aupr(score, truth, per_image=False)), float(dice(score, truth, per_image=False)))
    return result


def trained_models(folder: Path) -> list[tuple[dict, Path]]:
    """``(run, best checkpoint)`` of every model an experiment's output ``folder`` trained, a joint model once
    (``results.json`` lists it once per lesion)."""
    models = []
    for run in read_json(folder / "results.json")["runs"]:
        model = run.get("model", run["lesion"])
        if run["lesion"] == model.split("+")[0]:
            models.append((run, run_directory(folder, run["variant"], model, run["fold"]) / "checkpoint_best.pt"))
    return models


def main(argv=None) -> None:
    arguments = parse_arguments(argv)
    source = IDRiDSource(arguments.data_root)
    rows = []
    for folder in arguments.runs:
        for run, checkpoint in trained_models(folder):
            for lesion, (exact, pooled_dice) in pooled_exact(checkpoint, source, run["test_ids"]).items():
                rows.append(
                    [folder.name, lesion, run["epochs_trained"], f"{100 * exact:.1f}", f"{100 * pooled_dice:.1f}"]
                )
                print(rows[-1], flush=True)
    machine = machine_info(torch.device("cpu"))
    lines = report_header("Exact pooled AUPR of trained checkpoints", machine)
    lines += [
        f"Data: {arguments.data_root}. Each model's best checkpoint on its run's test photographs, every pixel at the "
        "original resolution (the probabilities of `group-attention predict`), AUPR exact (sorted), Dice at 0.5.",
        "",
        markdown_table(["run", "lesion", "epochs", "exact pooled AUPR (%)", "pooled Dice (%)"], rows),
        "",
    ]
    payload = {"machine": machine, "settings": {**vars(arguments), "runs": [str(r) for r in arguments.runs]}}
    report(arguments.results, arguments.out_stem, lines, {**payload, "rows": rows})


if __name__ == "__main__":
    main()
