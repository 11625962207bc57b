"""``python -m benchmarks.peers``: the fetal-head nets against what users would pick instead (issue 17) ->
docs/benchmarks_peers.md (+ .json, + .png).

Peers: MONAI's UNet as in the spleen bundle, MONAI's BasicUNet (its defaults), nnU-Net's default 2D PlainConvUNet
for a 256 x 256 input, and segmentation-models-pytorch's Unet with MobileNetV2 and EfficientNet-B0 encoders (no
pretrained weights, nothing downloaded). Ours: the fetal-head bundle's served network (the 32-channel thin separable
student at 128 x 128), the same network at 16 channels (the 0.4.0 default), the 0.3.0 default (32 channels at
256 x 256) and the distillation teacher. Every net at
each input size (one grey frame, batch 1) on ONNX Runtime fp32 (the app's default backend), PyTorch eager fp32,
PyTorch eager under bf16 autocast in channels-last, and OpenVINO fp32 where it imports. ONNX Runtime's and
OpenVINO's outputs are checked against PyTorch's (atol 1e-3) before any timing; bf16 is judged by its masks on real
HC18 images instead. Then every net and backend takes a turn in each of the interleaved rounds after a warm-up (a
sleep, an untimed run, a few timed runs back to back), so that load from other processes falls on all alike and no
backend's spinning threads slow the next one.

Accuracy comes from the fetal-head bundle's ``configs/train_jobs.json`` jobs whose weights exist: the bundle's
``evaluate.json`` (HC18 validation split: Dice, HC error in mm), cached in the JSON by the weights' and the config
files' SHA-256, so a re-run evaluates only new weights or changed configs, ``--accuracy-only`` does just that
into the saved results (the timings kept), and ``--from-json`` rewrites the report without measuring. Untrained
peers get speed only.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from monai.utils import optional_import

from benchmarks import NotACheckoutError, checkout, machine_line
from benchmarks.backends import Bf16ChannelsLastPredictor, OpenVinoPredictor, outputs_match
from lightweight_nets.errors import first_line
from lightweight_nets.export import export_onnx
from lightweight_nets.inference.predictors import OnnxRuntimePredictor, Predictor, TorchPredictor, load_weights
from lightweight_nets.io.files import atomic_path
from lightweight_nets.io.images import read_image
from lightweight_nets.profile import count_flops, count_parameters, markdown_table
from lightweight_nets.training.train_all import JOBS_CONFIG, bundle_jobs, job_overrides
from lightweight_nets.training.train_job import evaluate, job_config

__all__ = [
    "BACKENDS",
    "CONTENDERS",
    "Contender",
    "Row",
    "bundle_job",
    "checked_predictors",
    "measure",
    "evaluate_jobs",
    "write_report",
    "main",
]

BUNDLE = ("bundle", "fetal_head_us")
BACKENDS = ("onnx", "torch", "torch-bf16", "openvino")  # the tables' column order
BACKEND_TITLES = {
    "onnx": "ORT fp32",
    "torch": "PyTorch fp32",
    "torch-bf16": "PyTorch bf16 + channels-last",
    "openvino": "OpenVINO fp32",
}
BASELINE = "monai_unet"  # the speed-ups are over it at the largest input size
TARGET_FPS, TARGET_SPEEDUP = 150.0, 3.0  # issue 17: the default on 2 threads
TARGET_DICE_GAP = 0.005  # issue 17: the default within 0.5 Dice points of the best model shipped
ATOL = 1e-3
SETTLE_MS = 50.0  # libgomp spins about 300,000 times (milliseconds) after a parallel region before it sleeps
TURN_RUNS = 3


@dataclass(frozen=True)
class Contender:
    """One net of the comparison.

    Args:
        name: its row label.
        ours: one of this project's nets (else a peer).
        description: what it is, for the report.
        jobs: fetal-head ``train_jobs.json`` jobs: the first one's ``network_def`` builds the net, and every job's
            weights that exist are evaluated; the first existing ones are loaded for timing.
        build: builds the net where there is no job.
        export: for a peer that does not import beside this project's torch: builds and exports it at an input
            side, in a folder, in its own venv (:class:`ExportedPeer`); it is timed on its ONNX export only.
    """

    name: str
    ours: bool
    description: str
    jobs: tuple[str, ...] = ()
    build: Callable[[], nn.Module] | None = None
    export: Callable[[int, Path], ExportedPeer] | None = None

    def network(self) -> nn.Module:
        if self.build is not None:
            return self.build().eval()
        return self._config().get_parsed_content("network_def").eval()

    def size(self) -> int:
        """The input side the net is meant to run at (the targets are checked there): its first job's
        ``preprocessing#spatial_size``, 256 for a net without a job."""
        return int(self._config().get_parsed_content("preprocessing").spatial_size[0]) if self.jobs else 256

    def _config(self):
        job, _ = bundle_job(self.jobs[0])
        return job_config(job, job["configs"])

    def trained_weights(self) -> Path | None:
        existing = [weights for weights in (bundle_job(name)[1] for name in self.jobs) if weights.is_file()]
        return existing[0] if existing else None


