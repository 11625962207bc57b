"""The whole application without the Deploy SDK: DICOM files in, a SEG + measurement SR + overlay PNG + JSON report
per stack out.

The Deploy app's operator and the PACS listener both call :func:`segment_paths` (or :func:`segment_series`),
so there is one code path to test. Each series goes to the model its bundle's rules claim it for
(:class:`~lightweight_seg.routing.ModelRouter`), and each stack is segmented frame by frame through that bundle's
pre- and post-processing (``lightweight_nets.inference.segment.segment_frames``).
"""

from __future__ import annotations

import logging
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

from lightweight_nets.bundle import BundleSpec
from lightweight_nets.inference.segment import segment_frames, segment_volume
from lightweight_nets.io.files import atomic_path
from lightweight_nets.overlays import write_overlay
from lightweight_seg.dicom_io import (
    DEFAULT_RULES,
    InputError,
    Stack,
    build_stacks,
    find_files,
    group_series,
    load_rules,
    one_line,
    problem,
    read_headers,
    series_matches,
)
from lightweight_seg.report import measurements, write_report
from lightweight_seg.routing import ModelRouter
from lightweight_seg.seg_writer import build_seg
from lightweight_seg.sr_writer import build_sr, sr_series_identity

__all__ = [
    "SeriesResult",
    "RunResult",
    "seg_series_identity",
    "segment_stack",
    "segment_series",
    "segment_routed",
    "segment_paths",
]

log = logging.getLogger(__name__)
SEG_SERIES_BASE = 9000  # SEG series numbers follow the source's: 9000 + 100 x source SeriesNumber + stack index


@dataclass
class SeriesResult:
    series_uid: str
    model: str  # the bundle id
    seg_path: Path
    overlay_path: Path
    report_path: Path
    sr_path: Path | None = None  # the measurement report (DICOM SR), where a segment has a measurement


@dataclass
class RunResult:
    outputs: list[SeriesResult]
    errors: list[tuple[str, str]]  # (file or series, one-line message)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (series, why no model segments it)

    def extend(self, other: RunResult) -> None:
        self.outputs += other.outputs
        self.errors += other.errors
        self.skipped += other.skipped


def segment_stack(stack: Stack, spec: BundleSpec, predictor) -> np.ndarray:
    """Label maps ``(N, H, W)`` on the stack's own grid, through the bundle's pre/post-processing: frame by frame
    for a 2D model, as one volume (the slices with their geometry) for a 3D model."""
    if spec.spatial_dims == 3:
        volume = np.transpose(stack.frames, (2, 1, 0))  # (column, row, slice), as ras_affine indexes it
        labels = segment_volume(volume, stack.ras_affine(), predictor, spec.preprocessing, spec.postprocessing)
        return np.ascontiguousarray(np.transpose(labels, (2, 1, 0)))
    return segment_frames(stack.frames, predictor, spec.preprocessing, spec.postprocessing)


def seg_series_identity(stack: Stack, spec: BundleSpec, index: int, count: int) -> tuple[int, str]:
    """SeriesNumber and SeriesDescription of the SEG of stack ``index`` of ``count`` of a series: derived from the
    source series, so that two SEGs of one study differ in both, whichever run wrote them."""
    source = str(stack.sources[0].get("SeriesNumber", "") or "").strip()
    source = source if source.lstrip("-").isdigit() else ""  # absent, empty or not a number: the SEG's own numbering
    number = SEG_SERIES_BASE + 100 * int(source) + index if source else SEG_SERIES_BASE + index
    if not 1 <= number <= 2**31 - 1:  # IS: a SeriesNumber far out of range would make one the SEG cannot hold
        number = SEG_SERIES_BASE + index
    labels = ", ".join(segment.label for segment in spec.segments)
    part = f" image {index + 1}/{count}" if count > 1 else ""
    of = f" of series {source}" if source else ""
    return number, f"{labels} ({spec.id}){of}{part}"


def _write_outputs(
    stack: Stack,
    labels: np.ndarray,
    spec: BundleSpec,
    output_dir: Path,
    name: str,
    identity: tuple[int, str],
    report: dict,
) -> SeriesResult:
    """SEG, measurement SR (where there is a measurement), overlay and report, each written under a temporary name
    and renamed only when all are complete, the report first: a failure leaves none of them behind."""
    started = time.perf_counter()
    seg = build_seg(stack, labels, spec, *identity)
    sr = build_sr(stack, spec, seg, report["segments"], *sr_series_identity(identity))
    result = SeriesResult(
        stack.series_uid,
        spec.id,
        output_dir / f"{name}.seg.dcm",
        output_dir / f"{name}.overlay.png",
        output_dir / f"{name}.report.json",
        None if sr is None else output_dir / f"{name}.sr.dcm",
    )
    with ExitStack() as files:  # renamed in the reverse order: the report, the overlay, the SR, the SEG
        seg_tmp, sr_tmp, overlay_tmp, report_tmp = (
            None if path is None else files.enter_context(atomic_path(path))
            for path in (result.seg_path, result.sr_path, result.overlay_path, result.report_path)
        )
        seg.save_as(seg_tmp, enforce_file_format=True)
        if sr is not None:
            sr.save_as(sr_tmp, enforce_file_format=True)
        write_overlay(stack.frames, labels, overlay_tmp, [segment.color_rgb for segment in spec.segments])
        report["timing_s"]["write"] = round(time.perf_counter() - started, 3)
        report["outputs"] = {
            "seg": result.seg_path.name,
            "sr": None if sr is None else result.sr_path.name,
            "overlay": result.overlay_path.name,
        }
        write_report(report, report_tmp)
    return result


