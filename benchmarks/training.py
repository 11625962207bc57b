"""``python -m benchmarks.training``: seconds per training step on this CPU, for each memory layout and precision.

The fetal-head student (supervised, and distilled from its thin U-Net teacher, whose forward pass every
distillation step pays too) is trained for a few steps by the bundles' own Lightning modules and Trainer on
random 256 x 256 batches of 8: fp32 in PyTorch's default layout (the bundles' training before), channels-last,
bf16 autocast (Lightning ``precision="bf16-mixed"``), and both. With ``--zoo3d``: every network of the
hippocampus bundle's 3D zoo (served, teacher, ``experiments/experiments.json``) through that bundle's own
``configs/train.json`` module (loss, optimiser, channels-last) on random patches of its patch size and step
size, fp32 against bf16 autocast: which 3D nets bf16 speeds up, and which it slows down. Data loading is left out
(the items are in memory), so the tables isolate the network's forward, backward and optimiser step. Writes
docs/benchmarks_training.md (``--zoo3d``: docs/benchmarks_training_3d.md) and a bar chart beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader

from benchmarks import checkout
from lightweight_nets import create_net
from lightweight_nets.bundle import BundleSpec, read_bundle_configs
from lightweight_nets.io.files import atomic_path
from lightweight_nets.profile import markdown_table
from lightweight_nets.training.module import DistillationModule, SegmentationModule
from lightweight_nets.transforms import Postprocessing

__all__ = ["SETTINGS", "SETTINGS_3D", "StepTimer", "seconds_per_step", "student_modules", "zoo3d_modules", "main"]

# (title, channels_last, Lightning precision)
SETTINGS = (
    ("fp32, default layout", False, "32-true"),
    ("fp32, channels-last", True, "32-true"),
    ("bf16 autocast, default layout", False, "bf16-mixed"),
    ("bf16 autocast, channels-last", True, "bf16-mixed"),
)
# 3D: the hippocampus recipe trains channels-last (3x faster 3D depthwise convolutions); only the precision varies
SETTINGS_3D = (("fp32, channels-last", True, "32-true"), ("bf16 autocast, channels-last", True, "bf16-mixed"))
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
    """Random images and label maps (labels 0 to ``labels``) already in memory, so that only the step is timed."""

    def __init__(self, items: int, batch_size: int, shape: tuple[int, ...], labels: int = 1):
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.train_set = [
            {
                "image": torch.rand(1, *shape, generator=generator),
                "label": torch.randint(0, labels + 1, (1, *shape), generator=generator).float(),
            }
            for _ in range(items)
        ]
        self.batch_size = batch_size

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=False)

    def val_dataloader(self) -> DataLoader:  # one batch, after the timed steps: the LR schedule monitors val_loss
        return DataLoader(self.train_set[: self.batch_size], batch_size=self.batch_size)


def student_modules(size: int) -> dict[str, tuple]:
    """The 2D runs: ``{title: (make_module(channels_last), image shape, labels, batch size)}`` for the fetal-head
    student, supervised and distilled from its teacher, at ``size`` x ``size``, batches of 8."""
    postprocessing = Postprocessing(activation="sigmoid")

    def student(channels_last: bool) -> SegmentationModule:
        net = create_net(STUDENT, spatial_dims=2, in_channels=1, out_channels=1)
        return SegmentationModule(net, postprocessing=postprocessing, channels_last=channels_last)

    def distilled(channels_last: bool) -> DistillationModule:
        net, teacher = (create_net(name, spatial_dims=2, in_channels=1, out_channels=1) for name in (STUDENT, TEACHER))
        return DistillationModule(net, teacher, postprocessing=postprocessing, channels_last=channels_last)

    return {
        STUDENT: (student, (size, size), 1, 8),
        f"{STUDENT} distilled from {TEACHER}": (distilled, (size, size), 1, 8),
    }


def zoo3d_modules(bundle: Path | None = None) -> dict[str, tuple]:
    """The 3D runs: every network of the hippocampus bundle's zoo (:func:`benchmarks.zoo3d.trained_networks`) in
    the module that bundle's ``configs/train.json`` builds, on its patch size, labels and step size (volumes a
    step x patches a volume); ``{name: (make_module(channels_last), patch shape, labels, batch size)}``."""
    from benchmarks.zoo3d import trained_networks

    bundle = bundle or checkout("bundle", "hippocampus_mr")
    spec = BundleSpec.load(bundle)
    config = read_bundle_configs(bundle, ("inference.json", "train.json"))
    step = config["datamodule"]["batch_size"] * config["datamodule"]["samples_per_volume"]

    def make(network_def: dict):
        def module(channels_last: bool) -> SegmentationModule:
            config["network_def"], config["module#channels_last"] = network_def, channels_last
            return config.get_parsed_content("module", lazy=False)

        return module

    runs, seen = {}, set()
    for name, (_, network_def, _) in trained_networks(bundle).items():
        key = json.dumps(network_def, sort_keys=True)  # a distilled twin trains the same network: timed once
        if key not in seen:
            seen.add(key)
            runs[name] = (make(network_def), tuple(spec.preprocessing.spatial_size), len(spec.segments), step)
    return runs


def seconds_per_step(
    make_module,
    shape: tuple[int, ...],
    labels: int,
    batch_size: int,
    channels_last: bool,
    precision: str,
    steps: int = 6,
    warmup: int = 2,
) -> float:
    """Median seconds per training step after ``warmup`` steps of ``make_module(channels_last)`` on random
    batches of ``batch_size`` items of ``shape``."""
    torch.manual_seed(0)
    module = make_module(channels_last)
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
    trainer.fit(module, datamodule=_InMemoryData((steps + warmup) * batch_size, batch_size, shape, labels))
    return statistics.median(timer.seconds[warmup:])


def _chart(rows: list[tuple[str, str, float]], settings: tuple, png: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = list(dict.fromkeys(run for run, _, _ in rows))
    fig, ax = plt.subplots(figsize=(max(9, 1.4 * len(runs)), 3.5))
    width = 0.8 / len(settings)
    for k, (setting, _, _) in enumerate(settings):
        values = [next(s for r, t, s in rows if r == run and t == setting) for run in runs]
        ax.bar([i + k * width for i in range(len(runs))], values, width, label=setting)
    ax.set_xticks([i + width * (len(settings) - 1) / 2 for i in range(len(runs))], runs, fontsize=8)
    ax.set(ylabel="seconds per step (lower is better)", title=title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(png) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.training", description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6, help="timed steps per setting (after 2 warm-up steps)")
    parser.add_argument("--size", type=int, default=256, help="image side of the 2D runs (a multiple of 64)")
    parser.add_argument(
        "--zoo3d", action="store_true", help="the hippocampus bundle's 3D zoo instead of the 2D student"
    )
    parser.add_argument("--markdown", type=Path, help="default: docs/benchmarks_training.md (--zoo3d: _3d.md)")
    args = parser.parse_args(argv)
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    started = datetime.now(UTC)
    if args.zoo3d:
        runs, settings, suffix = zoo3d_modules(), SETTINGS_3D, "_3d"
        command = f"python -m benchmarks.training --zoo3d --steps {args.steps}"
    else:
        runs, settings, suffix = student_modules(args.size), SETTINGS, ""
        command = f"python -m benchmarks.training --steps {args.steps} --size {args.size}"
    markdown = args.markdown or Path(f"docs/benchmarks_training{suffix}.md")
    rows = []
    for run, (make_module, shape, labels, batch_size) in runs.items():
        for setting, channels_last, precision in settings:
            seconds = seconds_per_step(make_module, shape, labels, batch_size, channels_last, precision, args.steps)
            rows.append((run, setting, seconds))
            print(f"{run}, {setting}: {seconds:.2f} s/step", flush=True)
    table = []
    for run, setting, seconds in rows:
        before = next(s for r, t, s in rows if r == run and t == settings[0][0])
        table.append([run, setting, f"{seconds:.2f}", f"{1 / seconds:.2f}", f"{before / seconds:.1f}x"])
    inputs = {" x ".join(map(str, shape)) + f", batches of {batch}" for _, shape, _, batch in runs.values()}
    png = markdown.with_suffix(".png")
    _chart(rows, settings, png, f"Training step on the CPU, {', '.join(sorted(inputs))}")
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    text = (
        f"# Training speed on the CPU\n\n`{command}`, {started:%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores, "
        f"torch {torch.__version__}, load average at the end {load}. Median of the timed steps; random "
        f"{', '.join(sorted(inputs))} in memory (data loading not included).\n\n"
        + markdown_table(["run", "setting", "s / step", "steps / s", f"vs {settings[0][0]}"], table)
        + f"\n\n![seconds per step]({png.name})\n"
    )
    with atomic_path(markdown) as tmp:
        tmp.write_text(text)
    print(f"wrote {markdown} and {png}")


if __name__ == "__main__":
    main()