def _basic_unet() -> nn.Module:
    from monai.networks.nets import BasicUNet

    return BasicUNet(spatial_dims=2, in_channels=1, out_channels=1)


def _plain_conv_unet() -> nn.Module:
    """nnU-Net's 2D plan for a 256 x 256 input: 7 stages, 32-512 features, 2 convs per stage both ways."""
    from dynamic_network_architectures.architectures.unet import PlainConvUNet

    return PlainConvUNet(
        input_channels=1,
        n_stages=7,
        features_per_stage=(32, 64, 128, 256, 512, 512, 512),
        conv_op=nn.Conv2d,
        kernel_sizes=3,
        strides=(1, 2, 2, 2, 2, 2, 2),
        n_conv_per_stage=2,
        num_classes=1,
        n_conv_per_stage_decoder=2,
        conv_bias=True,
        norm_op=nn.InstanceNorm2d,
        norm_op_kwargs={"eps": 1e-5, "affine": True},
        nonlin=nn.LeakyReLU,
        nonlin_kwargs={"inplace": True},
        deep_supervision=False,
    )


@dataclass(frozen=True)
class ExportedPeer:
    """A peer exported in its own venv: the ONNX model, the frame it was checked on and its PyTorch fp32 logits
    there, its parameter count and GFLOPs, and that venv's torch."""

    onnx_path: Path
    batch: torch.Tensor
    logits: torch.Tensor
    parameters: int
    gflops: float
    torch: str


SMP_VENV = ".venv-smp"  # `make venv-smp`, from benchmarks/smp/requirements.txt


def _smp_export(encoder: str, size: int, folder: Path) -> ExportedPeer:
    """segmentation-models-pytorch's ``Unet`` with ``encoder`` (random weights), built and exported by
    ``benchmarks/smp/export.py`` in its venv: its torchvision does not load beside this project's CPU torch."""
    python = checkout() / SMP_VENV / "bin" / "python"
    if not python.is_file():
        raise FileNotFoundError(
            f"{python}: no such venv (make venv-smp); segmentation-models-pytorch needs torchvision, which does not "
            "load beside this project's CPU torch"
        )
    out = folder / f"smp_{encoder}_{size}"
    run = subprocess.run(
        [str(python), str(checkout("benchmarks", "smp", "export.py")), encoder, str(size), str(out)],
        env={**os.environ, "PYTHONPATH": str(checkout())},
        capture_output=True,
        text=True,
    )
    if run.returncode:
        last = (run.stderr.strip().splitlines() or ["no message"])[-1]
        raise RuntimeError(f"benchmarks/smp/export.py {encoder} {size}: {last}")
    check = np.load(out / "check.npz")
    return ExportedPeer(
        out / "net.onnx",
        torch.from_numpy(check["batch"]),
        torch.from_numpy(check["logits"]),
        int(check["parameters"]),
        float(check["gflops"]),
        str(check["torch"]),
    )


