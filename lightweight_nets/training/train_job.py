"""One training job of ``lightweight-seg-train-all``, in its own process: a bundle's configs (MONAI config merging,
as ``python -m monai.bundle run`` does) with the job's overrides, run to early stopping or its time guard, resumed
from the run's ``checkpoints/last.ckpt`` when there is one; then ``summary.json`` beside the weights.

``python -m lightweight_nets.training.train_job RUN_DIR/job.json`` (the runner writes the job file).
"""

from __future__ import annotations

import csv
import json
import math
import sys
import time
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, Timer

from lightweight_nets.bundle import read_bundle_configs
from lightweight_nets.io.files import atomic_path
from lightweight_nets.training.run import plot_training_curves

__all__ = [
    "EpochLine",
    "SessionTimer",
    "StopWhenLossDiverges",
    "job_config",
    "configure",
    "evaluate",
    "best_epoch",
    "how_it_stopped",
    "train",
    "main",
]

PLAIN_DATA_MODULE = "lightweight_nets.training.data.SegmentationDataModule"
DEVICE_DATA_MODULE = "lightweight_nets.training.device_data.DeviceSegmentationDataModule"
REPORTED = ("train_loss", "val_loss", "val_dice", "val_hd95", "feature_loss")
EARLIER_LOG = "metrics.earlier.csv"  # a resumed run's earlier log rows, kept until the part now running ends


class EpochLine(Callback):
    """Prints one line per finished training epoch: the job's tag, the epoch, its losses and Dice, the minutes."""

    def __init__(self, tag: str):
        self.tag, self.start = tag, time.monotonic()

    def on_train_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        metrics = trainer.callback_metrics
        values = " ".join(f"{key} {float(metrics[key]):.4f}" for key in REPORTED if key in metrics)
        print(
            f"[{self.tag}] epoch {trainer.current_epoch + 1} {values} ({(time.monotonic() - self.start) / 60:.1f} min)",
            flush=True,
        )


class SessionTimer(Timer):
    """Lightning's ``Timer`` (the ``max_time`` guard) counting this process's time only: Lightning's own restores the
    time a resumed checkpoint had already spent, so a run cut by the guard stopped again at once when resumed with
    a new budget."""

    def load_state_dict(self, state_dict: dict) -> None:
        """Keep no time from the checkpoint."""


class StopWhenLossDiverges(Callback):
    """Stops training after the first epoch whose training loss (the logged ``train_loss``, the epoch's mean) is not
    finite: one NaN step makes every weight NaN, and the run would otherwise go on to its last epoch learning nothing.
    Checked once an epoch, so a GPU run waits on no extra synchronisation per step. The weights kept are the best
    checkpoint's, from before the divergence; the summary says ``non_finite_loss``."""

    def __init__(self, tag: str):
        self.tag, self.diverged_at = tag, None

    def on_train_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        loss = trainer.callback_metrics.get("train_loss")
        if loss is not None and not torch.isfinite(loss).all():
            self.diverged_at = trainer.current_epoch + 1
            trainer.should_stop = True
            print(
                f"[{self.tag}] training loss not finite in epoch {self.diverged_at}: stopped; the weights are the best "
                "checkpoint's, from before it",
                flush=True,
            )


def job_config(job: dict, configs: list[str]):
    """The bundle's ``configs`` merged (:func:`lightweight_nets.bundle.read_bundle_configs`) with the job's
    overrides and data root."""
    parser = read_bundle_configs(job["bundle"], configs)
    for key, value in job.get("overrides", {}).items():
        parser[key] = value
    if job.get("data_root"):
        parser["dataset_dir"] = str(Path(job["data_root"]) / Path(parser.get_parsed_content("dataset_dir")).name)
    return parser


