"""Bad input: each case gets one line naming the file and the problem, the rest of the folder is still
segmented, and nothing half-written is left behind. Every series goes to the fetal-head model (forced), so that
the CT and MR files are read as far as a model that is for them would read them."""

from __future__ import annotations

import json
import shutil

import pydicom
import pytest
from test_app_support import dciodvfy_errors, input_path

from lightweight_seg.pipeline import segment_paths


def _not_dicom(folder):
    path = folder / "notes.txt"
    path.write_text("not an image\n")
    return path, "not a DICOM file"


def _truncated_pixels(folder):
    path = folder / "truncated_pixels.dcm"
    path.write_bytes(input_path("CT_small.dcm").read_bytes()[:20000])
    return path, "cannot decode pixel data"


def _truncated_header(folder):
    path = folder / "truncated_header.dcm"
    path.write_bytes(input_path("CT_small.dcm").read_bytes()[:400])
    return path, "incomplete header (truncated?): no SeriesInstanceUID"


def _no_pixel_data(folder):
    ds = pydicom.dcmread(input_path("MR_small.dcm"))
    del ds.PixelData
    ds.SeriesInstanceUID = pydicom.uid.generate_uid()
    path = folder / "no_pixels.dcm"
    ds.save_as(path)
    return path, "no pixel data"


def _unsupported_sop_class(folder):
    path = folder / "rtplan.dcm"
    shutil.copy(input_path("rtplan.dcm"), path)
    return path, "unsupported SOP class 'RT Plan Storage'"


BAD_FILES = [_not_dicom, _truncated_pixels, _truncated_header, _no_pixel_data, _unsupported_sop_class]


@pytest.mark.parametrize("make_bad_file", BAD_FILES, ids=lambda f: f.__name__.strip("_"))
def test_bad_file_is_named_and_the_rest_still_segmented(make_bad_file, fetal_only, tmp_path):
    folder = tmp_path / "in"
    shutil.copytree(input_path("CT5N"), folder)
    bad_path, problem = make_bad_file(folder)
    result = segment_paths(folder, tmp_path / "out", models=fetal_only)
    assert len(result.outputs) == 1 and dciodvfy_errors(result.outputs[0].seg_path) == []
    ((where, message),) = result.errors
    assert where == str(bad_path) and message.startswith(f"{bad_path}: {problem}") and "\n" not in message


@pytest.mark.parametrize("make_bad_file", BAD_FILES, ids=lambda f: f.__name__.strip("_"))
def test_bad_file_alone_segments_nothing(make_bad_file, fetal_only, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    bad_path, problem = make_bad_file(folder)
    result = segment_paths(folder, tmp_path / "out", models=fetal_only)
    assert result.outputs == []
    assert any(message.startswith(f"{bad_path}: {problem}") for _, message in result.errors)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_empty_folder(fetal_only, tmp_path):
    result = segment_paths(tmp_path, tmp_path / "out", models=fetal_only)
    assert result.outputs == [] and result.errors == [(str(tmp_path), f"{tmp_path}: no files")]


def test_missing_path(fetal_only, tmp_path):
    result = segment_paths(tmp_path / "absent", tmp_path / "out", models=fetal_only)
    assert result.outputs == [] and result.errors[0][1] == f"{tmp_path / 'absent'}: no such file or folder"


def test_no_series_matches_the_rules(fetal_only, tmp_path):
    rules = tmp_path / "ct_only.json"
    rules.write_text(json.dumps({"selections": [{"name": "CT", "conditions": {"Modality": "^CT$"}}]}))
    path = input_path("MR_small.dcm")
    result = segment_paths(path, tmp_path / "out", models=fetal_only, rules=rules)
    assert result.outputs == []
    assert result.errors == [(str(path), f"{path}: no series matches the selection rules (found: MR)")]


def test_rules_without_conditions_are_refused(fetal_only, tmp_path):
    rules = tmp_path / "empty.json"
    rules.write_text(json.dumps({"selections": [{"name": "all", "conditions": {}}]}))
    result = segment_paths(input_path("CT5N"), tmp_path / "out", models=fetal_only, rules=rules)
    assert result.outputs == [] and "has no conditions" in result.errors[0][1]


def test_image_type_and_body_part_rules(fetal_only, tmp_path):
    """AND within a selection, OR across selections, lists name required ("!": excluded) ImageType values."""
    rules = tmp_path / "rules.json"
    rules.write_text(json.dumps({"selections": [
        {"name": "primary US", "conditions": {"Modality": "US", "ImageType": ["PRIMARY", "!DERIVED"]}},
        {"name": "chest CT", "conditions": {"Modality": "CT", "BodyPartExamined": "chest"}},
    ]}))
    paths = [input_path("OBXXXX1A.dcm"), input_path("examples_ybr_color.dcm"), input_path("CT5N")]
    result = segment_paths(paths, tmp_path / "out", models=fetal_only, rules=rules)
    # examples_ybr_color is DERIVED and CT5N names no body part: only OBXXXX1A's series is segmented
    assert [json.loads(o.report_path.read_text())["source_instances"] for o in result.outputs] == [
        [pydicom.dcmread(input_path("OBXXXX1A.dcm"), stop_before_pixels=True).SOPInstanceUID]]


def test_failed_seg_leaves_nothing_behind(fetal_only, tmp_path):
    """A CT slice without PixelSpacing decodes and segments, but no SEG can place it: the series fails
    with a one-line message and no SEG, overlay, report or temporary file is left."""
    ds = pydicom.dcmread(input_path("CT_small.dcm"))
    del ds.PixelSpacing
    ds.save_as(tmp_path / "no_spacing.dcm")
    result = segment_paths(tmp_path / "no_spacing.dcm", tmp_path / "out", models=fetal_only)
    assert result.outputs == []
    ((where, message),) = result.errors
    assert where == ds.SeriesInstanceUID and message.startswith(f"series {ds.SeriesInstanceUID}: not segmented")
    assert list((tmp_path / "out").iterdir()) == []
