"""The evidence of docs/beyond_the_paper.md: the paper's whole-image protocol against training on patches at a
share of the native resolution, separate models against one joint model, U-Net against GANet, each run given the
same wall-clock training budget (a joint model "time of 2 models": the budget of both separate models together), on
a sample of IDRiD.

Every run is ``examples/idrid_ganet.py`` on fold 1 of a 3-fold split of the images (10 training images, 5 test
images; no validation image, so the last weights are tested), with ``--time-budget``: training stops at the step that
reaches that many minutes of training, mid-epoch if need be. Every model is scored the same way, by the code of
``group-attention predict``: its probabilities at the original resolution of the 5 test photographs, metrics pooled
over every pixel of them (the IDRiD challenge's AUPR). For a model trained on patches that is the experiment's own
test (the same sliding-window code); for a whole-image model, ``predict`` is run on the test photographs.

    python benchmarks/beyond_the_paper.py --data-root /work/shared/data/idrid-mini --out runs/beyond \\
        --budget 4 --seeds 0 1 --parallel 2
    # then: benchmarks/results/beyond-the-paper.{md,json}

Rerunning resumes: finished runs are read back, not retrained.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _timing import machine_info, markdown_table, report, report_header  # noqa: E402

from group_attention.fundus.engine.experiment import run_directory  # noqa: E402
from group_attention.fundus.engine.io import read_json, write_json  # noqa: E402
from group_attention.fundus.engine.loss import DICE_OVER  # noqa: E402


class Configuration(NamedTuple):
    """One configuration of the comparison."""

    variant: str  # a Table 1 variant
    options: list[str]  # options of examples/idrid_ganet.py beyond the shared ones
    models: str  # "separate" (one model per lesion) or "joint" (one model for both)
    minutes: str  # "run": every model gets --budget; "lesions": a joint model gets --budget times its lesions


PATCHES_0125, PATCHES_025, PATCHES_05 = (
    ["--scale", scale, "--patch", "256", "256"] for scale in ("0.125", "0.25", "0.5")
)
#: In the order they run (the comparison the page leads with first). "lesions" minutes give a joint model the time
#: the separate models of its lesions take together (the same training time for every lesion's masks).
CONFIGURATIONS = {
    "GANet, whole image 512x384, separate": Configuration("ganet", ["--size", "384", "512"], "separate", "run"),
    "GANet, patches at 0.25, joint": Configuration("ganet", PATCHES_025, "joint", "run"),
    "GANet, patches at 0.25, separate": Configuration("ganet", PATCHES_025, "separate", "run"),
    "U-Net, patches at 0.25, joint": Configuration("unet", PATCHES_025, "joint", "run"),
    "GANet, patches at 0.5, joint": Configuration("ganet", PATCHES_05, "joint", "run"),
    "GANet, patches at 0.125, separate": Configuration("ganet", PATCHES_0125, "separate", "run"),
    "U-Net, patches at 0.125, separate": Configuration("unet", PATCHES_0125, "separate", "run"),
    "GANet, patches at 0.125, joint, time of 2 models": Configuration("ganet", PATCHES_0125, "joint", "lesions"),
    "GANet, patches at 0.25, joint, time of 2 models": Configuration("ganet", PATCHES_025, "joint", "lesions"),
}
#: Shared by every run: batch 4, no validation image (the last epoch is tested), one patch per training image and
#: epoch (so that an epoch is a few steps and the budget is not overshot by much).
SHARED = ["--batch-size", "4", "--val-fraction", "0", "--patches-per-image", "1"]
LESIONS = ("EX", "HE")


def parse_arguments(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", default=os.environ.get("GA_IDRID_ROOT"), help="IDRiD root (GA_IDRID_ROOT)")
    parser.add_argument("--out", type=Path, default=Path("runs/beyond-the-paper"))
    parser.add_argument("--budget", type=float, default=4.0, help="training minutes per run (default 4)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument(
        "--single-seed",
        nargs="*",
        default=["GANet, patches at 0.5, joint"],
        metavar="NAME",
        help="configurations run with the first seed only, after all others (the costliest)",
    )
    parser.add_argument("--configurations", nargs="+", default=list(CONFIGURATIONS), metavar="NAME")
    parser.add_argument("--parallel", type=int, default=2, help="runs at once, one torch thread each (default 2)")
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate of every run (default 1e-3)")
    parser.add_argument(
        "--amp", action="store_true", help="bf16 autocast on the CPU (fast where the CPU has AMX or AVX512-BF16)"
    )
    parser.add_argument(
        "--dice-over",
        choices=DICE_OVER,
        help="the training loss's Dice of every run (default: the experiment's, batch for patches, image otherwise)",
    )
    parser.add_argument(
        "--bn-windows",
        type=int,
        metavar="N",
        help="windows of the training crops batch norm's statistics are estimated from, in every patch run "
        "(default: the experiment's, 64; 0 keeps training's running averages, as runs before 2026-12-06 did)",
    )
    parser.add_argument(
        "--read-only", action="store_true", help="train nothing: the table of the runs already finished in --out"
    )
    parser.add_argument("--results", default=str(REPO / "benchmarks" / "results"))
    parser.add_argument("--stem", default="beyond-the-paper")
    arguments = parser.parse_args(argv)
    if arguments.data_root is None:
        parser.error("--data-root (or GA_IDRID_ROOT) is required")
    unknown = [name for name in arguments.configurations if name not in CONFIGURATIONS]
    if unknown:
        parser.error(f"unknown configurations {unknown}; valid: {list(CONFIGURATIONS)}")
    return arguments


def environment() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", GA_CACHE_DIR=str(Path.home() / ".cache/ga-beyond"))
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    return env


def run_folder(arguments: argparse.Namespace, name: str, seed: int, lesions: tuple[str, ...]) -> Path:
    """The output folder of one model of configuration ``name``."""
    slug = name.replace(", ", "_").replace(" ", "-").replace(".", "")
    return arguments.out / f"{slug}_seed{seed}_{'+'.join(lesions)}"


def training_command(arguments: argparse.Namespace, name: str, seed: int, lesions: tuple[str, ...]) -> list[str]:
    """The ``examples/idrid_ganet.py`` command line that trains and tests one model of configuration ``name``."""
    configuration = CONFIGURATIONS[name]
    return [
        sys.executable,
        str(REPO / "examples" / "idrid_ganet.py"),
        "--data-root",
        arguments.data_root,
        "--out",
        str(run_folder(arguments, name, seed, lesions)),
        "--variants",
        configuration.variant,
        "--lesion",
        *lesions,
        "--folds",
        "3",
        "--only-folds",
        "1",
        "--epochs",
        "10000",
        "--time-budget",
        str(budget_of(arguments.budget, configuration.minutes, lesions)),
        "--lr",
        str(arguments.lr),
        "--seed",
        str(seed),
        "--overlays",
        "0",
        "--device",
        "cpu",
        "--no-progress",
        *SHARED,
        *configuration.options,
        *(["--joint"] if len(lesions) > 1 else []),
        *(["--amp"] if arguments.amp else []),
        *(["--dice-over", arguments.dice_over] if arguments.dice_over else []),
        # Whole images have no windows to estimate batch norm's statistics from.
        *(
            ["--bn-windows", str(arguments.bn_windows)]
            if arguments.bn_windows is not None and "--scale" in configuration.options
            else []
        ),
    ]


def run_one(arguments: argparse.Namespace, name: str, seed: int, lesions: tuple[str, ...]) -> dict:
    """Train (or read back) one model and score it; returns ``{lesion: pooled metrics}`` and the run's facts."""
    out = run_folder(arguments, name, seed, lesions)
    command = training_command(arguments, name, seed, lesions)
    finished_before = (out / "results.json").is_file()
    if arguments.read_only and not finished_before:
        raise RuntimeError(f"{name} seed {seed} {lesions}: not run yet ({out})")
    if not finished_before:  # trained (or resumed) by this invocation: record how
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / RUN_SETTINGS, run_settings(arguments))
    started = time.perf_counter()
    finished = subprocess.run(command, env=environment(), capture_output=True, text=True)
    if finished.returncode != 0:
        raise RuntimeError(f"{name} seed {seed} {lesions} failed:\n{finished.stderr[-3000:]}")
    results = read_json(out / "results.json")
    runs = {run["lesion"]: run for run in results["runs"]}
    metrics = {}
    for lesion in lesions:
        run = runs[lesion]
        if results["config"]["scale"] is not None:  # the test of the experiment: original resolution, pooled
            metrics[lesion] = run["test"]
        else:
            metrics[lesion] = predict_metrics(arguments, out, run, lesion)
    first = runs[lesions[0]]
    return {
        "configuration": name,
        "seed": seed,
        "lesions": list(lesions),
        "metrics": metrics,
        "epochs": first["epochs_trained"],
        "train_seconds": first["train_seconds"],
        "best_epoch": first["best_epoch"],
        "wall_seconds": round(time.perf_counter() - started, 1),
        "settings": recorded_settings(out),
        # Runs from before the setting existed computed it per image.
        "dice_over": results["config"].get("dice_over") or "image",
        "bn_windows": results["config"].get("bn_windows") or 0,
    }