def segment_series(series_uid: str, headers: list[Dataset], output_dir: Path, spec: BundleSpec, predictor) -> RunResult:
    """Segment one selected series (its headers, as from :func:`read_headers`) with one bundle's model: one SEG
    per stack."""
    started = time.perf_counter()
    stacks, errors = build_stacks(series_uid, headers)
    read_time = time.perf_counter() - started
    if len(stacks) > 1 and not any(s.is_cine or not s.has_frame_of_reference for s in stacks):
        log.warning("series %s: slices in %d orientations, written as one SEG per orientation", series_uid, len(stacks))
    outputs = []
    for index, stack in enumerate(stacks):
        name = series_uid if len(stacks) == 1 else f"{series_uid}_{index + 1}"
        try:
            started = time.perf_counter()
            labels = segment_stack(stack, spec, predictor)
            inference_time = time.perf_counter() - started
            started = time.perf_counter()
            segments = measurements(stack, labels, spec)
            measure_time = time.perf_counter() - started
            identity = seg_series_identity(stack, spec, index, len(stacks))
            report = {
                "series_instance_uid": series_uid,
                "study_instance_uid": str(stack.sources[0].get("StudyInstanceUID", "")),
                "modality": stack.modality,
                "source_instances": [ds.SOPInstanceUID for ds in stack.sources],
                "frames": len(stack.frames),
                "model": {
                    "bundle": spec.id,
                    "name": spec.name,
                    "version": spec.version,
                    "backend": getattr(predictor, "backend", "unknown"),
                },
                "seg": {"series_number": identity[0], "series_description": identity[1][:64]},
                "segments": segments,
                "timing_s": {
                    "read": round(read_time, 3),
                    "inference": round(inference_time, 3),
                    "measure": round(measure_time, 3),
                },
            }
            outputs.append(_write_outputs(stack, labels, spec, Path(output_dir), name, identity, report))
        except Exception as err:  # one bad stack must not stop the others
            errors.append(problem(series_uid, f"not segmented ({type(err).__name__}: {err})", prefix="series "))
    return RunResult(outputs, errors)


def segment_paths(
    paths: list[Path] | Path, output_dir: Path, models: ModelRouter | None = None, rules: Path | None = None
) -> RunResult:
    """Segment every series selected by ``rules`` among DICOM files and folders ``paths`` into ``output_dir``,
    each with the model ``models`` routes it to (default: every bundle this repository ships; the listener keeps
    one router, and so its loaded models, between calls). Bad files and series are reported in ``errors``, series
    no model is for in ``skipped``, and the rest is still processed."""
    try:
        selections = load_rules(rules)
        files, not_files = find_files(paths)
        models = models or ModelRouter.from_path()
    except InputError as err:
        return RunResult([], [(str(paths), str(err))])
    if not files:
        return RunResult([], [*not_files, problem(paths, "no files")])
    headers, errors = read_headers(files)
    errors = not_files + errors
    every = group_series(headers)
    series = {uid: hs for uid, hs in every.items() if series_matches(hs[0], selections)}
    unselected = [
        (uid, f"series {uid}: not selected by the selection rules ({Path(rules or DEFAULT_RULES).name})")
        for uid in every
        if uid not in series
    ]
    if not series and not headers and errors:  # every file named already
        return RunResult([], errors)
    if not series:
        found = sorted({f"{h.get('Modality', '?')}" for h in headers}) or ["no images"]
        errors.append(problem(paths, f"no series matches the selection rules (found: {', '.join(found)})"))
        return RunResult([], errors, unselected)
    result = RunResult([], errors, unselected)
    for uid, series_headers in series.items():
        result.extend(segment_routed(uid, series_headers, Path(output_dir), models))
    return result


def segment_routed(series_uid: str, headers: list[Dataset], output_dir: Path, models: ModelRouter) -> RunResult:
    """One series through the model it is routed to, or skipped with the reason."""
    spec, reason = models.route(series_uid, headers[0])
    if spec is None:
        return RunResult([], [], [(series_uid, one_line(reason))])
    try:
        predictor = models.predictor(spec)
    except InputError as err:
        return RunResult([], [(series_uid, one_line(err))])
    return segment_series(series_uid, headers, output_dir, spec, predictor)
