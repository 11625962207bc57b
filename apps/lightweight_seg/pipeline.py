"""The whole application without the Deploy SDK: DICOM files in, a SEG + overlay PNG + JSON report per stack out.

The Deploy app's operator and the PACS listener both call :func:`segment_paths` (or :func:`segment_series`),
so there is one code path to test. Each stack is segmented frame by frame with the 2D model, through the
shared ``preprocess`` / ``postprocess`` of ``lightweight_nets.transforms``.
"""

from __future__ import annotations

import json
import logging
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

from lightweight_nets.io import atomic_path
from lightweight_nets.segment import segment_frames, write_overlay
from lightweight_seg.dicom_io import (
    InputError,
    Stack,
    build_stacks,
    find_files,
    group_series,
    load_rules,
    read_headers,
    series_matches,
)
from lightweight_seg.report import measurements, write_report
from lightweight_seg.seg_writer import FETAL_HEAD, SegmentInfo, build_seg

__all__ = ["DEFAULT_BUNDLE", "SeriesResult", "RunResult", "load_segment_info", "bundle_keeps_largest", "segment_stack",
           "segment_series", "segment_paths"]

DEFAULT_BUNDLE = Path(__file__).resolve().parents[2] / "bundle"
log = logging.getLogger(__name__)


@dataclass
class SeriesResult:
    series_uid: str
    seg_path: Path
    overlay_path: Path
    report_path: Path


@dataclass
class RunResult:
    outputs: list[SeriesResult]
    errors: list[tuple[str, str]]  # (file or series, one-line message)


def load_segment_info(bundle_root: Path) -> SegmentInfo:
    """What the model segments and its name and version, from the bundle's configs/metadata.json when present."""
    metadata_path = Path(bundle_root) / "configs" / "metadata.json"
    metadata = json.loads(metadata_path.read_text()) if metadata_path.is_file() else {}
    return SegmentInfo(algorithm_name=str(metadata.get("name", Path(bundle_root).resolve().name)),
                       algorithm_version=str(metadata.get("version", "unknown")), **FETAL_HEAD)


def bundle_keeps_largest(bundle_root: Path) -> bool:
    """Whether post-processing keeps only the largest connected component: the bundle's ``keep_largest`` in
    configs/inference.json (one lesion per frame for the fetal head), True where the bundle does not say."""
    config_path = Path(bundle_root) / "configs" / "inference.json"
    return bool(json.loads(config_path.read_text()).get("keep_largest", True)) if config_path.is_file() else True


def segment_stack(stack: Stack, predictor, keep_largest: bool = True) -> np.ndarray:
    """Boolean masks ``(N, H, W)`` on the stack's own grid, every frame through the shared pre/post-processing."""
    return segment_frames(stack.frames, predictor, keep_largest)


def _write_outputs(stack: Stack, masks: np.ndarray, info: SegmentInfo, output_dir: Path, name: str,
                   report: dict) -> SeriesResult:
    """SEG, overlay and report, each written under a temporary name and renamed only when all three are
    complete, so that a failure leaves none of them behind."""
    result = SeriesResult(stack.series_uid, output_dir / f"{name}.seg.dcm", output_dir / f"{name}.overlay.png",
                          output_dir / f"{name}.report.json")
    started = time.perf_counter()
    with ExitStack() as files:
        seg_tmp, overlay_tmp, report_tmp = (files.enter_context(atomic_path(p))
                                            for p in (result.seg_path, result.overlay_path, result.report_path))
        build_seg(stack, masks, info).save_as(seg_tmp, enforce_file_format=True)
        write_overlay(stack.frames, masks, overlay_tmp)
        report["timing_s"]["write"] = round(time.perf_counter() - started, 3)
        report["outputs"] = {"seg": result.seg_path.name, "overlay": result.overlay_path.name}
        write_report(report, report_tmp)
    return result


def segment_series(series_uid: str, headers: list[Dataset], output_dir: Path, predictor, info: SegmentInfo,
                   keep_largest: bool = True) -> RunResult:
    """Segment one selected series (its headers, as from :func:`read_headers`): one SEG per stack."""
    started = time.perf_counter()
    stacks, errors = build_stacks(series_uid, headers)
    read_time = time.perf_counter() - started
    if len(stacks) > 1 and not any(s.is_cine or not s.has_frame_of_reference for s in stacks):
        log.warning("series %s: slices in %d orientations, written as one SEG per orientation", series_uid,
                    len(stacks))
    outputs = []
    for index, stack in enumerate(stacks):
        name = series_uid if len(stacks) == 1 else f"{series_uid}_{index + 1}"
        try:
            started = time.perf_counter()
            masks = segment_stack(stack, predictor, keep_largest)
            inference_time = time.perf_counter() - started
            started = time.perf_counter()
            segment = {"label": info.label, **measurements(stack, masks)}
            measure_time = time.perf_counter() - started
            report = {
                "series_instance_uid": series_uid,
                "study_instance_uid": str(stack.sources[0].get("StudyInstanceUID", "")),
                "modality": stack.modality,
                "source_instances": [ds.SOPInstanceUID for ds in stack.sources],
                "frames": len(stack.frames),
                "model": {"name": info.algorithm_name, "version": info.algorithm_version,
                          "backend": getattr(predictor, "backend", "unknown")},
                "segment": segment,
                "timing_s": {"read": round(read_time, 3), "inference": round(inference_time, 3),
                             "measure": round(measure_time, 3)},
            }
            outputs.append(_write_outputs(stack, masks, info, Path(output_dir), name, report))
        except Exception as err:  # one bad stack must not stop the others
            errors.append((series_uid, f"series {series_uid}: not segmented ({type(err).__name__}: {err})"))
    return RunResult(outputs, errors)


def segment_paths(paths: list[Path] | Path, output_dir: Path, bundle_root: Path | None = None,
                  rules: Path | None = None, predictor=None, keep_largest: bool | None = None) -> RunResult:
    """Segment every series selected by ``rules`` among DICOM files and folders ``paths`` into ``output_dir``.

    ``predictor`` is an already loaded model (the listener keeps one between calls); otherwise the bundle's
    is loaded. ``keep_largest`` None follows the bundle. Bad files and series are reported in ``errors`` and
    the rest is still processed."""
    bundle_root = Path(bundle_root or DEFAULT_BUNDLE)
    try:
        selections = load_rules(rules)
        files = find_files(paths)
    except InputError as err:
        return RunResult([], [(str(paths), str(err))])
    if not files:
        return RunResult([], [(str(paths), f"{paths}: no files")])
    headers, errors = read_headers(files)
    series = {uid: hs for uid, hs in group_series(headers).items() if series_matches(hs[0], selections)}
    if not series:
        found = sorted({f"{h.get('Modality', '?')}" for h in headers}) or ["no images"]
        errors.append((str(paths), f"{paths}: no series matches the selection rules (found: {', '.join(found)})"))
        return RunResult([], errors)
    if predictor is None:
        from lightweight_nets.inference import load_bundle_predictor

        predictor = load_bundle_predictor(bundle_root)
    info = load_segment_info(bundle_root)
    keep_largest = bundle_keeps_largest(bundle_root) if keep_largest is None else keep_largest
    outputs = []
    for uid, series_headers in series.items():
        result = segment_series(uid, series_headers, Path(output_dir), predictor, info, keep_largest)
        outputs += result.outputs
        errors += result.errors
    return RunResult(outputs, errors)
