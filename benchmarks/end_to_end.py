"""End-to-end timing through the Deploy app's pipeline (DICOM in, DICOM-SEG + overlay + report out), warm:
the model is loaded once and each case runs once before the timed run, as in listener mode.

The pipeline's own report gives read / inference / measure / write; inference is split further into preprocess,
predict and postprocess by timing the shared functions on the same frames, with the same 2-thread setting as the
CPU tables.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import torch
from pydicom.data import get_testdata_file

from lightweight_nets.segment import BATCH_FRAMES

__all__ = ["CASES", "measure", "markdown_section"]

ROOT = Path(__file__).resolve().parents[1]
US_FRAME, US_CINE = "US frame (HC18 sample as DICOM US)", "US cine, 120 frames (color3d_jpeg_baseline)"
# case -> (where its DICOM is, the bundle it is forced to or None to route it by the bundles' rules). The CT has no
# model of its own yet: it runs through the fetal-head model, which times the CT path, not a CT result.
CASES = {
    US_FRAME: (lambda: ROOT / "samples" / "dicom" / "us_hc18_006.dcm", None),
    US_CINE: (lambda: Path(get_testdata_file("color3d_jpeg_baseline.dcm")), None),
    "CT series, 5 slices (CT5N), fetal-head model forced": (
        lambda: Path(get_testdata_file("dicomdirtests/98892001/CT5N", read=False)), "fetal_head_us"),
}
TARGET_FRAME_S, TARGET_CINE_FPS = 0.3, 30.0


def _split_inference(frames, spec, predictor) -> dict[str, float]:
    """Seconds spent in the bundle's preprocessing, predict and its postprocessing for ``frames``, in the
    pipeline's chunks of :data:`~lightweight_nets.segment.BATCH_FRAMES` frames."""
    times = {"preprocess": 0.0, "predict": 0.0, "postprocess": 0.0}
    for start in range(0, len(frames), BATCH_FRAMES):
        chunk = frames[start:start + BATCH_FRAMES]
        t0 = time.perf_counter()
        batch = spec.preprocessing(chunk)
        t1 = time.perf_counter()
        with torch.inference_mode():
            logits = predictor.predict(batch)
        t2 = time.perf_counter()
        spec.postprocessing(logits, chunk.shape[1:])
        t3 = time.perf_counter()
        times["preprocess"] += t1 - t0
        times["predict"] += t2 - t1
        times["postprocess"] += t3 - t2
    return times


def measure(threads: int = 2) -> list[dict]:
    """One row per case: frames, total wall time of the warm run, the pipeline's read / inference / measure /
    write, and inference split into preprocess / predict / postprocess."""
    from lightweight_seg.dicom_io import build_stacks, find_files, group_series, read_headers
    from lightweight_seg.pipeline import segment_paths
    from lightweight_seg.routing import ModelRouter

    torch.set_num_threads(threads)
    models = ModelRouter.from_path(threads=threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, (locate, forced) in CASES.items():
            path = locate()
            router = models if forced is None else ModelRouter.from_path(force=forced, threads=threads)
            segment_paths(path, Path(tmp) / "warm", models=router)
            started = time.perf_counter()
            result = segment_paths(path, Path(tmp) / "timed", models=router)
            total = time.perf_counter() - started
            if not result.outputs:
                problems = result.errors + result.skipped
                rows.append({"case": name, "error": "; ".join(message for _, message in problems)})
                continue
            output = result.outputs[0]
            report = json.loads(output.report_path.read_text())
            spec = router.bundles[output.model]
            predictor = router.predictor(spec)
            headers, _ = read_headers(find_files(path))
            (uid, series), = group_series(headers).items()
            stacks, _ = build_stacks(uid, series)
            rows.append({"case": name, "model": output.model, "frames": report["frames"], "total_s": total,
                         **report["timing_s"], **_split_inference(stacks[0].frames, spec, predictor),
                         "backend": predictor.backend})
    return rows


def markdown_section(threads: int = 2) -> str:
    """Markdown for the "End to end" section of docs/benchmarks.md (runs :func:`measure`)."""
    rows = measure(threads)
    lines = [f"Warm runs of `lightweight_seg.pipeline.segment_paths` ({threads} threads, bundle default backend), "
             "seconds. read = DICOM decode and stacking; inference = preprocess + predict + postprocess (split in "
             "the next columns, timed again on the same frames); measure = the report's areas and head "
             "circumferences; write = SEG + overlay + report.\n",
             "| case | model | frames | total | read | inference | preprocess | predict | postprocess | measure "
             "| write | frames/s |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for row in rows:
        if "error" in row:
            lines.append(f"| {row['case']} | failed: {row['error']} |||||||||||")
            continue
        lines.append(f"| {row['case']} | {row['model']} | {row['frames']} | {row['total_s']:.2f} | {row['read']:.2f} | "
                     f"{row['inference']:.2f} | {row['preprocess']:.2f} | {row['predict']:.2f} | "
                     f"{row['postprocess']:.2f} | {row['measure']:.2f} | {row['write']:.2f} | "
                     f"{row['frames'] / row['total_s']:.1f} |")
    by_case = {row["case"]: row for row in rows if "error" not in row}
    lines.append("")
    if US_FRAME in by_case:
        seconds = by_case[US_FRAME]["total_s"]
        lines.append(f"- Target: US frame DICOM -> SEG, warm, <= {TARGET_FRAME_S} s: {seconds:.2f} s, "
                     f"**{'met' if seconds <= TARGET_FRAME_S else 'not met'}**")
    if US_CINE in by_case:
        fps = by_case[US_CINE]["frames"] / by_case[US_CINE]["total_s"]
        lines.append(f"- Target: 120-frame US cine >= {TARGET_CINE_FPS:.0f} frames/s end to end: {fps:.1f} frames/s, "
                     f"**{'met' if fps >= TARGET_CINE_FPS else 'not met'}**")
    return "\n".join(lines) + "\n\n"
