"""The demo input that ships with the repository: a conformant ultrasound whose calibration gives the HC18
pixel size, and a run of the pipeline over the whole sample folder."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pydicom
import pytest
from test_app_support import dciodvfy_errors, make_bundle

from lightweight_nets.io import dicom_pixel_spacing_mm
from lightweight_seg.pipeline import segment_paths

SAMPLES = Path(__file__).resolve().parents[1] / "samples"


def test_demo_ultrasound_is_conformant_and_calibrated():
    path = SAMPLES / "dicom" / "us_hc18_006.dcm"
    assert dciodvfy_errors(path) == []
    with open(SAMPLES / "hc18" / "pixel_size_and_hc.csv") as table:
        expected = {row["filename"]: float(row["pixel_size_mm"]) for row in csv.DictReader(table)}["006_HC.png"]
    assert dicom_pixel_spacing_mm(pydicom.dcmread(path)) == pytest.approx((expected, expected))


def test_demo_folder_segments_both_series(tmp_path):
    result = segment_paths(SAMPLES / "dicom", tmp_path, bundle_root=make_bundle(tmp_path / "bundle"))
    assert result.errors == []
    reports = {json.loads(o.report_path.read_text())["modality"]: json.loads(o.report_path.read_text())
               for o in result.outputs}
    assert set(reports) == {"CT", "US"}
    assert "head_circumference_mm_per_frame" in reports["US"]["segment"]
    assert "volume_mm3" in reports["CT"]["segment"]
