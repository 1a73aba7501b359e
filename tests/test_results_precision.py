"""Honest precision: every AUPR in results.md carries no more digits than its binning error bound allows, and the
experiment's test AUPR is exact when the bins could not give it to the printed precision."""

from __future__ import annotations

import json
import re

import pytest
import torch
from torch import nn

from group_attention.fundus.engine import LesionArrays, evaluate
from group_attention.fundus.engine.results import write_results

sklearn_metrics = pytest.importorskip("sklearn.metrics")

CONFIG = {"folds": 3, "protocol": "cv", "epochs": 1, "batch_size": 2, "lr": 1e-3, "size": [16, 16]}


def fake_run(variant: str, fold: int, aupr: float, bound: float) -> dict:
    test = {
        "dice": 0.5,
        "accuracy": 0.9,
        "sensitivity": 0.5,
        "specificity": 0.95,
        "aupr": aupr,
        "aupr_error_bound": bound,
    }
    return {"variant": variant, "lesion": "EX", "fold": fold, "parameters": 1000, "test": test}


def aupr_cells(markdown: str) -> dict[str, str]:
    """Variant label -> the AUPR cell of results.md (the table's 8th column)."""
    header = next(line for line in markdown.splitlines() if line.startswith("| Methods"))
    column = [cell.strip() for cell in header.split("|")].index("AUPR(%)")
    rows = [line for line in markdown.splitlines() if line.startswith("| ") and not line.startswith("| Methods")]
    return {[c.strip() for c in row.split("|")][1]: [c.strip() for c in row.split("|")][column] for row in rows}


def test_every_aupr_in_results_md_has_no_more_digits_than_its_bound_allows(tmp_path):
    # Bounds (absolute) per variant, three folds each: exact, tiny, 0.03 %, 0.3 %, 44 % (as once seen).
    bounds = {"unet": 0.0, "baseline": 2e-7, "baseline+se": 3e-4, "baseline+cga": 3e-3, "ganet": 0.44}
    runs = [
        fake_run(variant, fold, 0.4 + 0.0123456 * fold, bound) for variant, bound in bounds.items() for fold in range(3)
    ]
    write_results(tmp_path, runs, CONFIG, synthetic=True, complete=True)
    cells = aupr_cells((tmp_path / "results.md").read_text())
    summary = json.loads((tmp_path / "results.json").read_text())["summary"]
    assert len(cells) == len(summary) == 5
    labels = {
        "unet": "Unet",
        "baseline": "Baseline",
        "baseline+se": "Baseline + SE",
        "baseline+cga": "Baseline + CGA",
        "ganet": "Baseline + SGAU+CGA",
    }
    for row in summary:
        cell = cells[labels[row["variant"]]]
        value = re.match(r"(\d+(?:\.(\d+))?) ± \d+(?:\.\d+)?", cell)
        decimals = len(value.group(2) or "")
        bound_percent = 100 * row["aupr_error_bound"]
        # the printed value's last digit must be one the bound cannot change by half a unit, or the bound is shown
        assert bound_percent <= 0.5 * 10.0**-decimals or "binning error ≤" in cell, (cell, bound_percent)
        assert decimals == max(d for d in (0, 1, 2) if bound_percent <= 0.5 * 10.0**-d or d == 0)
    assert cells["Unet"].startswith("41.23 ± 1.23")  # mean of 0.4, 0.4123456, 0.4246912 in percent
    assert cells["Baseline + SE"].startswith("41.2 ± 1.2") and "binning" not in cells["Baseline + SE"]
    assert cells["Baseline + CGA"].startswith("41 ± 1 ") or cells["Baseline + CGA"] == "41 ± 1"
    assert cells["Baseline + SGAU+CGA"] == "41 ± 1 (binning error ≤ 44.0)"


class CrowdedScores(nn.Module):
    """Lesion probabilities crowded into three 1e-4 histogram bins, ranked by the red channel (as from an
    undertrained model)."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        lesion = 1e-3 * images[:, :1]
        return torch.cat([torch.zeros_like(lesion), lesion], dim=1)


def test_the_test_aupr_is_exact_when_the_bins_cannot_give_the_printed_precision():
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (3, 3, 8, 8), generator=generator, dtype=torch.uint8)
    masks = (torch.rand(3, 1, 8, 8, generator=generator) < 0.3).to(torch.uint8)
    masks[:, :, :2] = 1
    arrays = LesionArrays(["a", "b", "c"], images, masks)
    indices = torch.arange(3)
    binned = evaluate(CrowdedScores(), arrays, indices, batch_size=2, device=torch.device("cpu"))
    assert binned["aupr_error_bound"] > 1e-3  # the case that needs the exact pass
    exact = evaluate(CrowdedScores(), arrays, indices, batch_size=2, device=torch.device("cpu"), exact_aupr=True)
    probabilities = torch.softmax(CrowdedScores()(images.float() / 255), dim=1)[:, 1]
    reference = sklearn_metrics.average_precision_score(masks[:, 0].flatten().numpy(), probabilities.flatten().numpy())
    assert exact["aupr_error_bound"] == 0.0
    assert exact["aupr"] == pytest.approx(reference, abs=1e-12)
    assert abs(binned["aupr"] - reference) > 1e-3  # the binned value really was off
    assert {k: v for k, v in exact.items() if "aupr" not in k} == {k: v for k, v in binned.items() if "aupr" not in k}
