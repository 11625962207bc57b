"""The measurement SR beside each SEG, on real calibrated ultrasound (two HC18 heads, one BUSI lesion): conformant
(dciodvfy), read back with highdicom, every value the report's, the drawn geometry the measured one, and every
reference pointing at the source frame and the SEG."""

from __future__ import annotations

import json
import math
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from test_app_support import (
    REFERENCED_FRAME_OF_SINGLE_FRAME_CLASS,
    SHARED_DATA,
    dciodvfy_errors,
    input_path,
    write_ultrasound,
)

from lightweight_nets.io.tables import read_pixel_sizes
from lightweight_nets.measure import GESTATIONAL_AGE_FORMULAS, ellipse_perimeter
from lightweight_seg.pipeline import segment_paths
from lightweight_seg.sr_writer import ELLIPSE_VERTICES

HC18 = Path(__file__).resolve().parents[1] / "samples" / "hc18"
PIXEL_SIZES = read_pixel_sizes(HC18 / "pixel_size_and_hc.csv")
BREAST_PIXEL_MM = 0.1
INPUTS = {  # file -> (image, body part, study description, pixel size)
    "head_19_weeks.dcm": (HC18 / "images" / "199_HC.png", "ABDOMEN", "OB ultrasound", PIXEL_SIZES["199_HC.png"]),
    "head_13_weeks.dcm": (HC18 / "images" / "006_HC.png", "ABDOMEN", "OB ultrasound", PIXEL_SIZES["006_HC.png"]),
    "breast.dcm": (SHARED_DATA / "busi" / "images" / "benign_1.png", "BREAST", "US breast right", BREAST_PIXEL_MM),
}


@pytest.fixture(scope="module")
def outputs(models, tmp_path_factory) -> dict[str, tuple]:
    """Input file name -> (its source dataset, its pipeline output, its report)."""
    folder, out = tmp_path_factory.mktemp("in"), tmp_path_factory.mktemp("out")
    sources = {
        name: pydicom.dcmread(write_ultrasound(folder / name, image, part, study, pixel_size_mm=size))
        for name, (image, part, study, size) in INPUTS.items()
    }
    result = segment_paths(folder, out, models=models)
    assert result.errors == [] and len(result.outputs) == 3
    by_series = {output.series_uid: output for output in result.outputs}
    return {
        name: (
            source,
            by_series[source.SeriesInstanceUID],
            json.loads(by_series[source.SeriesInstanceUID].report_path.read_text()),
        )
        for name, source in sources.items()
    }


def _group(sr: hd.sr.Comprehensive3DSR) -> hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations:
    (group,) = sr.content.get_planar_roi_measurement_groups()
    return group


def _values(group) -> dict[str, hd.sr.Measurement]:
    return {measurement.name.meaning: measurement for measurement in group.get_measurements()}


@pytest.mark.parametrize("name", list(INPUTS))
def test_the_sr_is_conformant_named_in_the_report_and_references_source_and_seg(outputs, name):
    source, output, report = outputs[name]
    assert output.sr_path is not None and report["outputs"]["sr"] == output.sr_path.name
    assert dciodvfy_errors(output.sr_path) == []
    sr, seg = hd.sr.srread(output.sr_path), pydicom.dcmread(output.seg_path)
    assert sr.SOPClassUID == pydicom.uid.Comprehensive3DSRStorage
    assert sr.ContentTemplateSequence[0].TemplateIdentifier == "1500"
    assert (sr.StudyInstanceUID, sr.PatientID) == (source.StudyInstanceUID, source.PatientID)
    assert sr.SeriesNumber == seg.SeriesNumber + 50 and sr.SeriesInstanceUID != seg.SeriesInstanceUID
    evidence = {
        ref.ReferencedSOPInstanceUID
        for study in sr.CurrentRequestedProcedureEvidenceSequence
        for series in study.ReferencedSeriesSequence
        for ref in series.ReferencedSOPSequence
    }
    assert evidence == {source.SOPInstanceUID, seg.SOPInstanceUID}
    group = _group(sr)
    assert group.roi.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
    for measurement in group.get_measurements():  # computed from frame 1 of the SEG
        (image,) = measurement.referenced_images
        assert image.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == seg.SOPInstanceUID
        assert [int(image.ReferencedSOPSequence[0].ReferencedFrameNumber)] == [1]


