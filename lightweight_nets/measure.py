"""Clinical measurements from masks, by name for bundles: area, volume, the fetal head circumference (HC18) with
the gestational age a published formula estimates from it, and the largest diameter of a lesion.

Geometry that a viewer draws (the fitted head ellipse, the end points of the largest diameter) is given in image
pixel coordinates as DICOM SCOORD writes them: (column, row), (0, 0) the top left corner of the top left pixel, so
the centre of pixel (r, c) is (c + 0.5, r + 0.5).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.spatial import ConvexHull, QhullError
from skimage.measure import EllipseModel, find_contours

from lightweight_nets.transforms import bounding_box

__all__ = [
    "ellipse_perimeter",
    "FittedEllipse",
    "fit_head_ellipse",
    "head_circumference_mm",
    "largest_diameter",
    "GestationalAgeFormula",
    "GESTATIONAL_AGE_FORMULAS",
    "MEASUREMENTS",
    "MEASUREMENT_REPORT_KEYS",
    "measure_segment",
]


def ellipse_perimeter(a: float, b: float) -> float:
    """Ramanujan's second approximation of the perimeter of an ellipse with semi-axes a, b."""
    h = ((a - b) / (a + b)) ** 2
    return math.pi * (a + b) * (1 + 3 * h / (10 + math.sqrt(4 - 3 * h)))


def _spacing_pair(pixel_spacing_mm: tuple[float, float] | float) -> np.ndarray:
    """(row spacing, column spacing) in mm from one value or a DICOM PixelSpacing pair."""
    if np.isscalar(pixel_spacing_mm):
        return np.array([float(pixel_spacing_mm)] * 2)
    return np.array([float(v) for v in pixel_spacing_mm])


def _contours_px(mask: np.ndarray) -> list[np.ndarray]:
    """The mask's outlines as (row, column) pixel-index points on the 0.5 level (half way between a pixel in and a
    pixel out), traced on the mask's bounding box only."""
    box = bounding_box(mask)  # the same contour, traced on far fewer pixels
    offset = np.array([part.start - 1.0 for part in box])  # undo the padding and the crop
    return [contour + offset for contour in find_contours(np.pad(mask[box].astype(np.float32), 1), 0.5)]


def _scoord(points_rc: np.ndarray) -> list[list[float]]:
    """(row, column) pixel-index points -> DICOM SCOORD (column, row) image coordinates, 2 decimals."""
    return [[round(float(c) + 0.5, 2), round(float(r) + 0.5, 2)] for r, c in points_rc]


@dataclass(frozen=True)
class FittedEllipse:
    """The ellipse fitted to a head's outline: its perimeter in mm and, for a viewer to draw it, its axis end points
    in image pixel coordinates (``[[column, row], ...]``: the two ends of the major axis, then of the minor axis,
    as a DICOM SCOORD ELLIPSE lists them)."""

    perimeter_mm: float
    axis_points: list[list[float]]


def fit_head_ellipse(
    mask: np.ndarray, pixel_spacing_mm: tuple[float, float] | float, outline_inset_px: float = 0.0
) -> FittedEllipse | None:
    """The least-squares ellipse of the outer contour of a mask, as in the HC18 challenge. The contour is scaled to
    mm before fitting, so anisotropic pixels are handled; the fitted ellipse is then mapped back to pixels (there
    its axes are the singular vectors of the mm axes scaled per pixel direction). ``outline_inset_px`` moves the
    ellipse that far inside the contour, in image pixels along each axis: for masks drawn as a filled outline, whose
    edge lies outside the line the reference measurement follows (a segment's ``outline_inset_px`` in its bundle).
    ``None`` for an empty or degenerate mask."""
    if mask.sum() < 5:
        return None
    spacing = _spacing_pair(pixel_spacing_mm)
    points = max(_contours_px(mask), key=len) * spacing
    model = EllipseModel.from_estimate(points)
    if not model:
        return None
    theta = float(model.theta)
    axes = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])  # unit, (row, col) mm
    # an inset of n pixels along a unit direction u (mm) is n / |u / spacing| mm long
    a, b = (
        abs(float(length)) - outline_inset_px / float(np.linalg.norm(axes[:, i] / spacing))
        for i, length in enumerate(model.axis_lengths)
    )
    if min(a, b) <= 0:
        return None
    semi_axes_mm = axes @ np.diag([a, b])  # columns: the two semi-axes, (row, column) in mm
    directions, lengths, _ = np.linalg.svd(semi_axes_mm / spacing[:, None])
    centre = np.asarray(model.center, dtype=float) / spacing
    ends = [centre + sign * lengths[i] * directions[:, i] for i in (0, 1) for sign in (-1, 1)]
    return FittedEllipse(ellipse_perimeter(a, b), _scoord(np.array(ends)))


