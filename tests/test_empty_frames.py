"""The shipped models' "nothing here" rule (each bundle's ``postprocessing#presence``) on real frames: frames
without the structure come out empty with no measurement, frames with it keep it (docs/empty_frames.md)."""

from __future__ import annotations

import json

from test_app_support import REPO, SHARED_DATA, input_path, write_ultrasound

from lightweight_nets.inference.segment import segment_frames
from lightweight_nets.io.images import read_image
from lightweight_nets.io.tables import read_pixel_sizes
from lightweight_nets.measure import measure_segment
from lightweight_seg.dicom_io import build_stacks, group_series, read_headers
from lightweight_seg.pipeline import segment_paths

HC18 = REPO / "samples" / "hc18"


def test_the_fetal_model_finds_no_head_on_half_the_frames_of_a_non_obstetric_cine(models):
    """color3d_jpeg_baseline shows no fetal head; without the rule a "head" is found on all 120 frames, with it
    on 64 (docs/empty_frames.md; the 256 x 256 model before it kept 48). Read and segmented as the app does
    (``segment_paths`` reads the series into stacks and segments each with ``segment_frames``; writing its SEG and
    SR takes longer than a test should), and an empty frame measures no head circumference."""
    headers, errors = read_headers([input_path("color3d_jpeg_baseline.dcm")])
    ((uid, series),) = group_series(headers).items()
    (stack,), errors = build_stacks(uid, series)
    assert not errors
    spec = models.bundles["fetal_head_us"]
    labels = segment_frames(stack.frames, spec.load_predictor(), spec.preprocessing, spec.postprocessing)
    found = labels.reshape(len(labels), -1).any(axis=1)
    assert len(found) == 120 and found.mean() <= 0.6
    measured = measure_segment(labels == 1, ["head_circumference"], stack.pixel_spacing_mm, stack.slice_spacing_mm)
    per_frame = measured["head_circumference_mm_per_frame"]
    assert all((value is None) == (not on) for value, on in zip(per_frame, found))


def test_the_fetal_model_keeps_the_head_of_every_hc18_sample(models, tmp_path):
    """Every HC18 sample, as a DICOM ultrasound, keeps its head and its head circumference."""
    pixel_sizes = read_pixel_sizes(HC18 / "pixel_size_and_hc.csv")
    (tmp_path / "in").mkdir()
    for image in sorted((HC18 / "images").glob("*.png")):
        write_ultrasound(tmp_path / "in" / f"{image.stem}.dcm", image, "FETUS", pixel_size_mm=pixel_sizes[image.name])
    outputs = segment_paths(tmp_path / "in", tmp_path / "out", models=models).outputs
    assert len(outputs) == len(pixel_sizes) == 10
    for output in outputs:
        (segment,) = json.loads(output.report_path.read_text())["segments"]
        assert segment["frames_with_segment"] == 1 and segment["head_circumference_mm_per_frame"][0] > 0


def test_the_breast_model_keeps_lesions_and_empties_normals_it_is_sure_of(models):
    """BUSI validation images (read in place, never committed): lesions keep their lesion; the normal images
    the rule calls empty on docs/empty_frames.md stay empty (14 of the 19 normals are still found)."""
    spec = models.bundles["breast_lesion_us"]
    predictor = spec.load_predictor()
    folder = SHARED_DATA / "busi" / "images"
    for name, has_lesion in [
        ("benign_10.png", True),
        ("benign_101.png", True),
        ("benign_106.png", True),
        ("normal_100.png", False),
        ("normal_17.png", False),
        ("normal_20.png", False),
    ]:
        labels = segment_frames(read_image(folder / name).pixels, predictor, spec.preprocessing, spec.postprocessing)
        assert labels.any() == has_lesion, name