CONTENDERS = (
    Contender(
        "monai_unet",
        False,
        "MONAI `UNet` as in the spleen bundle (channels 16-256, strides 2, 2 residual units, batch norm)",
        jobs=("monai_unet_128",),
    ),
    Contender("monai_basic_unet", False, "MONAI `BasicUNet`, its defaults", build=_basic_unet),
    Contender(
        "nnunet_plain_conv_unet",
        False,
        "nnU-Net's 2D `PlainConvUNet` for 256 x 256 (7 stages, 32-512 features, instance norm)",
        build=_plain_conv_unet,
    ),
    Contender(
        "smp_unet_mobilenet_v2",
        False,
        "segmentation-models-pytorch `Unet`, MobileNetV2 encoder",
        export=partial(_smp_export, "mobilenet_v2"),
    ),
    Contender(
        "smp_unet_efficientnet_b0",
        False,
        "segmentation-models-pytorch `Unet`, EfficientNet-B0 encoder",
        export=partial(_smp_export, "efficientnet-b0"),
    ),
    Contender(
        "served",
        True,
        "the served fetal-head network (`inference.json` `network_def`: `thin_separable_student`, 32 channels)",
        jobs=("model",),
    ),
    Contender(
        "student16",
        True,
        "the 0.4.0 default: the same network at 16 channels, trained without and with distillation",
        jobs=("student16_128", "distilled"),
    ),
    Contender(
        "previous_default",
        True,
        "the 0.3.0 default: `thin_separable_student`, 32 channels, at 256 x 256",
        jobs=("student32_256_distilled", "student32_256"),
    ),
    Contender("teacher", True, "`thin_unet`, 32 channels (the distillation teacher)", jobs=("teacher",)),
)


def bundle_job(name: str, run_dir: Path | None = None) -> tuple[dict, Path]:
    """Job ``name`` of the fetal-head bundle's ``configs/train_jobs.json`` as
    :func:`~lightweight_nets.training.train_job.evaluate` takes it, and the path of its weights."""
    bundle = checkout(*BUNDLE)
    jobs = bundle_jobs(bundle)
    if name not in jobs:
        raise ValueError(f"{bundle / JOBS_CONFIG}: no job {name!r}")
    spec = jobs[name]
    job = {
        "bundle": str(bundle),
        "configs": spec["configs"],
        "overrides": job_overrides(bundle, spec),
        "run_dir": str(run_dir),
    }
    return job, bundle / spec["weights"]


@dataclass
class Row:
    """One net at one input size: its cost and its latencies per backend."""

    net: str
    ours: bool
    size: int
    parameters: int
    gflops: float
    latencies_ms: dict[str, list[float]] = field(default_factory=dict)  # by backend
    errors: dict[str, str] = field(default_factory=dict)  # by backend: why it was not timed

    def median_ms(self, backend: str) -> float | None:
        times = self.latencies_ms.get(backend)
        return float(np.median(times)) if times else None

    def best(self) -> str:
        """The backend with the lowest median latency."""
        return min(self.latencies_ms, key=self.median_ms)


def checked_predictors(
    net: nn.Module, batch: torch.Tensor, onnx_path: Path | None, threads: int
) -> tuple[dict[str, Predictor], dict[str, str]]:
    """The backends of ``net`` (exported to ``onnx_path``; None where the export failed) for ``batch``'s shape,
    and why any is left out: ONNX Runtime and OpenVINO only where their output on ``batch`` equals PyTorch's
    within :data:`ATOL`."""
    eager = TorchPredictor(net, "torch")
    predictors: dict[str, Predictor] = {"torch": eager, "torch-bf16": Bf16ChannelsLastPredictor(net)}
    if onnx_path is None:
        return predictors, {}
    exported, errors = onnx_predictors(onnx_path, batch, eager.predict(batch), threads)
    return {**predictors, **exported}, errors


def onnx_predictors(
    onnx_path: Path, batch: torch.Tensor, reference: torch.Tensor, threads: int
) -> tuple[dict[str, Predictor], dict[str, str]]:
    """ONNX Runtime and OpenVINO on an ONNX model for ``batch``'s shape, each only where its output on ``batch``
    equals ``reference`` (the PyTorch fp32 logits) within :data:`ATOL`, and why any is left out."""
    predictors: dict[str, Predictor] = {}
    makers = {"onnx": lambda: OnnxRuntimePredictor(onnx_path, threads)}
    if optional_import("openvino")[1]:
        makers["openvino"] = lambda: OpenVinoPredictor(onnx_path, tuple(batch.shape), threads)
    errors = {}
    for backend, make in makers.items():
        try:
            predictor = make()
            outputs_match(f"{onnx_path.name} on {BACKEND_TITLES[backend]}", reference, predictor.predict(batch), ATOL)
        except Exception as error:  # a backend that fails on one net must not end the run
            errors[backend] = first_line(error)
            continue
        predictors[backend] = predictor
    return predictors, errors