def configure(job: dict):
    """The bundle's merged config with the job's settings applied (see :mod:`lightweight_nets.training.train_all`
    for the job's keys)."""
    run_dir = Path(job["run_dir"])
    parser = job_config(job, job["configs"])
    parser["output_dir"], parser["run_name"] = str(run_dir), ""
    parser["model_file"] = str(run_dir / job["weights_name"])
    last = run_dir / "checkpoints" / "last.ckpt"
    parser["resume_from"] = str(last) if last.is_file() else None
    if job.get("max_epochs") is not None:
        parser["max_epochs"] = int(job["max_epochs"])
    if job.get("num_workers") is not None:
        parser["num_workers"] = int(job["num_workers"])
    if job.get("limit") is not None:
        parser["datamodule#limit"] = int(job["limit"])
    if job.get("device_data") and parser.get("datamodule#_target_") == PLAIN_DATA_MODULE:
        parser["datamodule#_target_"] = DEVICE_DATA_MODULE
    if job.get("channels_last"):
        parser["module#channels_last"] = True
    trainer = parser.get("trainer")
    loggers = trainer.get("logger") or []
    for logger in loggers if isinstance(loggers, list) else [loggers]:
        logger.update(save_dir=str(run_dir), name="", version="")  # one folder per run, the same when resumed
    callbacks = [
        c
        for c in trainer.get("callbacks", [])
        if job.get("early_stopping", True) or not str(c.get("_target_", "")).endswith("EarlyStopping")
    ]
    callbacks.append({"_target_": f"{__name__}.EpochLine", "tag": job["tag"]})
    callbacks.append({"_target_": f"{__name__}.StopWhenLossDiverges", "tag": job["tag"]})
    if job.get("max_time_s"):
        callbacks.append({"_target_": f"{__name__}.SessionTimer", "duration": {"seconds": int(job["max_time_s"])}})
    trainer.update(callbacks=callbacks, enable_progress_bar=False, enable_model_summary=False)
    if job.get("precision"):
        trainer["precision"] = job["precision"]
    parser["trainer"] = trainer
    return parser


def evaluate(job: dict, weights: Path) -> dict:
    """The bundle's ``configs/evaluate.json`` (on top of the job's configs and overrides) with ``weights``: Dice and
    HD95 in mm on the validation split at the volumes' own grid, comparable between runs at different spacings;
    ``metrics.json`` and the per-image file go to the run's ``evaluation/``."""
    parser = job_config(job, [*job["configs"], "evaluate.json"])
    parser["model_file"] = str(weights)
    parser["output_dir"] = str(Path(job["run_dir"]) / "evaluation")
    if job.get("limit") is not None:
        parser["limit"] = int(job["limit"])
    return parser.get_parsed_content("run")


def best_epoch(metrics_csv: Path) -> dict:
    """The logged validation row with the lowest ``val_loss`` (what the checkpoint keeps), as numbers."""
    rows = []
    if metrics_csv.is_file():
        with open(metrics_csv, newline="") as f:
            rows = [r for r in csv.DictReader(f) if r.get("val_loss")]
    if not rows:
        return {}
    best = min(rows, key=lambda r: float(r["val_loss"]))
    return {
        "best_epoch": int(best["epoch"]) + 1,
        **{k: float(v) for k, v in best.items() if k.startswith("val_") and v and not math.isnan(float(v))},
    }


def how_it_stopped(trainer: pl.Trainer) -> str:
    """``non_finite_loss`` (diverged), ``early_stopping``, ``max_epochs`` or ``max_time`` (the guard)."""
    if any(isinstance(c, StopWhenLossDiverges) and c.diverged_at for c in trainer.callbacks):
        return "non_finite_loss"
    early = next((c for c in trainer.callbacks if isinstance(c, EarlyStopping)), None)
    if early is not None and early.stopped_epoch > 0:
        return "early_stopping"
    if trainer.max_epochs is not None and trainer.current_epoch >= trainer.max_epochs:
        return "max_epochs"
    return "max_time"


