"""The 3D zoo on the hippocampus: every trained network of the bundle side by side on its validation split.

For the served model, the teacher and each ablation of ``experiments/experiments.json``: parameters, GFLOPs per
patch, epochs trained (from the training log kept beside the weights), Dice per label (mean +- std), HD95 (mm) per
label, and CPU milliseconds per volume through ONNX Runtime (exported here, the app's backend), all in one run on
the same volumes. Writes the markdown table the model card
shows. ``python -m benchmarks.zoo3d [--limit N] [--threads 2]``.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import sys
import tempfile
from pathlib import Path

import torch

from benchmarks import NotACheckoutError, checkout
from lightweight_nets.bundle import BundleSpec, read_bundle_configs
from lightweight_nets.evaluate import evaluate_volumes
from lightweight_nets.export import export_onnx
from lightweight_nets.inference.predictors import load_predictor, load_weights
from lightweight_nets.profile import count_flops, count_parameters

__all__ = ["trained_networks", "compare", "markdown"]


def trained_networks(bundle: Path | None = None) -> dict[str, tuple[str, dict, Path]]:
    """``{name: (what it is, network_def config, weights)}`` for every weight file the bundle holds (default: the
    checkout's hippocampus bundle)."""
    from monai.bundle import ConfigParser

    bundle = bundle or checkout("bundle", "hippocampus_mr")
    spec = BundleSpec.load(bundle)
    models = bundle / "models"
    found = {
        "served model": ("configs/train.json", spec.network_config, models / "model.pt"),
        "teacher": ("configs/train.json", spec.teacher_config, models / "teacher.pt"),
    }
    listed = ConfigParser.load_config_file(str(bundle / "experiments" / "experiments.json"))["experiments"]
    for name, entry in listed.items():
        found[name] = (entry["recipe"], entry["network_def"], bundle / "experiments" / f"{name}.pt")
    return {name: found[name] for name in found if found[name][2].is_file()}


def validation_log(weights: Path) -> dict[int, float]:
    """``{epoch: validation mean Dice}`` from the training log kept beside ``weights`` (``experiments/NAME.metrics.csv``
    or the bundle's ``logs/NAME.metrics.csv``); empty without a log."""
    for log in (weights.with_suffix(".metrics.csv"), weights.parents[1] / "logs" / f"{weights.stem}.metrics.csv"):
        if log.is_file():
            with open(log, newline="") as f:
                return {int(row["epoch"]): float(row["val_dice"]) for row in csv.DictReader(f) if row.get("val_dice")}
    return {}


def epochs_trained(weights: Path) -> int | None:
    """Epochs with a validation score in the training log kept beside ``weights``; None without a log."""
    return len(validation_log(weights)) or None


def _build(network_def: dict) -> torch.nn.Module:
    from monai.bundle import ConfigParser

    return ConfigParser({"net": network_def}).get_parsed_content("net")


def compare(limit: int | None = None, threads: int = 2, bundle: Path | None = None) -> list[dict]:
    """One row per trained network (see the module docstring), evaluated on the bundle's validation split (default:
    the checkout's hippocampus bundle)."""
    bundle = bundle or checkout("bundle", "hippocampus_mr")
    spec = BundleSpec.load(bundle)
    evaluation = read_bundle_configs(bundle, ("inference.json", "evaluate.json"))
    dataset_dir, split = evaluation.get_parsed_content("dataset_dir"), evaluation.get_parsed_content("split_file")
    patch = torch.zeros(1, 1, *spec.preprocessing.spatial_size)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, (recipe, network_def, weights) in trained_networks(bundle).items():
            net = load_weights(_build(network_def), weights).eval()
            onnx = export_onnx(net, Path(tmp) / f"{name}.onnx", patch)
            with contextlib.redirect_stdout(sys.stderr):  # each net's summary JSON; stdout is for the table
                summary = evaluate_volumes(
                    load_predictor(onnx, threads=threads),
                    spec.preprocessing,
                    spec.postprocessing,
                    spec.segments,
                    dataset_dir,
                    split,
                    Path(tmp) / name,
                    limit=limit,
                )
            rows.append(
                {
                    "name": name,
                    "recipe": recipe,
                    "weights": str(weights.relative_to(bundle)),
                    "epochs": epochs_trained(weights),
                    "validation_log": validation_log(weights),
                    "parameters": count_parameters(net),
                    "gflops": count_flops(net, patch) / 1e9,
                    **summary,
                }
            )
    return rows


def _mean_std(stats: dict, scale: float = 1.0, digits: int = 3) -> str:
    return "-" if stats["mean"] is None else f"{stats['mean'] * scale:.{digits}f} +- {stats['std'] * scale:.{digits}f}"


def markdown(rows: list[dict]) -> str:
    """The zoo table; networks trained for different numbers of epochs are also compared at the first epoch count
    all logged ones reached (their validation Dice in the training log then, the same validation volumes)."""
    labels = list(rows[0]["dice"]) if rows else []
    common = min((max(row["validation_log"]) for row in rows if row["validation_log"]), default=None)
    header = (
        ["network", "epochs", "parameters", "GFLOPs / patch"]
        + [f"Dice {label}" for label in labels]
        + ["mean Dice"]
        + [f"HD95 mm {label}" for label in labels]
        + ["CPU ms / volume (ONNX)"]
        + ([f"val mean Dice after {common + 1} epochs (log)"] if common is not None else [])
        + ["weights"]
    )
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [
            row["name"],
            "-" if row["epochs"] is None else str(row["epochs"]),
            f"{row['parameters']:,}",
            f"{row['gflops']:.2f}",
        ]
        cells += [_mean_std(row["dice"][label]) for label in labels] + [_mean_std(row["mean_dice"])]
        cells += [_mean_std(row["hd95_mm"][label], digits=2) for label in labels]
        cells += [f"{row['seconds_per_volume']['mean'] * 1000:.0f}"]
        if common is not None:
            at = row["validation_log"].get(common)
            cells += ["-" if at is None else f"{at:.3f}"]
        cells += [f"`{row['weights']}`"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.zoo3d", description=__doc__)
    parser.add_argument("--limit", type=int, help="at most this many validation volumes")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        rows = compare(args.limit, args.threads)
    except NotACheckoutError as error:
        sys.exit(f"error: {error}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    print(markdown(rows))


if __name__ == "__main__":
    main()