def measure(
    contenders: list[Contender],
    sizes: list[int],
    rounds: int,
    warmup: int,
    threads: int,
    log: Callable[[str], None],
    turn_runs: int = TURN_RUNS,
    settle_ms: float = SETTLE_MS,
) -> tuple[list[Row], dict[str, str]]:
    """Every net at every size on every backend, in interleaved rounds: in each round each of them takes a turn of
    ``settle_ms`` of sleep (the last turn's spinning threads go idle), one untimed run (its own threads wake) and
    ``turn_runs`` timed runs back to back, as frames run in a serving process. Returns the rows and, by net, why
    a net or a net at one size was not measured at all."""
    torch.set_num_threads(threads)
    rows, skipped, timed = [], {}, []  # timed: (row, backend, predictor, batch)
    generator = torch.Generator().manual_seed(0)
    with tempfile.TemporaryDirectory() as folder:
        for contender in contenders:
            if contender.export is not None:
                timed += _exported_rows(contender, sizes, Path(folder), threads, rows, skipped, log)
                continue
            try:
                net = contender.network()
                weights = contender.trained_weights()
                if weights is not None:
                    load_weights(net, weights)
            except Exception as error:  # e.g. a peer's package does not import
                skipped[contender.name] = f"{type(error).__name__}: {first_line(error)}"
                log(f"{contender.name}: skipped, {skipped[contender.name]}")
                continue
            for size in sizes:
                batch = torch.rand(1, 1, size, size, generator=generator)
                try:
                    gflops = count_flops(net, batch) / 1e9
                except (ValueError, RuntimeError) as error:  # the net's own size rule
                    skipped[f"{contender.name} {size} x {size}"] = first_line(error)
                    continue
                row = Row(contender.name, contender.ours, size, count_parameters(net), gflops)
                rows.append(row)
                log(f"{contender.name} {size} x {size}: exporting and checking the backends")
                onnx_path = Path(folder) / f"{contender.name}_{size}.onnx"
                try:
                    export_onnx(net, onnx_path, batch)
                except Exception as error:  # ONNX Runtime and OpenVINO need the export; PyTorch does not
                    row.errors["onnx"] = f"ONNX export failed: {type(error).__name__}: {first_line(error)}"
                    onnx_path = None
                predictors, errors = checked_predictors(net, batch, onnx_path, threads)
                row.errors.update(errors)
                timed += [(row, backend, predictor, batch) for backend, predictor in predictors.items()]
        log(f"timing {len(timed)} net x size x backend combinations: {warmup} warm-up runs, {rounds} rounds")
        for _, _, predictor, batch in timed:
            for _ in range(warmup):
                predictor.predict(batch)
        for _ in range(rounds):
            for row, backend, predictor, batch in timed:
                time.sleep(settle_ms / 1000.0)
                predictor.predict(batch)
                for _ in range(turn_runs):
                    start = time.perf_counter()
                    predictor.predict(batch)
                    row.latencies_ms.setdefault(backend, []).append(1000.0 * (time.perf_counter() - start))
    return rows, skipped


def _exported_rows(
    contender: Contender,
    sizes: list[int],
    folder: Path,
    threads: int,
    rows: list[Row],
    skipped: dict[str, str],
    log: Callable[[str], None],
) -> list[tuple[Row, str, Predictor, torch.Tensor]]:
    """A peer exported in its own venv at every size: its rows (added to ``rows``, or why not to ``skipped``) and
    what to time, its ONNX backends checked against its own venv's PyTorch logits."""
    timed = []
    for size in sizes:
        log(f"{contender.name} {size} x {size}: exporting in its own venv and checking the backends")
        try:
            peer = contender.export(size, folder)
        except Exception as error:  # no venv, or the export failed: the rest of the run goes on
            skipped[contender.name] = f"{type(error).__name__}: {first_line(error)}"
            log(f"{contender.name}: skipped, {skipped[contender.name]}")
            return timed
        row = Row(contender.name, contender.ours, size, peer.parameters, peer.gflops)
        rows.append(row)
        predictors, row.errors = onnx_predictors(peer.onnx_path, peer.batch, peer.logits, threads)
        for backend in ("torch", "torch-bf16"):
            row.errors[backend] = f"built in its own venv (torch {peer.torch}, torchvision): timed on its ONNX export"
        timed += [(row, backend, predictor, peer.batch) for backend, predictor in predictors.items()]
    return timed


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _bf16_pixel_agreement(net: nn.Module, preprocessing) -> float:
    """Fraction of pixels whose mask (logit > 0) is the same in bf16 + channels-last as in fp32, over the HC18
    sample images (samples/hc18) at the net's own input grid."""
    images = sorted(checkout("samples", "hc18", "images").glob("*.png"))
    batch = torch.cat([preprocessing(read_image(path).pixels) for path in images])
    fp32 = TorchPredictor(net, "torch").predict(batch) > 0
    bf16 = Bf16ChannelsLastPredictor(net).predict(batch) > 0
    return float((fp32 == bf16).float().mean())


