"""CPU measurements: every net through every backend, side by side in one run, plus int8 accuracy on real images."""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from benchmarks import checkout
from lightweight_nets.bundle import BundleSpec
from lightweight_nets.errors import first_line
from lightweight_nets.export import export_onnx, export_torchscript, quantize_int8
from lightweight_nets.inference.predictors import BACKENDS, Predictor, TorchPredictor, load_predictor, load_weights
from lightweight_nets.io.images import read_image
from lightweight_nets.profile import MIB, build_net, count_flops, count_parameters, peak_rss_mib, weight_bytes
from lightweight_nets.transforms import Preprocessing, resize_mask

__all__ = ["MEASURED_BACKENDS", "Case", "Timing", "NetResult", "trained_weights", "hc18_images", "benchmark_net"]

# every served backend from eager up (the tables' column order), then int8, which is measured but never served
MEASURED_BACKENDS = (*reversed(BACKENDS), "onnx-int8")
DEFAULT_NETWORK_KEYS = {"_target_", "name", "spatial_dims", "in_channels", "out_channels"}  # a zoo net as registered
CALIBRATION_IMAGES = 4  # the first HC18 samples calibrate int8; the rest measure its accuracy


@dataclass(frozen=True)
class Case:
    """One input size and how hard to measure it."""

    name: str
    shape: tuple[int, ...]
    runs: int  # timed runs per backend and thread count
    warmup: int
    threads: tuple[int, ...]
    peak_rss: bool  # measure the peak RSS of each backend and thread count (one fresh process each)


@dataclass
class Timing:
    case: str
    threads: int
    backend: str
    latencies_ms: list[float]
    peak_rss_mib: float | None = None

    @property
    def median_ms(self) -> float:
        return float(np.median(self.latencies_ms))

    @property
    def p95_ms(self) -> float:
        return float(np.percentile(self.latencies_ms, 95))

    @property
    def fps(self) -> float:
        return 1000.0 / self.median_ms


@dataclass
class NetResult:
    name: str
    parameters: int
    weight_mib: float
    gflops: dict[str, float]  # by case name
    weights: str  # "trained: <file>" or "untrained (random)"
    timings: list[Timing] = field(default_factory=list)
    accuracy: dict[str, float] = field(default_factory=dict)  # Dice vs reference masks, int8 vs fp32 agreement
    errors: dict[str, str] = field(default_factory=dict)  # by case name

    def best(self, case: str, threads: int, fp32_only: bool = False) -> Timing:
        """The fastest backend's timing; ``fp32_only`` leaves out int8 (whose outputs differ)."""
        return min(
            (
                t
                for t in self.timings
                if t.case == case and t.threads == threads and not (fp32_only and t.backend == "onnx-int8")
            ),
            key=lambda t: t.median_ms,
        )

    def timing(self, case: str, threads: int, backend: str) -> Timing:
        return next(t for t in self.timings if (t.case, t.threads, t.backend) == (case, threads, backend))


def _hc18_bundle() -> Path:
    """The checkout's fetal-head bundle: its weights, grid and samples are what the 2D rows measure."""
    return checkout("bundle", "fetal_head_us")


def trained_weights(name: str) -> Path | None:
    """The HC18 state dict the fetal-head bundle ships for net ``name`` at its registered defaults, if any: its
    served model or its teacher (``models/teacher.pt``) where the bundle builds that net with no argument of its
    own (a served net built with arguments of its own, channels say, is not the zoo's default), or an ablation
    (``experiments/<name>.pt``)."""
    bundle = _hc18_bundle()
    spec = BundleSpec.load(bundle)
    served = {
        config.get("name"): bundle / "models" / file
        for config, file in ((spec.network_config, "model.pt"), (spec.teacher_config, "teacher.pt"))
        if set(config) <= DEFAULT_NETWORK_KEYS
    }
    candidate = served.get(name, bundle / "experiments" / f"{name}.pt")
    return candidate if candidate.is_file() else None


def hc18_images(spatial_size: Sequence[int] = (256, 256)) -> tuple[torch.Tensor, torch.Tensor]:
    """The HC18 samples as network inputs ``(N, 1, *spatial_size)`` with the fetal-head bundle's intensity scheme,
    and their reference masks on the same grid: 256 x 256 by default, the grid the zoo's trained weights were made at,
    whatever grid the bundle serves now."""
    preprocessing = Preprocessing(spatial_size, BundleSpec.load(_hc18_bundle()).preprocessing.intensity)
    images = sorted(checkout("samples", "hc18", "images").glob("*.png"))
    inputs = torch.cat([preprocessing(read_image(path).pixels) for path in images])
    masks = torch.stack(
        [
            resize_mask(read_image(checkout("samples", "hc18", "masks", path.name)).pixels, preprocessing.spatial_size)
            for path in images
        ]
    )
    return inputs, masks


def _dice(a: torch.Tensor, b: torch.Tensor) -> float:
    """Dice of two boolean mask stacks, pooled over all frames (1.0 when both are empty)."""
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else float(2 * (a & b).sum() / total)


