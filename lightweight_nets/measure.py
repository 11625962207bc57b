"""Clinical measurements from masks: the fetal head circumference (HC18)."""

from __future__ import annotations

import math

import numpy as np
from skimage.measure import EllipseModel, find_contours

__all__ = ["ellipse_perimeter", "head_circumference_mm"]


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