def evaluate_jobs(
    contenders: list[Contender], cached: dict[str, dict], limit: int | None, log: Callable[[str], None]
) -> dict[str, dict]:
    """By job: the HC18 validation Dice and HC error of every job's existing weights (``evaluate.json``) and their
    bf16 mask agreement; an entry of ``cached`` with the same weights (SHA-256), job setup (its config files, their
    contents and its overrides) and ``limit`` is reused."""
    results = {}
    for contender in contenders:
        for name in contender.jobs:
            with tempfile.TemporaryDirectory() as run_dir:
                job, weights = bundle_job(name, Path(run_dir))
                if not weights.is_file():
                    continue
                digest = _sha256(weights)
                configs = Path(job["bundle"]) / "configs"  # their contents too: a changed measurement re-evaluates
                files = {file: _sha256(configs / file) for file in [*job["configs"], "evaluate.json"]}
                setup = json.dumps([job["configs"], job["overrides"], files], sort_keys=True)
                kept = cached.get(name, {})
                if kept.get("sha256") == digest and kept.get("setup") == setup and kept.get("limit") == limit:
                    results[name] = {**kept, "net": contender.name, "ours": contender.ours}  # the row it is in now
                    continue
                log(f"{name}: evaluating {weights.name} on the HC18 validation split")
                job["limit"] = limit
                summary = evaluate(job, weights)
                parser = job_config(job, job["configs"])
                net = load_weights(parser.get_parsed_content("network_def").eval(), weights)
                preprocessing = parser.get_parsed_content("preprocessing")
                results[name] = {
                    "net": contender.name,
                    "ours": contender.ours,
                    "size": int(preprocessing.spatial_size[0]),
                    "weights": str(weights.relative_to(checkout(*BUNDLE))),
                    "sha256": digest,
                    "setup": setup,
                    "limit": limit,
                    "images": summary["images"],
                    "dice": summary["dice"]["mean"],
                    "hc_abs_diff_mm": summary["hc_abs_diff_mm"]["mean"],
                    "bf16_pixel_agreement": _bf16_pixel_agreement(net, preprocessing),
                }
    return results


def _cell(row: Row, backend: str) -> str:
    median = row.median_ms(backend)
    return "-" if median is None else f"{median:.1f} ({1000 / median:.0f})"


def _baseline(rows: list[Row]) -> Row | None:
    """MONAI UNet at the largest input size measured: what the speed-ups are over."""
    candidates = [r for r in rows if r.net == BASELINE]
    return max(candidates, key=lambda r: r.size) if candidates else None


def _speed_table(rows: list[Row], backends: list[str]) -> str:
    baseline = _baseline(rows)
    header = ["net", "", "input", "parameters", "GFLOPs", *[f"{BACKEND_TITLES[b]} ms (fps)" for b in backends], "best"]
    if baseline:
        header += [f"vs MONAI UNet {baseline.size}, ORT", f"vs MONAI UNet {baseline.size}, best"]
    table = []
    for row in sorted(rows, key=lambda r: (-r.size, r.ours, r.net)):
        line = [
            row.net,
            "ours" if row.ours else "peer",
            f"{row.size} x {row.size}",
            f"{row.parameters:,}",
            f"{row.gflops:.2f}",
            *[_cell(row, b) for b in backends],
            BACKEND_TITLES[row.best()],
        ]
        if baseline:
            ort, baseline_ort = row.median_ms("onnx"), baseline.median_ms("onnx")
            line += [
                f"{baseline_ort / ort:.1f}x" if ort and baseline_ort else "-",
                f"{baseline.median_ms(baseline.best()) / row.median_ms(row.best()):.1f}x",
            ]
        table.append(line)
    return markdown_table(header, table)


