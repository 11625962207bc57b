"""``python -m benchmarks.training``: seconds per training step on this CPU, for each memory layout and precision.

The fetal-head student (supervised, and distilled from its thin U-Net teacher, whose forward pass every
distillation step pays too) is trained for a few steps by the bundles' own Lightning modules and Trainer on
random 256 x 256 batches of 8: fp32 in PyTorch's default layout (the bundles' training before), channels-last,
bf16 autocast (Lightning ``precision="bf16-mixed"``), and both. Data loading is left out (the items are in
memory), so the table isolates the network's forward, backward and optimiser step. Writes
docs/benchmarks_training.md and a bar chart beside it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader

from lightweight_nets import create_net
from lightweight_nets.io.files import atomic_path
from lightweight_nets.profile import markdown_table
from lightweight_nets.training.module import DistillationModule, SegmentationModule
from lightweight_nets.transforms import Postprocessing

__all__ = ["SETTINGS", "StepTimer", "seconds_per_step", "main"]

# (title, channels_last, Lightning precision)
SETTINGS = (
    ("fp32, default layout", False, "32-true"),
    ("fp32, channels-last", True, "32-true"),
    ("bf16 autocast, default layout", False, "bf16-mixed"),
    ("bf16 autocast, channels-last", True, "bf16-mixed"),
)
STUDENT, TEACHER = "thin_separable_student", "thin_unet"


class StepTimer(pl.Callback):
    """Wall seconds of each training batch (forward, loss, backward, optimiser step)."""

    def __init__(self):
        self.seconds: list[float] = []

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        self._started = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self.seconds.append(time.perf_counter() - self._started)


class _InMemoryData(pl.LightningDataModule):
    """Random images and masks already in memory, so that only the step itself is timed."""

    def __init__(self, items: int, batch_size: int, size: int):
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.train_set = [
            {
                "image": torch.rand(1, size, size, generator=generator),
                "label": (torch.rand(1, size, size, generator=generator) > 0.5).float(),
            }
            for _ in range(items)
        ]
        self.batch_size = batch_size

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=False)

    def val_dataloader(self) -> DataLoader:  # one batch, after the timed steps: the LR schedule monitors val_loss
        return DataLoader(self.train_set[: self.batch_size], batch_size=self.batch_size)


def seconds_per_step(
    distill: bool,
    channels_last: bool,
    precision: str,
    steps: int = 6,
    warmup: int = 2,
    batch_size: int = 8,
    size: int = 256,
) -> float:
    """Median seconds per training step after ``warmup`` steps, through the bundles' Lightning module."""
    torch.manual_seed(0)
    net = create_net(STUDENT, spatial_dims=2, in_channels=1, out_channels=1)
    common = {"postprocessing": Postprocessing(activation="sigmoid"), "channels_last": channels_last}
    module = (
        DistillationModule(net, create_net(TEACHER, spatial_dims=2, in_channels=1, out_channels=1), **common)
        if distill
        else SegmentationModule(net, **common)
    )
    timer = StepTimer()
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        precision=precision,
        max_steps=steps + warmup,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timer],
    )
    trainer.fit(module, datamodule=_InMemoryData((steps + warmup) * batch_size, batch_size, size))
    return statistics.median(timer.seconds[warmup:])


def _chart(rows: list[tuple[str, str, float]], png: Path, size: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = list(dict.fromkeys(run for run, _, _ in rows))
    fig, ax = plt.subplots(figsize=(9, 3.5))
    width = 0.8 / len(SETTINGS)
    for k, (title, _, _) in enumerate(SETTINGS):
        values = [next(s for r, t, s in rows if r == run and t == title) for run in runs]
        ax.bar([i + k * width for i in range(len(runs))], values, width, label=title)
    ax.set_xticks([i + width * (len(SETTINGS) - 1) / 2 for i in range(len(runs))], runs)
    ax.set(ylabel="seconds per step (lower is better)", title=f"Training step on the CPU, {size} x {size}, batch 8")
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(png) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.training", description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6, help="timed steps per setting (after 2 warm-up steps)")
    parser.add_argument("--size", type=int, default=256, help="image side (a multiple of 64)")
    parser.add_argument("--markdown", type=Path, default=Path("docs/benchmarks_training.md"))
    args = parser.parse_args(argv)
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    started = datetime.now(UTC)
    rows = []
    for run, distill in ((f"{STUDENT}", False), (f"{STUDENT} distilled from {TEACHER}", True)):
        for title, channels_last, precision in SETTINGS:
            rows.append(
                (run, title, seconds_per_step(distill, channels_last, precision, steps=args.steps, size=args.size))
            )
            print(f"{run}, {title}: {rows[-1][2]:.2f} s/step", flush=True)
    table = []
    for run, title, seconds in rows:
        before = next(s for r, t, s in rows if r == run and t == SETTINGS[0][0])
        table.append([run, title, f"{seconds:.2f}", f"{1 / seconds:.2f}", f"{before / seconds:.1f}x"])
    png = args.markdown.with_suffix(".png")
    _chart(rows, png, args.size)
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    text = (
        f"# Training speed on the CPU\n\n`python -m benchmarks.training --steps {args.steps} --size {args.size}`, "
        f"{started:%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"load average at the end {load}. "
        f"Median of the timed steps; random {args.size} x {args.size} batches of 8 in memory (data loading not "
        "included).\n\n"
        + markdown_table(["run", "setting", "s / step", "steps / s", "vs fp32 default layout"], table)
        + f"\n\n![seconds per step]({png.name})\n"
    )
    with atomic_path(args.markdown) as tmp:
        tmp.write_text(text)
    print(f"wrote {args.markdown} and {png}")


if __name__ == "__main__":
    main()