def test_head_circumference_sr_is_the_fitted_ellipse_the_report_and_its_gestational_age(outputs):
    source, output, report = outputs["head_19_weeks.dcm"]
    (segment,) = report["segments"]
    hc, weeks = segment["head_circumference_mm_per_frame"][0], segment["gestational_age_weeks_per_frame"][0]
    assert abs(hc - 160.72) / 160.72 < 0.15  # the sonographer's
    assert weeks == round(GESTATIONAL_AGE_FORMULAS["hadlock_1984"].weeks(hc)[0], 2) and 14 <= weeks <= 42
    group = _group(hd.sr.srread(output.sr_path))
    assert group.tracking_identifier == "fetal head" and group.finding_sites[0].value.meaning == "Head"
    # a closed polygon on the fitted ellipse (OHIF 3.13 draws no oblique SCOORD ELLIPSE), the axis ends among its
    # vertices: a quarter of the way round each
    assert group.roi.graphic_type == hd.sr.GraphicTypeValues.POLYLINE
    polygon = group.roi.value
    assert len(polygon) == ELLIPSE_VERTICES + 1
    points = polygon[[0, ELLIPSE_VERTICES // 2, ELLIPSE_VERTICES // 4, 3 * ELLIPSE_VERTICES // 4]]
    np.testing.assert_allclose(points, segment["head_ellipse_points"][0], atol=1e-3)
    np.testing.assert_allclose(polygon[-1], polygon[0], atol=1e-3)
    # the drawn ellipse is the measured one: the same centre, perpendicular axes, and its perimeter is the HC
    major, minor = points[1] - points[0], points[3] - points[2]
    np.testing.assert_allclose(points[:2].mean(axis=0), points[2:].mean(axis=0), atol=0.01)
    assert abs(np.dot(major, minor)) / (np.linalg.norm(major) * np.linalg.norm(minor)) < 1e-3
    size = PIXEL_SIZES["199_HC.png"]
    assert ellipse_perimeter(np.linalg.norm(major) / 2 * size, np.linalg.norm(minor) / 2 * size) == pytest.approx(
        hc, abs=0.02
    )
    # every vertex is on that ellipse, and the polygon's perimeter is the HC within 0.1 %
    centre, (a, b) = points[:2].mean(axis=0), (np.linalg.norm(major) / 2, np.linalg.norm(minor) / 2)
    along = (polygon - centre) @ np.stack([major / (2 * a), minor / (2 * b)]).T
    np.testing.assert_allclose((along[:, 0] / a) ** 2 + (along[:, 1] / b) ** 2, 1, atol=1e-4)
    assert np.linalg.norm(np.diff(polygon, axis=0), axis=1).sum() * size == pytest.approx(hc, rel=1e-3)
    values = _values(group)
    assert set(values) == {"Area", "Head Circumference", "Gestational Age"}
    assert (values["Head Circumference"].value, values["Head Circumference"].unit.value) == (hc, "mm")
    assert (values["Gestational Age"].value, values["Gestational Age"].unit.value) == (weeks, "wk")
    assert (values["Area"].value, values["Area"].unit.value) == (segment["area_mm2_per_frame"][0], "mm2")
    assert values["Head Circumference"].name.value == "11984-2"
    equation = [
        item.ConceptCodeSequence[0]
        for item in values["Gestational Age"][0].ContentSequence
        if item.ConceptNameCodeSequence[0].CodeValue == "121420"
    ]
    assert [(code.CodeValue, code.CodingSchemeDesignator) for code in equation] == [("11932-1", "LN")]


def test_gestational_age_outside_the_formula_range_is_not_reported_and_says_why(outputs):
    source, output, report = outputs["head_13_weeks.dcm"]
    (segment,) = report["segments"]
    hc = segment["head_circumference_mm_per_frame"][0]
    assert hc < 89  # HC18 006: 67.84 mm by the sonographer, about 12.7 weeks by Hadlock (14 weeks: 89 mm)
    assert segment["gestational_age_weeks_per_frame"] == [None]
    (reason,) = segment["gestational_age_not_given"]
    assert f"HC {hc:g} mm" in reason and "outside the 14-42 weeks" in reason and "Hadlock" in reason
    assert set(_values(_group(hd.sr.srread(output.sr_path)))) == {"Area", "Head Circumference"}


def test_breast_lesion_sr_gives_area_and_the_largest_diameter_as_a_line(outputs):
    source, output, report = outputs["breast.dcm"]
    (segment,) = report["segments"]
    group = _group(hd.sr.srread(output.sr_path))
    assert group.tracking_identifier == "breast lesion" and group.finding_sites[0].value.meaning == "Breast"
    assert group.finding_type.meaning == "Lesion"
    assert group.roi.graphic_type == hd.sr.GraphicTypeValues.POLYLINE
    ends = group.roi.value
    np.testing.assert_allclose(ends, segment["largest_diameter_points"][0], atol=1e-3)
    diameter = segment["largest_diameter_mm_per_frame"][0]
    assert np.linalg.norm(ends[1] - ends[0]) * BREAST_PIXEL_MM == pytest.approx(diameter, abs=0.01)
    values = _values(group)
    assert (values["Long axis"].value, values["Long axis"].unit.value) == (diameter, "mm")
    assert (values["Area"].value, values["Area"].unit.value) == (segment["area_mm2_per_frame"][0], "mm2")
    # the longest chord of a lesion is at least the diameter of a disc of its area
    assert diameter >= 2 * math.sqrt(segment["area_mm2_per_frame"][0] / math.pi)


@pytest.mark.parametrize("name", ["examples_ybr_color.dcm", "OBXXXX1A_2frame.dcm"])
def test_a_cine_gets_one_group_per_frame_on_that_frame_and_its_seg_frame(fetal_only, name, tmp_path):
    """Each group of a cine is on the frame it names: its region references that source frame (where the SOP class
    takes frame numbers, else the instance), and its measurements the SEG frame made from that source frame."""
    (output,) = segment_paths(input_path(name), tmp_path, models=fetal_only).outputs
    report = json.loads(output.report_path.read_text())
    (segment,) = report["segments"]
    source = pydicom.dcmread(input_path(name), stop_before_pixels=True)
    single_frame_class = source.SOPClassUID != pydicom.uid.UltrasoundMultiFrameImageStorage
    expected = {REFERENCED_FRAME_OF_SINGLE_FRAME_CLASS} if single_frame_class else set()  # as its SEG
    assert set(dciodvfy_errors(output.sr_path)) == expected
    seg = pydicom.dcmread(output.seg_path)
    groups = hd.sr.srread(output.sr_path).content.get_planar_roi_measurement_groups()
    on = [k + 1 for k, pixels in enumerate(segment["pixels_per_frame"]) if pixels]
    assert [group.tracking_identifier for group in groups] == [f"fetal head frame {k}" for k in on] and len(on) > 1
    for k, group in zip(on, groups):  # frame numbers for every multi-frame instance, whatever its SOP class
        region_source = group.roi.ContentSequence[0].ReferencedSOPSequence[0]
        assert region_source.get("ReferencedFrameNumber") == k
        seg_frame = int(group.get_measurements()[0].referenced_images[0].ReferencedSOPSequence[0].ReferencedFrameNumber)
        item = seg.PerFrameFunctionalGroupsSequence[seg_frame - 1]
        source = item.DerivationImageSequence[0].SourceImageSequence[0]
        assert source.get("ReferencedFrameNumber", item.FrameContentSequence[0].get("TemporalPositionIndex")) == k
        hc = segment["head_circumference_mm_per_frame"][k - 1]
        assert hc is None or _values(group)["Head Circumference"].value == hc
