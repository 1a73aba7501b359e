"""Table 1 of the paper from our runs: mean +- standard deviation over folds, as Markdown and JSON."""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

from ...models.variants import VARIANT_LABELS
from .io import write_json, write_text

TABLE_METRICS = (
    ("dice", "Dice(%)"),
    ("accuracy", "Acc(%)"),
    ("sensitivity", "Sensitivity(%)"),
    ("specificity", "Specificity(%)"),
    ("aupr", "AUPR(%)"),
)


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof 1; 0 for a single value)."""
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summarize(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (variant, model, lesion) with the mean and std over its folds of every table metric (``model``:
    the lesion, or a joint model's lesions such as ``EX+HE``)."""
    rows: dict[tuple[str, str, str], dict[str, Any]] = {}
    for run in runs:
        # A joint model's lesions are rows of their own, apart from a separate model of the same lesion.
        model = run.get("model", run["lesion"])
        row = rows.setdefault(
            (run["variant"], model, run["lesion"]),
            {
                "variant": run["variant"],
                "lesion": run["lesion"],
                "model": model,
                "parameters": run["parameters"],
                "folds": [],
                "per_fold": {key: [] for key, _ in TABLE_METRICS},
            },
        )
        row["folds"].append(run["fold"])
        for key, _ in TABLE_METRICS:
            row["per_fold"][key].append(run["test"][key])
        row.setdefault("aupr_error_bounds", []).append(run["test"].get("aupr_error_bound", 0.0))
    for row in rows.values():
        row["mean"], row["std"] = {}, {}
        for key, values in row["per_fold"].items():
            row["mean"][key], row["std"][key] = mean_std(values)
        # Each fold's AUPR is within its bound of the exact value, so their mean is within the mean bound.
        row["aupr_error_bound"] = statistics.fmean(row.pop("aupr_error_bounds"))
    return list(rows.values())


def decimals_allowed(bound: float, most: int = 2) -> int:
    """Decimals of a percentage that an absolute error ``bound`` leaves meaningful: the largest ``d <= most`` with
    the bound at most half a unit of the last digit (``100 * bound <= 0.5 * 10**-d``), and 0 if none."""
    for decimals in range(most, 0, -1):
        if 100 * bound <= 0.5 * 10.0**-decimals:
            return decimals
    return 0


def percent_cell(mean: float, std: float, decimals: int = 2) -> str:
    return f"{100 * mean:.{decimals}f} ± {100 * std:.{decimals}f}"


def aupr_cell(row: dict[str, Any]) -> str:
    """AUPR with no more digits than its binning error bound allows; a bound of half a percent or more is printed
    beside the value."""
    bound = row.get("aupr_error_bound", 0.0)
    cell = percent_cell(row["mean"]["aupr"], row["std"]["aupr"], decimals_allowed(bound))
    if 100 * bound > 0.5:
        cell += f" (binning error ≤ {100 * bound:.1f})"
    return cell


def markdown_table(summary: list[dict[str, Any]], synthetic: bool, description: str) -> str:
    lines = []
    if synthetic:
        lines += [
            "**SYNTHETIC DATA**: these numbers come from the synthetic IDRiD look-alike, not from IDRiD, "
            "and say nothing about the paper's results.",
            "",
        ]
    lines += [description, ""]
    lines.append("| Methods | | " + " | ".join(label for _, label in TABLE_METRICS) + " | # para | folds |")
    lines.append("|---|---|" + "---|" * (len(TABLE_METRICS) + 2))
    for row in summary:
        cells = [
            aupr_cell(row) if key == "aupr" else percent_cell(row["mean"][key], row["std"][key])
            for key, _ in TABLE_METRICS
        ]
        label = VARIANT_LABELS.get(row["variant"], row["variant"])
        lesion = (
            row["lesion"]
            if row.get("model", row["lesion"]) == row["lesion"]
            else f"{row['lesion']} (joint {row['model']})"
        )
        lines.append(
            f"| {label} | {lesion} | "
            + " | ".join(cells)
            + f" | {row['parameters'] / 1e6:.3f}M | {len(row['folds'])} |"
        )
    return "\n".join(lines) + "\n"


def write_results(
    out_dir: Path, runs: list[dict[str, Any]], config: dict[str, Any], synthetic: bool, complete: bool
) -> tuple[Path, Path]:
    """Write ``results.md`` and ``results.json`` (atomically) from the finished runs."""
    summary = summarize(runs)
    protocol = (
        f"{config['folds']}-fold cross-validation over all images"
        if config["protocol"] == "cv"
        else "official training/testing split"
    )
    resolution = (
        f"{config['size'][1]}x{config['size'][0]}"
        if config.get("scale") is None
        else f"patches at {config['scale']:g} of native scale"
    )
    description = (
        f"Mean ± standard deviation over folds ({protocol}; {config['epochs']} epochs, batch "
        f"{config['batch_size']}, Adam lr {config['lr']}, {resolution}). "
        "Dice, accuracy, sensitivity and specificity pool every pixel of a fold's test images "
        "(eqs 4-7 at threshold 0.5); AUPR is the area under the pixel-level precision-recall curve, "
        "printed with no more digits than its binning error bound allows."
    )
    if config.get("scale") is not None:
        patch = config["patch"]
        description += (
            f" Trained on {patch[1]}x{patch[0]} patches at {config['scale']:g} of the native resolution "
            f"({100 * config['lesion_share']:g}% centred on a lesion pixel); tested with the sliding window over each "
            "whole field of view, every metric over every pixel of the original photographs, pooled over a fold."
        )
    if any(row.get("model", row["lesion"]) != row["lesion"] for row in summary):
        description += " Rows marked joint come from one model for several lesions (one sigmoid output each)."
    if not complete:
        description += " **Incomplete: some runs have not finished yet.**"
    for run in runs:
        run["test"] = {
            k: (v if isinstance(v, (int, float)) and math.isfinite(v) else None) for k, v in run["test"].items()
        }
    markdown = write_text(out_dir / "results.md", markdown_table(summary, synthetic, description))
    data = write_json(
        out_dir / "results.json",
        {"synthetic_data": synthetic, "complete": complete, "config": config, "summary": summary, "runs": runs},
    )
    return markdown, data
