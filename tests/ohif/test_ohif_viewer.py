"""A real client shows our SEGs: OHIF 3.13 in headless Chromium, against a real Orthanc on loopback, opens each study,
loads the SEG the app wrote for it the way a user does, and draws the overlay where the SEG's mask is.

Screenshots (before and after the SEG is loaded) are kept for a person, in the test's tmp_path and in out/ohif/."""

from __future__ import annotations

import shutil
from pathlib import Path

import highdicom as hd
import numpy as np
import pytest
import requests
from ohif_support import ViewerServer, missing_tools, overlay_mask, view_study
from pacs_support import PASSWORD, USER, fresh_series, start_orthanc
from pydicom.data import get_testdata_file

from lightweight_seg.pipeline import segment_paths

REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO / "out" / "ohif"
US_CASES = ["US1_UNCR.dcm", "US1_J2KR.dcm", "OBXXXX1A.dcm", "OBXXXX1A_2frame.dcm", "examples_ybr_color.dcm",
            "color3d_jpeg_baseline.dcm", "demo_us_hc18"]
OTHER_CASES = ["CT_small.dcm", "MR_small.dcm"]  # no shipped model is for them: the fetal model, forced
MIN_IOU = 0.8  # drawn overlay vs the SEG mask on the image grid (measured: 1.0 on CT and MR; 5 px off: 0.55)


def source_file(case: str) -> Path:
    if case == "demo_us_hc18":
        return REPO / "samples" / "dicom" / "us_hc18_006.dcm"
    return Path(get_testdata_file(case, download=False))


@pytest.fixture(scope="module")
def viewer(tmp_path_factory):
    """One Orthanc and one OHIF for the module, behind one loopback origin."""
    if why := missing_tools():
        pytest.fail(why)
    orthanc = start_orthanc(tmp_path_factory.mktemp("orthanc"))
    server = ViewerServer(orthanc.url, (USER, PASSWORD))
    yield orthanc, server
    server.stop()
    orthanc.stop()


def upload(orthanc, paths: list[Path]) -> None:
    for path in paths:
        answer = requests.post(f"{orthanc.url}/instances", data=path.read_bytes(), auth=(USER, PASSWORD), timeout=60)
        answer.raise_for_status()


@pytest.mark.slow
@pytest.mark.parametrize("case", US_CASES + OTHER_CASES)
def test_ohif_draws_the_seg_overlay(case, viewer, models, fetal_only, tmp_path):
    orthanc, server = viewer
    study_uid, _, sources = fresh_series(str(source_file(case)), tmp_path / "study")  # new UIDs: a study of its own
    result = segment_paths(sources, tmp_path / "app", models=models if case in US_CASES else fetal_only)
    assert result.errors == [] and len(result.outputs) == 1, (result.errors, result.skipped)
    seg_path = result.outputs[0].seg_path
    upload(orthanc, [*sources, seg_path])

    report = view_study(server.study_url(study_uid), tmp_path / "screens")
    keep = SCREENSHOTS / Path(case).stem
    shutil.rmtree(keep, ignore_errors=True)
    shutil.copytree(tmp_path / "screens", keep)
    errors = report["pageErrors"] + [message["text"] for message in report["console"] if message["type"] == "error"]
    errors = [error.split("\n    at ")[0] for error in errors]  # the message, not the stack
    assert report["failedStep"] is None, (
        f"{case}: could not {report['failedStep']}: {report['error']}; screenshot {keep}; errors in the page: {errors}")
    assert errors == [], f"{case}: the page logged errors (screenshots {keep}): {errors}"

    seg = hd.seg.segread(seg_path)
    masks = seg.pixel_array.reshape(-1, seg.Rows, seg.Columns) > 0
    assert masks.any(), f"{case}: the SEG's mask is empty, nothing to see"
    assert report["boxes"]["before"] == report["boxes"]["after"], f"{case}: the viewport moved: {report['boxes']}"
    color = hd.color.CIELabColor.from_dicom_value(seg.SegmentSequence[0].RecommendedDisplayCIELabValue).to_rgb()
    drawn = overlay_mask(keep / "before.png", keep / "after.png", report["boxes"]["after"], seg.Rows, seg.Columns,
                         tuple(color))
    ious = [np.logical_and(drawn, mask).sum() / np.logical_or(drawn, mask).sum() for mask in masks if mask.any()]
    assert max(ious) >= MIN_IOU, (
        f"{case}: the overlay drawn in the segment's colour {tuple(color)} does not match the SEG's mask "
        f"(best IoU over its frames {max(ious):.2f}; {drawn.sum()} pixels drawn, mask {masks.sum(axis=(1, 2)).max()}); "
        f"screenshots {keep}")