def train(job: dict) -> dict:
    """Run one job and write its ``summary.json``; returns the summary."""
    run_dir = Path(job["run_dir"])
    previous = json.loads((run_dir / "summary.json").read_text()) if (run_dir / "summary.json").is_file() else {}
    start = time.monotonic()
    pl.seed_everything(job["seed"], workers=True, verbose=False)
    parser = configure(job)
    resumed = parser["resume_from"]
    earlier = _keep_earlier_rows(run_dir, Path(resumed)) if resumed else []
    trainer = parser.get_parsed_content("trainer")
    weights = parser.get_parsed_content("run")  # the bundle's own fit: best checkpoint -> weights, curves
    if earlier:
        _prepend_rows(earlier, run_dir / "metrics.csv")
    (run_dir / EARLIER_LOG).unlink(missing_ok=True)
    summary = {
        "bundle": Path(job["bundle"]).name,
        "job": job["name"],
        "seed": job["seed"],
        "description": job.get("description", ""),
        "command": job["command"],
        "configs": job["configs"],
        "overrides": job.get("overrides", {}),
        "weights": str(weights),
        "target": job["target"],
        "epochs": trainer.current_epoch,
        "stopped": how_it_stopped(trainer),
        "early_stopping": job.get("early_stopping", True),
        "max_epochs": trainer.max_epochs,
        "max_time_s": job.get("max_time_s"),
        "precision": str(trainer.precision),
        "data_module": parser.get("datamodule#_target_"),
        "device": _device_name(),
        "torch": torch.__version__,
        "resumed_from": resumed,
        "minutes": round(previous.get("minutes", 0.0) + (time.monotonic() - start) / 60, 2),
        **best_epoch(run_dir / "metrics.csv"),
    }
    if job.get("evaluate"):
        summary["evaluation"] = evaluate(job, Path(weights))
    with atomic_path(run_dir / "summary.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def _read_rows(metrics_csv: Path) -> list[dict]:
    if not metrics_csv.is_file():
        return []
    with open(metrics_csv, newline="") as f:
        return list(csv.DictReader(f))


def _write_rows(rows: list[dict], metrics_csv: Path) -> None:
    columns = sorted({key for row in rows for key in row})
    with atomic_path(metrics_csv) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def _keep_earlier_rows(run_dir: Path, checkpoint: Path) -> list[dict]:
    """The log rows of the run's earlier parts up to the step ``checkpoint`` resumes from, also kept in
    :data:`EARLIER_LOG` until the part now starting ends: Lightning's CSV logger starts ``metrics.csv`` afresh, so
    a part stopped before its end (a session that ends) would otherwise take them with it. Rows past the checkpoint
    (an epoch the stopped part did not finish) are left out, as the resumed part logs them again."""
    step = torch.load(checkpoint, map_location="cpu", weights_only=False)["global_step"]
    rows, seen = [], set()
    for row in _read_rows(run_dir / EARLIER_LOG) + _read_rows(run_dir / "metrics.csv"):
        key = tuple(sorted(row.items()))  # a part stopped before its logger started: its rows are there twice
        if row.get("step") and int(row["step"]) <= step and key not in seen:
            rows.append(row)
            seen.add(key)
    _write_rows(rows, run_dir / EARLIER_LOG)
    return rows


def _prepend_rows(earlier: list[dict], metrics_csv: Path) -> None:
    """Put the rows of the run's earlier parts back in front of a resumed part's log, and redraw the curves from the
    whole log."""
    _write_rows(earlier + _read_rows(metrics_csv), metrics_csv)
    plot_training_curves(metrics_csv, metrics_csv.parent / "training_curves.png")


def _device_name() -> str:
    return torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m lightweight_nets.training.train_job RUN_DIR/job.json", file=sys.stderr)
        return 2
    summary = train(json.loads(Path(args[0]).read_text()))
    print(
        f"[{summary['bundle']}/{summary['job']}/seed{summary['seed']}] done: {summary['epochs']} epochs, "
        f"stopped by {summary['stopped']}, best epoch {summary.get('best_epoch')}, "
        f"val_dice {summary.get('val_dice', float('nan')):.4f}",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