def budget_of(budget: float, minutes: str, lesions: tuple[str, ...]) -> float:
    """Training minutes of a model of ``lesions`` under a configuration's ``minutes`` ("run" or "lesions")."""
    return budget * len(lesions) if minutes == "lesions" else budget


#: Per run folder: the settings of the invocation that trained it (a rerun reads finished runs back, and may differ).
RUN_SETTINGS = "beyond_settings.json"


def run_settings(arguments: argparse.Namespace) -> dict:
    """What a run's numbers depend on beyond its configuration and seed."""
    return {"budget": arguments.budget, "lr": arguments.lr, "amp": arguments.amp, "parallel": arguments.parallel}


def recorded_settings(out: Path) -> "dict | None":
    """The settings recorded when the run in ``out`` trained; None for a run trained before they were recorded."""
    path = out / RUN_SETTINGS
    return read_json(path) if path.is_file() else None


def describe_settings(settings: "dict | None") -> str:
    """``"2 at once, bf16"``-style text of :func:`run_settings`, or "not recorded"."""
    if settings is None:
        return "not recorded"
    text = f"{settings['parallel']} at once"
    return text + (", bf16" if settings.get("amp") else "")


def predict_metrics(arguments: argparse.Namespace, out: Path, run: dict, lesion: str) -> dict:
    """Pooled metrics of a whole-image model on its test photographs, at their original resolution (predict)."""
    checkpoint = run_directory(out, run["variant"], run.get("model", lesion), run["fold"]) / "checkpoint_best.pt"
    originals = Path(arguments.data_root) / "A. Segmentation" / "1. Original Images"
    found = {path.stem: path for path in originals.glob("*/*.jpg")}
    predicted = out / f"predict-{lesion}"
    command = [
        sys.executable,
        "-m",
        "group_attention",
        "predict",
        "--checkpoint",
        str(checkpoint),
        *[str(found[image_id]) for image_id in run["test_ids"]],
        "--masks",
        arguments.data_root,
        "--out",
        str(predicted),
        "--device",
        "cpu",
        "--quiet",
    ]
    finished = subprocess.run(command, env=environment(), capture_output=True, text=True)
    if finished.returncode != 0:
        raise RuntimeError(f"predict of {checkpoint} failed:\n{finished.stderr[-3000:]}")
    return read_json(predicted / "summary.json")["metrics"][lesion]


