"""The demo input that ships with the repository: a conformant obstetric ultrasound whose calibration gives the
HC18 pixel size, and a run of the pipeline over the whole sample folder (the ultrasound to the fetal-head model,
the limb CT to the sarcoma model)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pydicom
import pytest
from test_app_support import dciodvfy_errors

from lightweight_nets.io.dicom import dicom_pixel_spacing_mm
from lightweight_seg.pipeline import segment_paths

SAMPLES = Path(__file__).resolve().parents[1] / "samples"


def test_demo_ultrasound_is_conformant_and_calibrated():
    path = SAMPLES / "dicom" / "us_hc18_006.dcm"
    assert dciodvfy_errors(path) == []
    with open(SAMPLES / "hc18" / "pixel_size_and_hc.csv") as table:
        expected = {row["filename"]: float(row["pixel_size_mm"]) for row in csv.DictReader(table)}["006_HC.png"]
    assert dicom_pixel_spacing_mm(pydicom.dcmread(path)) == pytest.approx((expected, expected))


def test_demo_folder_segments_both_series_each_with_its_model(models, tmp_path):
    result = segment_paths(SAMPLES / "dicom", tmp_path, models=models)
    assert result.errors == [] and result.skipped == []
    reports = {output.model: json.loads(output.report_path.read_text()) for output in result.outputs}
    assert {model: report["modality"] for model, report in reports.items()} == {
        "fetal_head_us": "US",
        "sarcoma_ct": "CT",
    }
    assert reports["fetal_head_us"]["segments"][0]["head_circumference_mm_per_frame"][0] > 0
    assert "volume_mm3" in reports["sarcoma_ct"]["segments"][0]