def head_circumference_mm(
    mask: np.ndarray, pixel_spacing_mm: tuple[float, float] | float, outline_inset_px: float = 0.0
) -> float | None:
    """Head circumference in mm as in the HC18 challenge: the perimeter of :func:`fit_head_ellipse`. ``None`` for
    an empty or degenerate mask."""
    fitted = fit_head_ellipse(mask, pixel_spacing_mm, outline_inset_px)
    return None if fitted is None else fitted.perimeter_mm


def largest_diameter(
    mask: np.ndarray, pixel_spacing_mm: tuple[float, float] | float
) -> tuple[float, list[list[float]]] | None:
    """The longest chord of a mask's outline (all its parts), in mm, and its two end points in image pixel
    coordinates (``[[column, row], [column, row]]``). The farthest pair of outline points is among the vertices of
    their convex hull, searched in mm so that anisotropic pixels are handled. ``None`` for an empty mask."""
    if not mask.any():
        return None
    spacing = _spacing_pair(pixel_spacing_mm)
    points = np.unique(np.concatenate(_contours_px(mask)), axis=0)
    try:
        points = points[ConvexHull(points * spacing).vertices]
    except QhullError:  # all on one line: every point is a candidate
        pass
    in_mm = points * spacing
    distances = np.linalg.norm(in_mm[:, None] - in_mm[None], axis=-1)
    first, second = np.unravel_index(np.argmax(distances), distances.shape)
    return float(distances[first, second]), _scoord(points[[first, second]])


@dataclass(frozen=True)
class GestationalAgeFormula:
    """A published regression of gestational (menstrual) age in weeks on the head circumference, and the range of
    gestational ages its study population covered: outside it the estimate is not given.

    Args:
        citation: the publication.
        coefficients: ``c0, c1, c2, c3`` of ``weeks = c0 + c1 HC + c2 HC^2 + c3 HC^3`` with HC in cm.
        valid_weeks: the gestational ages the study covered, inclusive.
    """

    citation: str
    coefficients: tuple[float, float, float, float]
    valid_weeks: tuple[float, float]

    def weeks(self, hc_mm: float) -> tuple[float | None, str | None]:
        """The estimated gestational age in weeks, or None and why not (outside the range of validity)."""
        hc_cm = hc_mm / 10
        weeks = sum(c * hc_cm**k for k, c in enumerate(self.coefficients))
        low, high = self.valid_weeks
        if not low <= weeks <= high:
            return None, (
                f"HC {hc_mm:g} mm gives {weeks:.1f} weeks, outside the {low:g}-{high:g} weeks the formula "
                f"is valid for ({self.citation.split(';')[0]})"
            )
        return weeks, None


GESTATIONAL_AGE_FORMULAS = {
    # Hadlock FP, Deter RL, Harrist RB, Park SK. Estimating fetal age: computer-assisted analysis of multiple fetal
    # growth parameters. Radiology 1984;152(2):497-501 (doi:10.1148/radiology.152.2.6739822): menstrual age from HC
    # alone, MA = 8.96 + 0.540 HC + 0.0003 HC^3 (HC in cm), from 361 fetuses of 14 to 42 menstrual weeks.
    "hadlock_1984": GestationalAgeFormula(
        "Hadlock et al., Radiology 1984;152:497-501; MA = 8.96 + 0.540 HC + 0.0003 HC^3, HC in cm",
        (8.96, 0.540, 0.0, 0.0003),
        (14.0, 42.0),
    ),
}


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
    if needs_slices and not (
        isinstance(slice_spacing_mm, (int, float)) and math.isfinite(slice_spacing_mm) and slice_spacing_mm > 0
    ):
        return f"slice spacing {slice_spacing_mm!r} mm is not a positive number"
    return None


def _per_frame_area_mm2(masks: np.ndarray, pixel_spacing_mm, slice_spacing_mm) -> dict:
    pixel_area = float(pixel_spacing_mm[0]) * float(pixel_spacing_mm[1])
    return {"area_mm2_per_frame": [round(float(m.sum()) * pixel_area, 2) for m in masks]}


def _per_frame_head_circumference_mm(
    masks: np.ndarray, pixel_spacing_mm, slice_spacing_mm, outline_inset_px: float = 0.0
) -> dict:
    fits = [fit_head_ellipse(mask, pixel_spacing_mm, outline_inset_px) for mask in masks]
    return {
        "head_circumference_mm_per_frame": [None if f is None else round(f.perimeter_mm, 2) for f in fits],
        "head_ellipse_points": [None if f is None else f.axis_points for f in fits],
    }