def lesion_share(done: list[dict], lesion: str) -> "float | None":
    """The lesion's share of the test pixels, from one run's accuracy, sensitivity and specificity
    (``accuracy = sensitivity * p + specificity * (1 - p)``)."""
    for run in done:
        metrics = run["metrics"].get(lesion)
        if metrics and abs(metrics["sensitivity"] - metrics["specificity"]) > 0.05:
            return (metrics["accuracy"] - metrics["specificity"]) / (metrics["sensitivity"] - metrics["specificity"])
    return None


def spread(values: list[float]) -> str:
    mean = statistics.fmean(values)
    if len(values) < 2:
        return f"{100 * mean:.1f}"
    return f"{100 * mean:.1f} ± {100 * statistics.stdev(values):.1f}"


def main(argv=None) -> None:
    arguments = parse_arguments(argv)
    jobs, last = [], []
    for seed in arguments.seeds:
        for name in arguments.configurations:
            models = [LESIONS] if CONFIGURATIONS[name].models == "joint" else [(lesion,) for lesion in LESIONS]
            if name in arguments.single_seed:
                if seed == arguments.seeds[0]:
                    last += [(name, seed, lesions) for lesions in models]
                continue
            jobs += [(name, seed, lesions) for lesions in models]
    jobs += last
    done = []
    with ThreadPoolExecutor(arguments.parallel) as pool:
        futures = [pool.submit(run_one, arguments, *job) for job in jobs]
        for job, future in zip(jobs, futures):
            try:
                done.append(future.result())
                print(json.dumps(done[-1]), flush=True)
            except RuntimeError as error:
                print(f"FAILED {job}: {error}", file=sys.stderr, flush=True)
    rows = []
    # Runs of another training loss or batch-norm estimate are never pooled together.
    trainings = sorted({(r["dice_over"], r["bn_windows"]) for r in done}, key=lambda t: (DICE_OVER.index(t[0]), t[1]))
    for name in arguments.configurations:
        for dice_over, bn_windows in trainings:
            for lesion in LESIONS:
                entries = [
                    r
                    for r in done
                    if r["configuration"] == name
                    and (r["dice_over"], r["bn_windows"]) == (dice_over, bn_windows)
                    and lesion in r["metrics"]
                ]
                if not entries:
                    continue
                aupr = [r["metrics"][lesion]["aupr"] for r in entries]
                dice = [r["metrics"][lesion]["dice"] for r in entries]
                epochs = [r["epochs"] for r in entries]
                rows.append(
                    [
                        name,
                        dice_over,
                        bn_windows,
                        lesion,
                        spread(aupr),
                        spread(dice),
                        len(entries),
                        f"{min(epochs)}-{max(epochs)}",
                    ]
                )
    per_run = [
        [
            r["configuration"],
            r["seed"],
            "+".join(r["lesions"]),
            r["epochs"],
            f"{r['train_seconds']:.0f}",
            describe_settings(r.get("settings")),
            r["dice_over"],
            r["bn_windows"],
            *[f"{100 * r['metrics'][lesion]['aupr']:.1f}" if lesion in r["metrics"] else "" for lesion in LESIONS],
        ]
        for r in sorted(done, key=lambda r: (list(CONFIGURATIONS).index(r["configuration"]), r["seed"], r["lesions"]))
    ]
    shares = {lesion: lesion_share(done, lesion) for lesion in LESIONS}
    machine = machine_info(__import__("torch").device("cpu"))
    lines = report_header("Beyond the paper: whole image against patches, on IDRiD images", machine)
    lines += [
        f"Data: {arguments.data_root} (fold 1 of 3: 10 training images, no validation image: the last epoch is "
        "tested; 5 test images). "
        f"Each run: {arguments.budget:g} minutes of training ('time of 2 models': twice that, the time the two "
        f"separate models of its lesions take together; Adam lr {arguments.lr:g}, batch 4 images or patches, "
        "one torch thread; the runs at once on the shared CPU and the "
        "autocast of each are in the last table). Pooled AUPR and Dice (%) over every "
        "pixel of the 5 test photographs at their "
        f"original resolution; mean ± standard deviation over the seeds run. A model that scores at random has an "
        f"AUPR equal to the lesion's share of the pixels: "
        + ", ".join(f"{lesion} {100 * share:.2f}%" for lesion, share in shares.items() if share is not None)
        + ". An epoch is 10 images or 10 patches (3 steps). BN windows: the windows of the training crops batch "
        "norm's statistics were estimated from before the test (0: training's running averages).",
        "",
        markdown_table(
            ["configuration", "Dice over", "BN windows", "lesion", "pooled AUPR", "pooled Dice", "seeds", "epochs"],
            rows,
        ),
        "",
        "Every run:",
        "",
        markdown_table(
            [
                "configuration",
                "seed",
                "model",
                "epochs",
                "training s",
                "runs",
                "Dice over",
                "BN windows",
                "EX AUPR",
                "HE AUPR",
            ],
            per_run,
        ),
        "",
    ]
    report(arguments.results, arguments.stem, lines, {"machine": machine, "settings": vars(arguments), "runs": done})


if __name__ == "__main__":
    main()
