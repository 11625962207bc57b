"""End-to-end timing through the Deploy app's pipeline (DICOM in, DICOM-SEG + overlay + report out), warm:
the models are loaded once and each case runs once before the timed run, as in listener mode. Each case goes to
the model its bundle's rules route it to.

The pipeline's own report gives read / inference / measure / write; for a 2D model inference is split further into
preprocess, predict and postprocess by running ``segment_frames`` again on the same frames with each stage timed,
with the same 2-thread setting as the CPU tables. The cine and the CT-sized volume are also run cold in a fresh
process, for their peak memory, and for how much of it the process holds before it reads a byte (imports and models).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from pydicom.data import get_testdata_file

from benchmarks import checkout
from lightweight_nets.inference.segment import segment_frames

__all__ = ["CASES", "write_ct_volume", "measure", "markdown_section"]

US_FRAME, US_CINE = "US frame (HC18 sample as DICOM US)", "US cine, 120 frames (color3d_jpeg_baseline)"
CT_VOLUME = "CT series 512 x 512 x 100 (a sarcoma CT crop resampled)"
TARGET_FRAME_S, TARGET_CINE_FPS, TARGET_CINE_MB = 0.3, 60.0, 600.0
TARGET_VOLUME_S, TARGET_VOLUME_MB = 20.0, 2000.0  # the issues' MB and GB: 10^6 and 10^9 bytes


def _mb(mib: float) -> float:
    """MiB (what the kernel reports, 2^20 bytes) in MB (10^6 bytes, the unit of the targets)."""
    return mib * 2**20 / 1e6


def write_ct_volume(folder: Path, shape: tuple[int, int, int] = (512, 512, 100)) -> Path:
    """A CT-sized series: the real limb sarcoma CT crop of samples/sarcoma_ct (STS_025) resampled to ``shape``
    (columns, rows, slices) at 0.98 x 0.98 x 3.27 mm, written as CT slices in Hounsfield units."""
    import nibabel as nib
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
    from scipy import ndimage

    crop = np.asarray(nib.load(str(checkout("samples", "sarcoma_ct", "images", "STS_025.nii.gz"))).dataobj)
    volume = ndimage.zoom(crop.astype(np.float32), [t / s for t, s in zip(shape, crop.shape)], order=1)
    folder.mkdir(parents=True, exist_ok=True)
    study, series, frame_of_reference = generate_uid(), generate_uid(), generate_uid()
    for k in range(shape[2]):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, generate_uid()
        ds.PatientName, ds.PatientID, ds.StudyInstanceUID, ds.SeriesInstanceUID = "Bench^CT", "bench", study, series
        ds.Modality, ds.SeriesNumber, ds.InstanceNumber, ds.BodyPartExamined = "CT", 1, k + 1, "EXTREMITY"
        ds.FrameOfReferenceUID, ds.ImageType = frame_of_reference, ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.ImageOrientationPatient, ds.ImagePositionPatient = [1, 0, 0, 0, 1, 0], [0.0, 0.0, 3.27 * k]
        ds.PixelSpacing, ds.SliceThickness = [0.9765625, 0.9765625], 3.27
        ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.Rows, ds.Columns = 1, "MONOCHROME2", shape[1], shape[0]
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
        ds.PixelData = (np.rint(volume[:, :, k].T) + 1024).astype(np.int16).tobytes()
        ds.save_as(folder / f"{k:04d}.dcm", enforce_file_format=True)
    return folder


# case -> where its DICOM is (given a scratch folder)
CASES = {
    US_FRAME: lambda scratch: checkout("samples", "dicom", "us_hc18_006.dcm"),
    US_CINE: lambda scratch: Path(get_testdata_file("color3d_jpeg_baseline.dcm")),
    "limb CT series, 136 x 134 x 47 (IBSI STS_019)": lambda scratch: checkout("samples", "dicom", "sts_019_ct"),
    CT_VOLUME: lambda scratch: write_ct_volume(scratch / "ct_volume"),
}
# Peak RSS as VmHWM: getrusage's ru_maxrss survives exec, so a child started by a large parent reported the
# parent's peak (2.9 GB for the CT volume, whose own peak is 1.7 GB).
_COLD_RUN = """
import json, sys, time
started = time.perf_counter()
import lightweight_seg
from pathlib import Path
from lightweight_nets.profile import memory_kib
from lightweight_seg.pipeline import segment_paths
from lightweight_seg.routing import ModelRouter
models = ModelRouter.from_path(threads=int(sys.argv[3]))
loaded_mib = memory_kib("VmHWM") / 1024
result = segment_paths(Path(sys.argv[1]), Path(sys.argv[2]), models=models)
print(json.dumps({"seconds": time.perf_counter() - started, "segs": len(result.outputs),
                  "peak_rss_mib": memory_kib("VmHWM") / 1024, "loaded_rss_mib": loaded_mib}))