def _per_frame_largest_diameter_mm(masks: np.ndarray, pixel_spacing_mm, slice_spacing_mm) -> dict:
    chords = [largest_diameter(mask, pixel_spacing_mm) for mask in masks]
    return {
        "largest_diameter_mm_per_frame": [None if c is None else round(c[0], 2) for c in chords],
        "largest_diameter_points": [None if c is None else c[1] for c in chords],
    }


def _gestational_age(formula: GestationalAgeFormula):
    """The per-frame gestational age measurement of one formula, from the head circumference as reported (so that
    the age is the formula of the number beside it); where none is given, the reason is."""

    def measure(
        masks: np.ndarray, pixel_spacing_mm, slice_spacing_mm, outline_inset_px=0.0, head_circumferences=None
    ) -> dict:
        if head_circumferences is None:  # not measured yet for these masks (the ellipse fits are the cost)
            circumferences = _per_frame_head_circumference_mm(
                masks, pixel_spacing_mm, slice_spacing_mm, outline_inset_px
            )
            head_circumferences = circumferences["head_circumference_mm_per_frame"]
        weeks, reasons = [], []
        for hc in head_circumferences:
            value, reason = (None, "no head circumference") if hc is None else formula.weeks(hc)
            weeks.append(None if value is None else round(value, 2))
            reasons.append(reason)
        result = {"gestational_age_weeks_per_frame": weeks}
        if any(reasons):
            result["gestational_age_not_given"] = reasons
        return result

    return measure


def _volume_mm3(masks: np.ndarray, pixel_spacing_mm, slice_spacing_mm) -> dict:
    voxel = float(pixel_spacing_mm[0]) * float(pixel_spacing_mm[1]) * float(slice_spacing_mm)
    return {"volume_mm3": round(float(masks.sum()) * voxel, 2)}


# What a bundle's segment may ask for ("measurements": [...]). Each runs only where the spacing it needs is known
# and sane; otherwise the measurement is named in "not_measured" with the reason, never given a wrong number.
MEASUREMENTS = {
    "area": _per_frame_area_mm2,
    "head_circumference": _per_frame_head_circumference_mm,
    "volume": _volume_mm3,
    "largest_diameter": _per_frame_largest_diameter_mm,
    **{f"gestational_age_{name}": _gestational_age(formula) for name, formula in GESTATIONAL_AGE_FORMULAS.items()},
}

_FROM_THE_HEAD_ELLIPSE = {"head_circumference", *(f"gestational_age_{name}" for name in GESTATIONAL_AGE_FORMULAS)}

# Where the report gives each measurement's value: per frame (a list, None where there is none) or one number.
MEASUREMENT_REPORT_KEYS = {
    "area": "area_mm2_per_frame",
    "head_circumference": "head_circumference_mm_per_frame",
    "volume": "volume_mm3",
    "largest_diameter": "largest_diameter_mm_per_frame",
    **{f"gestational_age_{name}": "gestational_age_weeks_per_frame" for name in GESTATIONAL_AGE_FORMULAS},
}


def measure_segment(
    masks: np.ndarray,
    measurements,
    pixel_spacing_mm: tuple[float, float] | None = None,
    slice_spacing_mm: float | None = None,
    outline_inset_px: float = 0.0,
) -> dict:
    """One segment's boolean masks ``(N, H, W)`` -> its pixel count per frame, the number of frames it is on, and
    each named measurement of :data:`MEASUREMENTS` that the known spacing allows (per frame: area in mm^2, head
    circumference in mm with its ellipse, largest diameter in mm with its end points, gestational age in weeks;
    volume in mm^3 for a stack of slices). A measurement the spacing does not allow
    (unknown, NaN, zero or negative) is left out and named in ``not_measured`` with the reason. The head ellipse
    (and so the gestational age) lies ``outline_inset_px`` inside the masks' edge (:func:`fit_head_ellipse`)."""
    masks = np.asarray(masks, dtype=bool)
    pixels = masks.reshape(len(masks), -1).sum(axis=1)
    result = {"pixels_per_frame": pixels.tolist(), "frames_with_segment": int((pixels > 0).sum())}
    not_measured = {}
    for name in measurements:
        problem = _spacing_problem(pixel_spacing_mm, slice_spacing_mm, needs_slices=name == "volume")
        if problem:
            not_measured[name] = problem
        else:
            measured = {}
            if name in _FROM_THE_HEAD_ELLIPSE:
                measured["outline_inset_px"] = outline_inset_px
            if name.startswith("gestational_age_") and "head_circumference_mm_per_frame" in result:
                measured["head_circumferences"] = result["head_circumference_mm_per_frame"]  # measured just before
            result.update(MEASUREMENTS[name](masks, pixel_spacing_mm, slice_spacing_mm, **measured))
    if not_measured:
        result["not_measured"] = not_measured
    return result
