"""The JSON report beside each SEG: what was segmented, how much, by which model, and how long it took.
(The overlay PNG beside it is :func:`lightweight_nets.segment.write_overlay`.)"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from lightweight_nets.measure import head_circumference_mm
from lightweight_seg.dicom_io import Stack

__all__ = ["measurements", "write_report"]


def measurements(stack: Stack, masks: np.ndarray) -> dict:
    """Segment size per frame (pixels, and mm^2 where the pixel spacing is known), the volume for a CT/MR
    stack with a slice spacing, and the head circumference per frame for ultrasound with a known spacing."""
    pixels = masks.reshape(len(masks), -1).sum(axis=1)
    result = {"pixels_per_frame": pixels.tolist(), "frames_with_segment": int((pixels > 0).sum())}
    if stack.pixel_spacing_mm is not None:
        pixel_area = stack.pixel_spacing_mm[0] * stack.pixel_spacing_mm[1]
        result["area_mm2_per_frame"] = [round(float(p) * pixel_area, 2) for p in pixels]
        if stack.modality in ("CT", "MR") and stack.slice_spacing_mm:
            result["volume_mm3"] = round(float(pixels.sum()) * pixel_area * stack.slice_spacing_mm, 2)
        if stack.modality == "US":
            circumferences = [head_circumference_mm(mask, stack.pixel_spacing_mm) for mask in masks]
            result["head_circumference_mm_per_frame"] = [None if c is None else round(c, 2) for c in circumferences]
    return result


def write_report(report: dict, path: Path) -> None:
    path.write_text(json.dumps(report, indent=2) + "\n")