def _verdict(ok: bool) -> str:
    return f"**{'met' if ok else 'not met'}**"


def _accuracy_target(accuracy: dict[str, dict]) -> str:
    """Issue 17's accuracy clause: the served model (job ``model``) against the most accurate evaluated weights."""
    if "model" not in accuracy:
        return "- the served model (job `model`) was not evaluated in this run\n"
    best_job = max(accuracy, key=lambda name: accuracy[name]["dice"])
    served, best = accuracy["model"]["dice"], accuracy[best_job]["dice"]
    return (
        f"- target within {100 * TARGET_DICE_GAP:.1f} Dice points of the most accurate weights shipped "
        f"(`{best_job}`, `{accuracy[best_job]['weights']}`: {best:.4f}), served `model`: {served:.4f}, "
        f"{100 * (served - best):+.2f} points {_verdict(best - served <= TARGET_DICE_GAP)}\n"
    )


def _targets(rows: list[Row], threads: int) -> str:
    """Issue 17's aims, for each of our nets at the size it is meant to run at."""
    baseline, lines = _baseline(rows), []
    for contender in CONTENDERS:
        if not contender.ours:
            continue
        size = contender.size()
        row = next((r for r in rows if r.net == contender.name and r.size == size), None)
        if row is None:
            lines.append(f"- `{contender.name}` at {size} x {size}: not in this run")
            continue
        ort, best = row.median_ms("onnx"), row.median_ms(row.best())
        where = f"`{row.net}` at {row.size} x {row.size}"
        if ort:
            lines.append(
                f"- target >= {TARGET_FPS:.0f} fps on {threads} threads, {where}: ORT fp32 {1000 / ort:.0f} fps "
                f"{_verdict(1000 / ort >= TARGET_FPS)}; best backend ({BACKEND_TITLES[row.best()]}) "
                f"{1000 / best:.0f} fps {_verdict(1000 / best >= TARGET_FPS)}"
            )
        if baseline:
            versus = f"MONAI UNet at {baseline.size} x {baseline.size}"
            best_speedup = baseline.median_ms(baseline.best()) / best
            ort_part = ""
            if ort and baseline.median_ms("onnx"):
                ort_speedup = baseline.median_ms("onnx") / ort
                ort_part = f"both on ORT fp32 {ort_speedup:.1f}x {_verdict(ort_speedup >= TARGET_SPEEDUP)}; "
            lines.append(
                f"- target >= {TARGET_SPEEDUP:.0f}x {versus}, {where}: {ort_part}each on its best backend "
                f"{best_speedup:.1f}x {_verdict(best_speedup >= TARGET_SPEEDUP)}"
            )
    return "\n".join(lines) + "\n"


def _accuracy_table(rows: list[Row], accuracy: dict[str, dict]) -> str:
    header = ["job", "net", "input", "weights", "images", "Dice", "HC error (mm)", "bf16 vs fp32 pixels equal"]
    table = [
        [
            name,
            a["net"],
            f"{a['size']} x {a['size']}",
            a["weights"],
            str(a["images"]),
            f"{a['dice']:.4f}",
            f"{a['hc_abs_diff_mm']:.2f}",
            f"{100 * a['bf16_pixel_agreement']:.2f}%",
        ]
        for name, a in accuracy.items()
    ]
    return markdown_table(header, table)


