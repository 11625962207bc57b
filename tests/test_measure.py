"""The geometry behind the measurements a viewer draws (the head ellipse, the largest diameter) and the gestational
age formula, on masks whose true answer is known."""

from __future__ import annotations

import math

import numpy as np
import pytest
from skimage.draw import ellipse, polygon

from lightweight_nets.measure import GESTATIONAL_AGE_FORMULAS, ellipse_perimeter, fit_head_ellipse, largest_diameter


def _scoord_to_index(points) -> np.ndarray:
    """DICOM SCOORD (column, row), origin at the top left pixel's corner -> (row, column) pixel index."""
    return np.asarray(points)[:, ::-1] - 0.5


@pytest.mark.parametrize("spacing", [(0.5, 0.5), (0.3, 0.6)])
def test_the_head_ellipse_in_pixels_is_the_drawn_ellipse_whatever_the_pixel_shape(spacing):
    """An ellipse drawn in pixels (semi-axes 60 and 25 pixels, rotated): the axis end points come back where they
    are in the image, and the perimeter is the one in mm of that ellipse on pixels of this shape."""
    mask = np.zeros((200, 260), bool)
    centre, (a, b), angle = np.array([100.0, 130.0]), (60.0, 25.0), 0.6
    mask[ellipse(*centre, a, b, rotation=angle, shape=mask.shape)] = True
    fitted = fit_head_ellipse(mask, spacing)
    ends = _scoord_to_index(fitted.axis_points)
    # skimage's rotation turns the first (row) axis towards the columns: the major axis along (cos, sin)
    major = np.array([math.cos(angle), math.sin(angle)]) * a
    minor = np.array([-math.sin(angle), math.cos(angle)]) * b
    for found, axis in ((ends[:2], major), (ends[2:], minor)):
        expected = [centre - axis, centre + axis]
        if np.linalg.norm(found[0] - expected[0]) > np.linalg.norm(found[1] - expected[0]):
            found = found[::-1]  # either end may come first
        np.testing.assert_allclose(found, expected, atol=1.0)  # within a pixel of the drawn axes
    # the true perimeter in mm: the pixel ellipse's points scaled by the pixel size
    t = np.linspace(0, 2 * np.pi, 20001)
    outline = centre + np.outer(np.cos(t), major) + np.outer(np.sin(t), minor)
    true_mm = np.sum(np.linalg.norm(np.diff(outline * spacing, axis=0), axis=1))
    assert fitted.perimeter_mm == pytest.approx(true_mm, rel=0.01)
    if spacing[0] == spacing[1]:
        assert ellipse_perimeter(a * spacing[0], b * spacing[0]) == pytest.approx(fitted.perimeter_mm, rel=0.01)


@pytest.mark.parametrize("spacing", [(0.5, 0.5), (0.3, 0.6)])
def test_an_outline_inset_measures_the_ellipse_that_far_inside_the_mask(spacing):
    """A mask drawn 3 pixels wider along both axes (as a filled outline is): with a 3-pixel inset the perimeter and
    the axis end points are the inner ellipse's, in mm on pixels of this shape; the inset only shrinks."""
    mask, inner = np.zeros((200, 260), bool), np.zeros((200, 260), bool)
    centre, (a, b), inset = np.array([100.0, 130.0]), (60.0, 25.0), 3.0
    mask[ellipse(*centre, a + inset, b + inset, shape=mask.shape)] = True
    inner[ellipse(*centre, a, b, shape=mask.shape)] = True
    fitted, expected = fit_head_ellipse(mask, spacing, inset), fit_head_ellipse(inner, spacing)
    assert fitted.perimeter_mm == pytest.approx(ellipse_perimeter(a * spacing[0], b * spacing[1]), rel=0.01)
    assert fitted.perimeter_mm == pytest.approx(expected.perimeter_mm, rel=0.01)
    np.testing.assert_allclose(sorted(fitted.axis_points), sorted(expected.axis_points), atol=0.5)
    assert fit_head_ellipse(mask, spacing).perimeter_mm > fitted.perimeter_mm
    assert fit_head_ellipse(mask, spacing, b + inset + 1) is None  # inset past the minor axis: no ellipse


def test_an_empty_or_tiny_mask_has_no_ellipse_and_no_diameter():
    assert fit_head_ellipse(np.zeros((10, 10), bool), 1.0) is None
    assert largest_diameter(np.zeros((10, 10), bool), 1.0) is None


@pytest.mark.parametrize("spacing", [(1.0, 1.0), (0.5, 2.0)])
def test_the_largest_diameter_of_a_triangle_is_its_longest_side(spacing):
    """A right triangle 40 rows by 90 columns: its longest chord is the hypotenuse (on isotropic pixels), or the
    side that is longest in mm."""
    mask = np.zeros((60, 120), bool)
    mask[polygon([10, 50, 50], [10, 10, 100], shape=mask.shape)] = True
    length, ends = largest_diameter(mask, spacing)
    ends = _scoord_to_index(ends)
    sides = {"hypotenuse": (40 * spacing[0], 90 * spacing[1]), "bottom": (0, 90 * spacing[1])}
    expected = max(math.hypot(*side) for side in sides.values())
    assert length == pytest.approx(expected, abs=1.5 * max(spacing))
    assert np.linalg.norm((ends[1] - ends[0]) * spacing) == pytest.approx(length)


def test_hadlock_1984_agrees_with_the_mean_head_circumference_per_week_and_refuses_outside_its_range():
    """Hadlock's mean HC for each menstrual week (the same group's table, a regression the other way round, so not
    identical) gives back its week to within 1.5 weeks from 14 to 40 weeks; outside the 14 to 42 weeks the 1984
    population covered no age is given."""
    formula = GESTATIONAL_AGE_FORMULAS["hadlock_1984"]
    table = {
        14: 9.7,
        16: 12.4,
        18: 15.1,
        20: 17.7,
        22: 20.1,
        24: 22.4,
        26: 24.6,
        28: 26.6,
        30: 28.4,
        32: 30.1,
        34: 31.5,
        36: 32.8,
        38: 33.8,
        40: 34.6,
    }  # weeks: HC in cm
    for weeks, hc_cm in table.items():
        assert formula.weeks(hc_cm * 10)[0] == pytest.approx(weeks, abs=1.5)
    assert formula.weeks(177.0)[0] == pytest.approx(8.96 + 0.540 * 17.7 + 0.0003 * 17.7**3)
    for hc_mm in (60.0, 420.0):
        value, reason = formula.weeks(hc_mm)
        assert value is None and "outside the 14-42 weeks" in reason
