"""The JSON report beside each SEG: what was segmented, how much, by which model, and how long it took.
(The overlay PNG beside it is :func:`lightweight_nets.overlays.write_overlay`.)"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from lightweight_nets.bundle import BundleSpec
from lightweight_nets.measure import measure_segment
from lightweight_seg.dicom_io import Stack

__all__ = ["measurements", "write_report"]


def measurements(stack: Stack, labels: np.ndarray, spec: BundleSpec) -> list[dict]:
    """Per segment of the bundle: its number and label, its size per frame (pixels, and mm^2 where the pixel
    spacing is known) and the measurements its bundle asks for (area and head circumference per frame, volume of
    a stack with a slice spacing)."""
    return [
        {
            "number": segment.number,
            "label": segment.label,
            **measure_segment(
                labels == segment.number,
                segment.measurements,
                stack.pixel_spacing_mm,
                stack.slice_spacing_mm,
                segment.outline_inset_px,
            ),
        }
        for segment in spec.segments
    ]


def write_report(report: dict, path: Path) -> None:
    path.write_text(json.dumps(report, indent=2) + "\n")