def _chart(rows: list[Row], accuracy: dict[str, dict], path: Path) -> bool:
    """Dice and HC error against fps (log x) of every evaluated job, at its own input size: filled on its net's
    best backend, hollow on ORT fp32; peers and ours in different markers. False where nothing was evaluated."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = []
    for name, a in accuracy.items():
        row = next((r for r in rows if r.net == a["net"] and r.size == a["size"]), None)
        if row is not None:
            points.append((name, a, row))
    if not points:
        return False
    figure, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for axis, metric, title in zip(axes, ("dice", "hc_abs_diff_mm"), ("Dice", "HC error (mm, lower is better)")):
        for name, a, row in points:
            marker, color = ("o", "C0") if a["ours"] else ("s", "C3")
            best = 1000 / row.median_ms(row.best())
            axis.scatter(best, a[metric], marker=marker, color=color)
            if row.median_ms("onnx"):
                ort = 1000 / row.median_ms("onnx")
                axis.scatter(ort, a[metric], marker=marker, facecolors="none", edgecolors=color)
                axis.plot([ort, best], [a[metric]] * 2, color=color, linewidth=0.6)
            label = f"{name} ({a['size']})"
            axis.annotate(label, (best, a[metric]), fontsize=7, xytext=(3, 3), textcoords="offset points")
        axis.axvline(TARGET_FPS, color="grey", linestyle="--", linewidth=0.8, label=f"{TARGET_FPS:.0f} fps target")
        axis.set(xscale="log", xlabel="frames per second (2 threads)", ylabel=title, title=f"HC18 validation {title}")
    axes[0].scatter([], [], marker="o", color="C0", label="ours, best backend")
    axes[0].scatter([], [], marker="s", color="C3", label="peer, best backend")
    axes[0].scatter([], [], marker="o", facecolors="none", edgecolors="grey", label="ORT fp32 (hollow)")
    axes[0].legend(fontsize=8)
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=100)
    plt.close(figure)
    return True


def write_report(saved: dict, markdown: Path) -> list[Path]:
    """The Markdown report and the chart beside it from a saved run (see :func:`main`); returns the files written."""
    rows = [Row(**row) for row in saved["rows"]]
    backends = [b for b in BACKENDS if any(b in r.latencies_ms for r in rows)]
    png = markdown.with_suffix(".png")
    charted = _chart(rows, saved["accuracy"], png)
    sections = [
        "# Our fetal-head nets against the peers\n",
        f"Generated by `{saved['command']}`. {saved['environment']}\n",
        f"One grey frame (batch 1), {saved['threads']} threads (ONNX Runtime intra-op, torch, OpenVINO), fp32 unless "
        "said. ONNX Runtime and OpenVINO run the net's ONNX export (opset 21, `lightweight_nets.export.export_onnx`); "
        f"their outputs were checked against PyTorch fp32 (max abs difference <= {ATOL:g}) before timing. bf16 is "
        "PyTorch eager under `torch.autocast('cpu', dtype=torch.bfloat16)` with the net and input in channels-last; "
        "its masks are compared with fp32 below. segmentation-models-pytorch's nets are built and exported in "
        "a venv of their own (`benchmarks/smp`, `make venv-smp`: their torchvision does not load beside this "
        "project's CPU torch), checked against that venv's PyTorch and timed on their ONNX export. "
        f"{saved['rounds']} interleaved rounds after {saved['warmup']} warm-up runs each; in each round every net "
        f"and backend took a turn: {saved['settle_ms']:g} ms of sleep, one untimed run, then "
        f"{saved['turn_runs']} timed runs back to back, as a serving process runs frames; median ms "
        "(fps = 1000 / median). Nets with trained weights (see Accuracy) carry them, the others random ones (the "
        "speed is the same). The sleep and the untimed run are there because each backend's threads keep spinning "
        "after its runs (PyTorch's OpenMP ones for milliseconds) and take the cores from the next backend: timed "
        "right after a PyTorch turn the served net ran 4.2-6.5 ms instead of 2.9 (2026-12-06). "
        f"OMP_WAIT_POLICY is named above: `PASSIVE` stops the spinning but slows PyTorch itself.\n",
        "## Targets (issue 17)\n",
        _targets(rows, saved["threads"]) + _accuracy_target(saved.get("accuracy", {})),
        "## Speed\n",
        _speed_table(rows, backends),
        "\n".join(f"- `{c.name}`: {c.description}" for c in CONTENDERS if any(r.net == c.name for r in rows)) + "\n",
    ]
    problems = [f"- `{what}`: {why}" for what, why in saved["not_measured"].items()]
    problems += [
        f"- `{r.net}` {r.size} x {r.size}, {BACKEND_TITLES[b]}: {why}" for r in rows for b, why in r.errors.items()
    ]
    if problems:
        sections += ["## Not measured\n", "\n".join(problems) + "\n"]
    sections += [
        "## Accuracy\n",
        "The fetal-head bundle's `train_jobs.json` jobs whose weights exist, through the bundle's `evaluate.json` "
        "(HC18 validation split, each at its own input size, PyTorch fp32): mean Dice and mean absolute head "
        "circumference error. bf16 vs fp32: pixels whose mask (logit > 0) is the same, over the HC18 samples in "
        "`samples/hc18`.\n",
        _accuracy_table(rows, saved["accuracy"]) if saved["accuracy"] else "No trained weights found.\n",
    ]
    if charted:
        sections.append(f"![accuracy vs speed]({png.name})\n")
    with atomic_path(markdown) as tmp:
        tmp.write_text("\n".join(sections))
    return [markdown, *([png] if charted else [])]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.peers", description=__doc__.splitlines()[0])
    parser.add_argument("--nets", nargs="+", default=None, help="nets to measure (default: all)")
    parser.add_argument("--sizes", nargs="+", type=int, default=[256, 128], help="input sides (default: 256 128)")
    parser.add_argument("--rounds", type=int, default=30, help="timed rounds (default: 30)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed runs of each before the rounds (default: 3)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads of every backend (default: 2)")
    parser.add_argument("--turn-runs", type=int, default=TURN_RUNS, help=f"timed runs in a turn (default: {TURN_RUNS})")
    parser.add_argument(
        "--settle-ms",
        type=float,
        default=SETTLE_MS,
        help=f"sleep before each turn, for the last turn's spinning threads to go idle (default: {SETTLE_MS:g})",
    )
    parser.add_argument("--limit", type=int, default=None, help="validation images per evaluation (default: all)")
    parser.add_argument("--markdown", type=Path, default=Path("docs/benchmarks_peers.md"), help="report to write")
    parser.add_argument("--from-json", action="store_true", help="rewrite the report from the saved results")
    parser.add_argument(
        "--accuracy-only",
        action="store_true",
        help="evaluate what changed (weights, configs) into the saved results and rewrite the report; no timing",
    )
    args = parser.parse_args(argv)
    raw = args.markdown.with_suffix(".json")
    names = [c.name for c in CONTENDERS]
    unknown = sorted(set(args.nets or []) - set(names))
    if unknown:
        parser.error(f"unknown net(s) {', '.join(unknown)}; known: {', '.join(names)}")
    log = partial(print, file=sys.stderr, flush=True)
    contenders = [c for c in CONTENDERS if args.nets is None or c.name in args.nets]
    if not args.from_json:
        try:
            checkout(*BUNDLE)
        except NotACheckoutError as error:
            sys.exit(f"error: {error}")
    if args.from_json or args.accuracy_only:
        if not raw.is_file():
            parser.error(f"{raw}: no saved results to rewrite the report from")
        saved = json.loads(raw.read_text())
        if args.accuracy_only:
            saved["accuracy"] = {**saved["accuracy"], **evaluate_jobs(contenders, saved["accuracy"], args.limit, log)}
    else:
        cached = json.loads(raw.read_text()).get("accuracy", {}) if raw.is_file() else {}
        started = datetime.now(UTC)
        rows, skipped = measure(
            contenders, args.sizes, args.rounds, args.warmup, args.threads, log, args.turn_runs, args.settle_ms
        )
        accuracy = evaluate_jobs(contenders, cached, args.limit, log)
        openvino, found = optional_import("openvino")
        saved = {
            "command": f"python -m benchmarks.peers {shlex.join(sys.argv[1:] if argv is None else argv)}".strip(),
            "environment": machine_line(started)
            + (f" OpenVINO {openvino.__version__}." if found else "")
            + f" OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')}.",
            "threads": args.threads,
            "rounds": args.rounds,
            "warmup": args.warmup,
            "turn_runs": args.turn_runs,
            "settle_ms": args.settle_ms,
            "rows": [asdict(row) for row in rows],
            "not_measured": skipped,
            "accuracy": accuracy,
        }
    if not args.from_json:
        with atomic_path(raw) as tmp:
            tmp.write_text(json.dumps(saved, indent=1))
        print(f"wrote {raw}")
    for path in write_report(saved, args.markdown):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
