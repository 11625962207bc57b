"""Clinical measurements from masks: area, volume and the fetal head circumference (HC18), by name for bundles."""

from __future__ import annotations

import math

import numpy as np
from skimage.measure import EllipseModel, find_contours

__all__ = ["ellipse_perimeter", "head_circumference_mm", "MEASUREMENTS", "measure_segment"]


def ellipse_perimeter(a: float, b: float) -> float:
    """Ramanujan's second approximation of the perimeter of an ellipse with semi-axes a, b."""
    h = ((a - b) / (a + b)) ** 2
    return math.pi * (a + b) * (1 + 3 * h / (10 + math.sqrt(4 - 3 * h)))


def head_circumference_mm(mask: np.ndarray, pixel_spacing_mm: tuple[float, float] | float) -> float | None:
    """Head circumference in mm as in the HC18 challenge: the perimeter of the ellipse fitted (least squares)
    to the outer contour of the mask. The contour is scaled to mm before fitting, so anisotropic pixels are
    handled. ``None`` for an empty or degenerate mask."""
    dy, dx = (pixel_spacing_mm, pixel_spacing_mm) if np.isscalar(pixel_spacing_mm) else pixel_spacing_mm
    if mask.sum() < 5:
        return None
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    box = mask[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]  # the same contour, traced on far fewer pixels
    contours = find_contours(np.pad(box.astype(np.float32), 1), 0.5)
    offset = np.array([rows[0] - 1.0, cols[0] - 1.0])  # undo the padding and the crop
    points = (max(contours, key=len) + offset) * np.array([dy, dx])
    model = EllipseModel.from_estimate(points)
    if not model:
        return None
    a, b = (abs(float(v)) for v in model.axis_lengths)
    return ellipse_perimeter(a, b)


def _spacing_problem(pixel_spacing_mm, slice_spacing_mm=None, needs_slices: bool = False) -> str | None:
    """Why the spacing cannot give a true measurement (unknown, not two values, NaN, zero or negative), or None."""
    if pixel_spacing_mm is None:
        return "no pixel spacing"
    try:
        values = [float(v) for v in pixel_spacing_mm]
    except (TypeError, ValueError):
        return f"pixel spacing {pixel_spacing_mm!r} is not two numbers"
    if len(values) != 2 or not all(math.isfinite(v) and v > 0 for v in values):
        return f"pixel spacing {pixel_spacing_mm!r} mm is not two positive numbers"
    if needs_slices and slice_spacing_mm is None:
        return "no slice spacing"
    if needs_slices and not (isinstance(slice_spacing_mm, (int, float)) and math.isfinite(slice_spacing_mm)
                             and slice_spacing_mm > 0):
        return f"slice spacing {slice_spacing_mm!r} mm is not a positive number"
    return None


def _per_frame_area_mm2(masks: np.ndarray, pixel_spacing_mm, slice_spacing_mm) -> dict:
    pixel_area = float(pixel_spacing_mm[0]) * float(pixel_spacing_mm[1])
    return {"area_mm2_per_frame": [round(float(m.sum()) * pixel_area, 2) for m in masks]}


def _per_frame_head_circumference_mm(masks: np.ndarray, pixel_spacing_mm, slice_spacing_mm) -> dict:
    circumferences = [head_circumference_mm(mask, pixel_spacing_mm) for mask in masks]
    return {"head_circumference_mm_per_frame": [None if c is None else round(c, 2) for c in circumferences]}


def _volume_mm3(masks: np.ndarray, pixel_spacing_mm, slice_spacing_mm) -> dict:
    voxel = float(pixel_spacing_mm[0]) * float(pixel_spacing_mm[1]) * float(slice_spacing_mm)
    return {"volume_mm3": round(float(masks.sum()) * voxel, 2)}


# What a bundle's segment may ask for ("measurements": [...]). Each runs only where the spacing it needs is known
# and sane; otherwise the measurement is named in "not_measured" with the reason, never given a wrong number.
MEASUREMENTS = {
    "area": _per_frame_area_mm2,
    "head_circumference": _per_frame_head_circumference_mm,
    "volume": _volume_mm3,
}


def measure_segment(masks: np.ndarray, measurements, pixel_spacing_mm: tuple[float, float] | None = None,
                    slice_spacing_mm: float | None = None) -> dict:
    """One segment's boolean masks ``(N, H, W)`` -> its pixel count per frame, the number of frames it is on, and
    each named measurement of :data:`MEASUREMENTS` that the known spacing allows (area in mm^2 and head
    circumference in mm per frame, volume in mm^3 for a stack of slices). A measurement the spacing does not allow
    (unknown, NaN, zero or negative) is left out and named in ``not_measured`` with the reason."""
    masks = np.asarray(masks, dtype=bool)
    pixels = masks.reshape(len(masks), -1).sum(axis=1)
    result = {"pixels_per_frame": pixels.tolist(), "frames_with_segment": int((pixels > 0).sum())}
    not_measured = {}
    for name in measurements:
        problem = _spacing_problem(pixel_spacing_mm, slice_spacing_mm, needs_slices=name == "volume")
        if problem:
            not_measured[name] = problem
        else:
            result.update(MEASUREMENTS[name](masks, pixel_spacing_mm, slice_spacing_mm))
    if not_measured:
        result["not_measured"] = not_measured
    return result