"""


class _Timed:
    """``function`` that adds the seconds each call takes to ``seconds[stage]``."""

    def __init__(self, function: Callable, seconds: dict[str, float], stage: str):
        self.function, self.seconds, self.stage = function, seconds, stage

    def __getattr__(self, name: str):  # the wrapped stage's own attributes, e.g. the preprocessing's inferer
        return getattr(self.function, name)

    def __call__(self, *args):
        started = time.perf_counter()
        try:
            return self.function(*args)
        finally:
            self.seconds[self.stage] += time.perf_counter() - started


def _split_inference(frames, spec, predictor) -> dict[str, float]:
    """Seconds that :func:`~lightweight_nets.inference.segment.segment_frames` spends in the bundle's preprocessing,
    predict and its postprocessing for ``frames`` of a 2D model."""
    seconds = {"preprocess": 0.0, "predict": 0.0, "postprocess": 0.0}
    timed_predictor = SimpleNamespace(predict=_Timed(predictor.predict, seconds, "predict"))
    segment_frames(
        frames,
        timed_predictor,
        _Timed(spec.preprocessing, seconds, "preprocess"),
        _Timed(spec.postprocessing, seconds, "postprocess"),
    )
    return seconds


def _cold_run(path: Path, output: Path, threads: int) -> dict:
    """The pipeline on ``path`` in a fresh process: wall seconds including imports and model loading, peak RSS."""
    run = subprocess.run(
        [sys.executable, "-c", _COLD_RUN, str(path), str(output), str(threads)],
        capture_output=True,
        text=True,
        check=True,
        cwd=checkout("apps"),
    )
    return json.loads(run.stdout.strip().splitlines()[-1])


def measure(threads: int = 2) -> list[dict]:
    """One row per case: its model, frames, total wall time of the warm run, the pipeline's read / inference /
    measure / write, inference split into preprocess / predict / postprocess for 2D models, and for the CT-sized
    volume a cold run's wall time and peak RSS."""
    from lightweight_seg.dicom_io import build_stacks, find_files, group_series, read_headers
    from lightweight_seg.pipeline import segment_paths
    from lightweight_seg.routing import ModelRouter

    torch.set_num_threads(threads)
    models = ModelRouter.from_path(threads=threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, locate in CASES.items():
            path = locate(Path(tmp))
            segment_paths(path, Path(tmp) / "warm", models=models)
            started = time.perf_counter()
            result = segment_paths(path, Path(tmp) / "timed", models=models)
            total = time.perf_counter() - started
            if not result.outputs:
                problems = result.errors + result.skipped
                rows.append({"case": name, "error": "; ".join(message for _, message in problems)})
                continue
            output = result.outputs[0]
            report = json.loads(output.report_path.read_text())
            spec = models.bundles[output.model]
            row = {
                "case": name,
                "model": output.model,
                "frames": report["frames"],
                "total_s": total,
                **report["timing_s"],
                "backend": models.predictor(spec).backend,
            }
            if spec.spatial_dims == 2:
                headers, _ = read_headers(find_files(path)[0])
                ((uid, series),) = group_series(headers).items()
                stacks, _ = build_stacks(uid, series)
                row.update(_split_inference(stacks[0].frames, spec, models.predictor(spec)))
            if name in (US_CINE, CT_VOLUME):
                row["cold"] = _cold_run(path, Path(tmp) / "cold", threads)
            rows.append(row)
    return rows


def _seconds(row: dict, key: str) -> str:
    return f"{row[key]:.2f}" if key in row else "-"


def markdown_section(rows: list[dict], threads: int = 2) -> str:
    """Markdown for the "End to end" section of docs/benchmarks.md from the rows :func:`measure` gave."""
    lines = [
        f"Warm runs of `lightweight_seg.pipeline.segment_paths` ({threads} threads, bundle default backend), "
        "seconds. read = DICOM decode and stacking; inference = preprocess + predict + postprocess (for a 2D "
        "model split in the next columns, timed again on the same frames; a 3D model resamples, runs a "
        "sliding window and resamples back); measure = the report's areas, head circumferences and volumes; "
        "write = SEG + overlay + report.\n",
        "| case | model | frames | total | read | inference | preprocess | predict | postprocess | measure "
        "| write | frames/s |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        if "error" in row:
            lines.append(f"| {row['case']} | failed: {row['error']} |||||||||||")
            continue
        lines.append(
            f"| {row['case']} | {row['model']} | {row['frames']} | {row['total_s']:.2f} | {row['read']:.2f} | "
            f"{row['inference']:.2f} | {_seconds(row, 'preprocess')} | {_seconds(row, 'predict')} | "
            f"{_seconds(row, 'postprocess')} | {row['measure']:.2f} | {row['write']:.2f} | "
            f"{row['frames'] / row['total_s']:.1f} |"
        )
    by_case = {row["case"]: row for row in rows if "error" not in row}
    lines.append("")
    if US_FRAME in by_case:
        seconds = by_case[US_FRAME]["total_s"]
        lines.append(
            f"- Target: US frame DICOM -> SEG, warm, <= {TARGET_FRAME_S} s: {seconds:.2f} s, "
            f"**{'met' if seconds <= TARGET_FRAME_S else 'not met'}**"
        )
    if US_CINE in by_case:
        fps = by_case[US_CINE]["frames"] / by_case[US_CINE]["total_s"]
        lines.append(
            f"- Target: 120-frame US cine >= {TARGET_CINE_FPS:.0f} frames/s end to end: {fps:.1f} frames/s, "
            f"**{'met' if fps >= TARGET_CINE_FPS else 'not met'}**"
        )
        if "cold" in by_case[US_CINE]:
            cold = by_case[US_CINE]["cold"]
            lines.append(
                f"- Target: that cine in a fresh process < {TARGET_CINE_MB:.0f} MB peak RSS: "
                f"{_mb(cold['peak_rss_mib']):.0f} MB ({cold['peak_rss_mib']:.0f} MiB), "
                f"**{'met' if _mb(cold['peak_rss_mib']) < TARGET_CINE_MB else 'not met'}**"
                f" ({cold['loaded_rss_mib']:.0f} MiB of it before the first byte is read: the imports, the MONAI "
                f"Deploy SDK and MONAI among them, and the loaded models)"
            )
    if CT_VOLUME in by_case:
        cold = by_case[CT_VOLUME]["cold"]
        met = cold["seconds"] <= TARGET_VOLUME_S and _mb(cold["peak_rss_mib"]) < TARGET_VOLUME_MB
        lines.append(
            f"- Target: a 512 x 512 x 100 CT series end to end in a fresh process (imports and model "
            f"loading included) < {TARGET_VOLUME_S:.0f} s and < {TARGET_VOLUME_MB / 1000:.0f} GB peak RSS: "
            f"{cold['seconds']:.1f} s, {_mb(cold['peak_rss_mib']):.0f} MB ({cold['peak_rss_mib']:.0f} MiB), "
            f"**{'met' if met else 'not met'}**"
        )
    return "\n".join(lines) + "\n\n"
