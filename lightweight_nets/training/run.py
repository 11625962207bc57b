"""The steps the bundle configs run: fit and keep the best weights, plot training curves."""

from __future__ import annotations

import csv
from pathlib import Path

import lightning.pytorch as pl
import torch

from lightweight_nets.io.files import atomic_path

__all__ = ["fit", "plot_training_curves"]


def fit(
    trainer: pl.Trainer,
    module: pl.LightningModule,
    datamodule: pl.LightningDataModule,
    model_file: str | Path,
    resume_from: str | Path | None = None,
) -> Path:
    """Train (from the Lightning checkpoint ``resume_from`` when given, e.g. a run's ``checkpoints/last.ckpt``: its
    latest epoch), reload the best checkpoint (lowest validation loss) and save the network's state dict to
    ``model_file`` (atomically); also plot the training curves beside the logs."""
    # the run's own checkpoint holds MONAI objects beside the tensors (the module's hyperparameters): not weights-only
    trainer.fit(
        module, datamodule=datamodule, ckpt_path=None if resume_from is None else str(resume_from), weights_only=False
    )
    # the checkpoint that monitors the validation loss (the bundles' other one keeps each epoch's last.ckpt to resume)
    best = next((c.best_model_path for c in trainer.checkpoint_callbacks if c.monitor), "")
    if best:
        state = torch.load(best, map_location="cpu", weights_only=False)["state_dict"]
        module.load_state_dict(state)
    if trainer.is_global_zero:
        with atomic_path(model_file) as tmp:
            torch.save(module.net.state_dict(), tmp)
        if trainer.logger is not None and trainer.logger.log_dir:
            metrics = Path(trainer.logger.log_dir) / "metrics.csv"
            if metrics.is_file():
                plot_training_curves(metrics, Path(trainer.logger.log_dir) / "training_curves.png")
    return Path(model_file)


def plot_training_curves(metrics_csv: str | Path, png: str | Path) -> Path:
    """Loss and Dice per epoch from Lightning's CSV log, saved as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: dict[str, dict[int, float]] = {}
    with open(metrics_csv, newline="") as f:
        for row in csv.DictReader(f):
            for key in ("train_loss", "val_loss", "val_dice", "feature_loss"):
                if row.get(key):
                    series.setdefault(key, {})[int(row["epoch"])] = float(row[key])
    fig, (ax_loss, ax_dice) = plt.subplots(1, 2, figsize=(10, 4))
    for key in ("train_loss", "val_loss", "feature_loss"):
        if key in series:
            ax_loss.plot(list(series[key]), list(series[key].values()), label=key)
    if "val_dice" in series:
        ax_dice.plot(list(series["val_dice"]), list(series["val_dice"].values()), label="val_dice", color="C2")
    ax_loss.set(xlabel="epoch", ylabel="loss", title="Loss")
    ax_dice.set(xlabel="epoch", ylabel="Dice", title="Validation Dice")
    ax_loss.legend()
    ax_dice.legend()
    fig.tight_layout()
    with atomic_path(png) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return Path(png)
