"""The MONAI Deploy way: ``python apps/lightweight_seg -i DICOM_DIR -o OUT_DIR -m MODEL`` and the HOLOSCAN_*
variables, running the SDK's loader and selector with our operator under Holoscan (on the CPU)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import highdicom as hd
import pydicom
from test_app_bad_input import _deflate_not_deflated, _no_study_uid, _truncated_jpeg2000
from test_app_support import (
    REFERENCED_FRAME_OF_SINGLE_FRAME_CLASS,
    SHARED_DATA,
    dciodvfy_errors,
    input_path,
    write_ultrasound,
)

from lightweight_seg.routing import DEFAULT_BUNDLES

SAMPLES_DICOM = Path(__file__).resolve().parents[1] / "samples" / "dicom"

APP_DIR = Path(__file__).resolve().parents[1] / "apps" / "lightweight_seg"


def _run_app(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(APP_DIR), *args, "-l", "WARN"],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=timeout,
    )


def test_cli_segments_a_mixed_folder_and_names_the_bad_file(tmp_path):
    """The default -m (every shipped bundle): the obstetric cine, the breast US and the limb CT (the sarcoma model,
    as one volume) each segmented by its model; the CT of unknown region named and skipped; every bad file named."""
    folder = tmp_path / "in"
    shutil.copytree(input_path("CT5N"), folder / "ct")
    shutil.copytree(SAMPLES_DICOM / "sts_019_ct", folder / "limb_ct")
    shutil.copy(input_path("OBXXXX1A_2frame.dcm"), folder / "cine.dcm")
    write_ultrasound(folder / "breast.dcm", SHARED_DATA / "busi" / "images" / "malignant_1.png", "BREAST")
    truncated = folder / "truncated.dcm"
    truncated.write_bytes(input_path("US1_UNCR.dcm").read_bytes()[:30000])
    (folder / "notes.txt").write_text("not an image\n")
    shutil.copy(input_path("rtplan.dcm"), folder / "rtplan.dcm")
    run = _run_app("-i", str(folder), "-o", str(tmp_path / "out"))
    assert run.returncode == 0, run.stderr[-2000:]
    segs = sorted((tmp_path / "out").glob("*.seg.dcm"))
    assert len(segs) == 3 and run.stdout.count("  SEG ") == 3
    labels = {hd.seg.segread(seg).SegmentSequence[0].SegmentLabel: hd.seg.segread(seg).NumberOfFrames for seg in segs}
    # the IBSI CT's own errors (a Study ID one character longer than SH allows, no Laterality) are all a SEG of its
    # study may inherit; the cine's SEG and SR reference its frames by number (test_app_support)
    allowed = set(dciodvfy_errors(next((folder / "limb_ct").iterdir()))) | {REFERENCED_FRAME_OF_SINGLE_FRAME_CLASS}
    assert all(set(dciodvfy_errors(seg)) <= allowed for seg in segs)
    assert labels == {"fetal head": 2, "breast lesion": 1, "soft-tissue sarcoma": 47}
    assert "-> fetal_head_us: fetal head on" in run.stdout and "-> breast_lesion_us: breast lesion on" in run.stdout
    assert "CT series" in run.stdout and "-> sarcoma_ct: soft-tissue sarcoma on" in run.stdout
    assert run.stderr.count("skipped: ") == 1 and "no model for CT/no body part" in run.stderr
    assert f"error: {truncated}: cannot decode pixel data" in run.stderr
    assert f"error: {folder / 'notes.txt'}: not a DICOM file" in run.stderr
    assert f"error: {folder / 'rtplan.dcm'}: unsupported SOP class 'RT Plan Storage'" in run.stderr
    # the measurement SR of the CT volume only: the 2-frame cine shows no fetal head (the model's "nothing here" rule
    # leaves its frames empty, so nothing is measured) and the breast image has no pixel size
    assert "-> fetal_head_us: fetal head on 0 of 2 frames" in run.stdout
    srs = sorted((tmp_path / "out").glob("*.sr.dcm"))
    assert len(srs) == 1 and run.stdout.count("  SR ") == 1
    assert all(set(dciodvfy_errors(sr)) <= allowed for sr in srs)
    assert len(list((tmp_path / "out").iterdir())) == 10  # SEG, overlay, report each, SR where measured; no temporary


def test_forced_model_and_a_single_bundle(tmp_path):
    """--model NAME forces a bundle; -m one bundle serves only what its rules claim."""
    folder = tmp_path / "in"
    shutil.copytree(input_path("CT5N"), folder / "ct")
    run = _run_app("-i", str(folder), "-o", str(tmp_path / "forced"), "--model", "fetal_head_us")
    assert run.returncode == 0, run.stderr[-2000:]
    assert "CT series" in run.stdout and "-> fetal_head_us" in run.stdout
    run = _run_app("-i", str(folder), "-o", str(tmp_path / "single"), "-m", str(DEFAULT_BUNDLES / "breast_lesion_us"))
    assert run.returncode == 1
    assert "skipped: series" in run.stderr and "(serving breast_lesion_us)" in run.stderr
    assert f"error: {folder}: no model for any series" in run.stderr
    run = _run_app("-i", str(folder), "-o", str(tmp_path / "unknown"), "--model", "spleen")
    assert run.returncode == 1 and "error: --model spleen: no such bundle" in run.stderr


def test_holoscan_variables_and_nothing_to_segment(tmp_path):
    (tmp_path / "in").mkdir()
    env = {
        "HOLOSCAN_INPUT_PATH": str(tmp_path / "in"),
        "HOLOSCAN_OUTPUT_PATH": str(tmp_path / "out"),
        "HOLOSCAN_MODEL_PATH": str(DEFAULT_BUNDLES),
    }
    run = _run_app(env=env)
    assert run.returncode == 1
    assert f"error: {tmp_path / 'in'}: no files" in run.stderr
    shutil.copy(input_path("MR_small.dcm"), tmp_path / "in")
    rules = tmp_path / "ct_only.json"
    rules.write_text('{"selections": [{"name": "CT", "conditions": {"Modality": "^CT$"}}]}')
    run = _run_app("--rules", str(rules), env=env)
    assert run.returncode == 1
    assert f"error: {tmp_path / 'in'}: no series matches the selection rules" in run.stderr


def test_missing_model_is_a_one_line_error(tmp_path):
    (tmp_path / "models").mkdir()
    run = _run_app("-i", str(input_path("CT5N")), "-o", str(tmp_path / "out"), "-m", str(tmp_path))
    assert run.returncode == 1 and f"error: {tmp_path}: not a model bundle" in run.stderr
    shutil.copytree(DEFAULT_BUNDLES / "fetal_head_us" / "configs", tmp_path / "configs")
    run = _run_app("-i", str(input_path("CT5N")), "-o", str(tmp_path / "out"), "-m", str(tmp_path))
    assert run.returncode == 1 and f"error: {tmp_path / 'models'}: no model file" in run.stderr
    assert "Traceback" not in run.stderr


def test_cli_hostile_folder_never_hangs_and_the_good_series_is_segmented(tmp_path):
    """Through the SDK loader: a link from a folder to its parent (a cycle), a link to itself, a FIFO, a dangling
    link, a file whose Deflate transfer syntax is not deflated, a truncated JPEG 2000 and a file without
    StudyInstanceUID beside the obstetric sample, and a file name with a newline. No hang, no traceback: each bad
    entry is one `error:` line naming it, the good image is segmented once (a second link to it is not a second
    instance, a second selection that matches it not a second SEG), the MR the rules do not select is named, exit
    status 0."""
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    good = folder / "sub" / "us.dcm"
    shutil.copy(SAMPLES_DICOM / "us_hc18_006.dcm", good)
    (folder / "sub" / "parent").symlink_to("..")
    (folder / "itself").symlink_to("itself")
    (folder / "dangling.dcm").symlink_to(tmp_path / "gone.dcm")
    (folder / "again.dcm").symlink_to(good)
    os.mkfifo(folder / "fifo")
    deflate, _ = _deflate_not_deflated(folder)
    truncated, _ = _truncated_jpeg2000(folder)
    no_study, _ = _no_study_uid(folder)
    newline = folder / "two\nlines.dcm"
    newline.write_text("not an image\n")
    shutil.copy(input_path("MR_small.dcm"), folder / "mr.dcm")
    rules = tmp_path / "rules.json"  # two selections that both match the ultrasound: it is still segmented once
    rules.write_text(
        '{"selections": [{"name": "US", "conditions": {"Modality": "^US$"}}, '
        '{"name": "primary", "conditions": {"Modality": "US", "ImageType": ["PRIMARY"]}}]}'
    )
    run = _run_app("-i", str(folder), "-o", str(tmp_path / "out"), "--rules", str(rules), timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "Traceback" not in run.stderr
    assert len(list((tmp_path / "out").glob("*.seg.dcm"))) == 1
    assert run.stdout.count("-> fetal_head_us: fetal head") == 1
    mr_series = pydicom.dcmread(folder / "mr.dcm", stop_before_pixels=True).SeriesInstanceUID
    assert f"skipped: series {mr_series}: not selected by the selection rules (rules.json)" in run.stderr.splitlines()
    assert hd.seg.segread(next((tmp_path / "out").glob("*.seg.dcm"))).NumberOfFrames == 1
    errors = [line for line in run.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 8 and {
        f"error: {folder / 'sub' / 'parent'}: symbolic link to a folder already read (a loop?): not followed",
        f"error: {folder / 'itself'}: symbolic link loop: not followed",
        f"error: {folder / 'dangling.dcm'}: dangling symbolic link (to {tmp_path / 'gone.dcm'})",
        f"error: {folder / 'fifo'}: not a regular file (FIFO): not read",
        f"error: {folder / 'two'}\\nlines.dcm: not a DICOM file",
        f"error: {no_study}: incomplete header: no StudyInstanceUID",
    } < set(errors)
    assert any(e.startswith(f"error: {deflate}: not deflated although its transfer syntax is Deflate") for e in errors)
    assert any(e.startswith(f"error: {truncated}: no data set after the file meta information") for e in errors)