def _timed_rounds(
    predictors: dict[str, Predictor], batch: torch.Tensor, case: Case, rounds: int = 3
) -> dict[str, list[float]]:
    """``case.runs`` latencies (ms) of each predictor after ``case.warmup`` runs, measured in interleaved rounds so
    that load from other processes on the machine falls on every backend alike."""
    for predictor in predictors.values():
        for _ in range(case.warmup):  # allocations, ORT/TorchScript first-run optimisation
            predictor.predict(batch)
    latencies: dict[str, list[float]] = {backend: [] for backend in predictors}
    for round_index in range(rounds):
        for backend, predictor in predictors.items():
            for _ in range(case.runs // rounds + (round_index < case.runs % rounds)):
                start = time.perf_counter()
                predictor.predict(batch)
                latencies[backend].append(1000.0 * (time.perf_counter() - start))
    return latencies


def _export_all(
    net: torch.nn.Module, folder: Path, example: torch.Tensor, calibration: Sequence[torch.Tensor]
) -> dict[str, Path]:
    """The net as model.pt / model.ts / model.onnx / model_int8.onnx in ``folder``."""
    files = {
        "torch": folder / "model.pt",
        "torchscript": folder / "model.ts",
        "onnx": folder / "model.onnx",
        "onnx-int8": folder / "model_int8.onnx",
    }
    torch.save(net.state_dict(), files["torch"])
    export_torchscript(net, files["torchscript"], example)
    export_onnx(net, files["onnx"], example)
    quantize_int8(files["onnx"], files["onnx-int8"], calibration)
    return files


def benchmark_net(
    name: str, cases: Sequence[Case], log: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True)
) -> NetResult:
    """Measure net ``name`` on every case, thread count and backend; int8 accuracy on the HC18 samples (2D).
    A case the net cannot run (size rule, export or quantisation failure) is logged in ``errors``."""
    weights_file = trained_weights(name)
    inputs, masks = hc18_images()
    first = build_net(name, cases[0].shape)
    result = NetResult(
        name=name,
        parameters=count_parameters(first),
        weight_mib=weight_bytes(first) / MIB,
        gflops={},
        weights=f"trained: {weights_file.name}" if weights_file else "untrained (random)",
    )
    for case in cases:
        net = build_net(name, case.shape)
        if weights_file and len(case.shape) == 4:
            load_weights(net, weights_file)
        batch = torch.rand(*case.shape)
        try:
            result.gflops[case.name] = count_flops(net, batch) / 1e9
        except ValueError as error:  # the net's own size rule
            result.errors[case.name] = str(error)
            continue
        is_2d = len(case.shape) == 4
        # int8 ranges: real images in 2D; there are no 3D samples, so uniform noise (speed only) in 3D
        calibration = inputs[:CALIBRATION_IMAGES].split(1) if is_2d else [torch.rand(*case.shape) for _ in range(2)]
        with tempfile.TemporaryDirectory() as folder:
            log(f"{name} {case.name}: exporting")
            try:
                files = _export_all(net, Path(folder), batch, calibration)
            except Exception as error:  # one failing net or case must not end the whole run
                result.errors[case.name] = f"{type(error).__name__}: {first_line(error)}"
                log(f"{name} {case.name}: skipped, {result.errors[case.name]}")
                continue
            for count in case.threads:
                predictors = {backend: load_predictor(files[backend], net, count) for backend in MEASURED_BACKENDS}
                log(f"{name} {case.name}: timing {', '.join(MEASURED_BACKENDS)} on {count} thread(s)")
                for backend, latencies in _timed_rounds(predictors, batch, case).items():
                    result.timings.append(Timing(case.name, count, backend, latencies))
            if case.peak_rss:
                log(f"{name} {case.name}: peak RSS per backend and thread count")
                for count in case.threads:
                    for backend in MEASURED_BACKENDS:
                        model_path = files[backend] if backend != "torch" else None
                        peak, _ = peak_rss_mib(name, case.shape, count, model_path)
                        result.timing(case.name, count, backend).peak_rss_mib = peak
            if is_2d:
                result.accuracy = _int8_accuracy(
                    TorchPredictor(net, "torch"),
                    load_predictor(files["onnx-int8"]),
                    inputs[CALIBRATION_IMAGES:],
                    masks[CALIBRATION_IMAGES:],
                )
    return result


def _int8_accuracy(fp32: Predictor, int8: Predictor, inputs: torch.Tensor, masks: torch.Tensor) -> dict[str, float]:
    """Masks (sigmoid > 0.5, i.e. logit > 0) of int8 vs fp32, and of each vs the reference masks, on held-out HC18
    samples."""
    fp32_masks = fp32.predict(inputs) > 0
    int8_masks = int8.predict(inputs) > 0
    reference = masks > 0.5
    return {
        "images": len(inputs),
        "int8_vs_fp32_dice": _dice(int8_masks, fp32_masks),
        "int8_vs_fp32_pixel_agreement": float((int8_masks == fp32_masks).float().mean()),
        "fp32_dice": _dice(fp32_masks, reference),
        "int8_dice": _dice(int8_masks, reference),
    }
