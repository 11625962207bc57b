"""The Deploy app's pipeline on every real input: a SEG that dciodvfy passes, that references its source
instances and frames correctly (read back with highdicom), and the overlay and report beside it. CT and MR go
through the fetal-head model, forced (no shipped model is for them): this proves the SEG plumbing, not a result."""

from __future__ import annotations

import dataclasses
import json

import highdicom as hd
import numpy as np
import pytest
from PIL import Image
from test_app_support import (
    FOLDER_INPUTS,
    REFERENCED_FRAME_OF_SINGLE_FRAME_CLASS,
    SINGLE_FILE_INPUTS,
    dciodvfy_errors,
    input_path,
)

from lightweight_seg.dicom_io import Stack, build_stacks, find_files, read_headers
from lightweight_seg.pipeline import segment_paths, segment_stack
from lightweight_seg.seg_writer import _packed_frames, build_seg


def _stacks(name: str) -> list[Stack]:
    headers, errors = read_headers(find_files(input_path(name))[0])
    stacks, decode_errors = build_stacks(headers[0].SeriesInstanceUID, headers)
    assert errors == decode_errors == []
    return stacks


def _frame_keys(seg: hd.seg.Segmentation) -> list[tuple[str, int | None]]:
    """Per SEG frame: the referenced source instance, and its frame number (or the temporal index for a cine
    whose SOP class may not carry frame numbers)."""
    keys = []
    for item in seg.PerFrameFunctionalGroupsSequence:
        source = item.DerivationImageSequence[0].SourceImageSequence[0]
        content = item.FrameContentSequence[0]
        frame = source.get("ReferencedFrameNumber", content.get("TemporalPositionIndex"))
        keys.append((source.ReferencedSOPInstanceUID, None if frame is None else int(frame)))
    return keys


def _assert_seg_matches(seg: hd.seg.Segmentation, stack: Stack, spec, predictor) -> None:
    """Every frame of the stack is in the SEG once, referencing its source instance and frame; up to 8 of them
    (a long cine is slow to segment twice) carry the mask the model gives that frame."""
    expected = [(ds.SOPInstanceUID, frame) for ds, frame in stack.frame_sources]
    keys = _frame_keys(seg)
    assert sorted(keys, key=str) == sorted(expected, key=str)
    picks = list(range(0, len(expected), -(-len(expected) // 8)))
    masks = segment_stack(dataclasses.replace(stack, frames=stack.frames[picks]), spec, predictor) > 0
    pixels = seg.pixel_array.reshape(len(keys), *stack.frames.shape[1:])
    for pick, mask in zip(picks, masks):
        np.testing.assert_array_equal(pixels[keys.index(expected[pick])].astype(bool), mask)


@pytest.mark.parametrize("name", SINGLE_FILE_INPUTS + list(FOLDER_INPUTS))
def test_every_input_gives_a_conformant_seg_referencing_its_frames(name, fetal_only, fetal, tmp_path):
    result = segment_paths(input_path(name), tmp_path, models=fetal_only)
    stacks = _stacks(name)
    assert result.errors == []
    assert len(result.outputs) == len(stacks)
    for stack, output in zip(stacks, result.outputs):
        errors = dciodvfy_errors(output.seg_path)
        sr_errors = [] if output.sr_path is None else dciodvfy_errors(output.sr_path)  # the SR, where measured
        if name == "MR700":  # its source has StudyInstanceUID == FrameOfReferenceUID; the SEG must copy both
            assert set(errors) <= set(dciodvfy_errors(stack.sources[0].filename))
            assert sr_errors == []
        elif name == "OBXXXX1A_2frame.dcm":  # SEG and SR reference its frames by number
            assert set(errors) == {REFERENCED_FRAME_OF_SINGLE_FRAME_CLASS}
            assert set(sr_errors) <= {REFERENCED_FRAME_OF_SINGLE_FRAME_CLASS}
            assert any("Number of Frames" in error for error in dciodvfy_errors(stack.sources[0].filename))
        else:
            assert errors == sr_errors == []
        seg = hd.seg.segread(output.seg_path)
        assert seg.NumberOfFrames == len(stack.frames)  # every frame, e.g. both of OBXXXX1A_2frame
        _assert_seg_matches(seg, stack, fetal, fetal_only.predictor(fetal))


def two_segments(spec):
    """The fetal-head bundle's contract with a second segment, as a multi-label (softmax) bundle would have."""
    second = dataclasses.replace(spec.segments[0], number=2, label="second structure", color_rgb=(0, 128, 255))
    return dataclasses.replace(spec, segments=(spec.segments[0], second))


@pytest.mark.parametrize("segments", [1, 2])
def test_cine_frames_keep_their_order_and_references(fetal, segments, tmp_path):
    """A different mask on every frame (and segment) of a real 30-frame cine must come back on the same source
    frame, through highdicom's own lookup by source frame number."""
    (stack,) = _stacks("examples_ybr_color.dcm")
    spec = fetal if segments == 1 else two_segments(fetal)
    labels = np.zeros(stack.frames.shape, dtype=np.uint8)
    for index in range(len(labels)):
        labels[index, 5 * index : 5 * index + 4, 10 : 10 + index + 1] = 1
        labels[index, 5 * index : 5 * index + 4, 60 : 62 + index] = segments
    build_seg(stack, labels, spec, 9100, "test").save_as(tmp_path / "cine.seg.dcm")
    assert dciodvfy_errors(tmp_path / "cine.seg.dcm") == []
    seg = hd.seg.segread(tmp_path / "cine.seg.dcm")
    assert seg.NumberOfFrames == segments * len(labels)
    source_uid = stack.sources[0].SOPInstanceUID
    read_back = seg.get_pixels_by_source_frame(
        source_uid, source_frame_numbers=list(range(1, len(labels) + 1)), segment_numbers=list(range(1, segments + 1))
    )
    for number in range(1, segments + 1):
        np.testing.assert_array_equal(read_back[..., number - 1].astype(bool), labels == number)


def test_cine_masks_packed_a_few_frames_at_a_time_equal_the_whole_cine_packed():
    """Frames of 35 pixels end mid-byte: the bits left over from one chunk (and segment) must start the next."""
    labels = np.random.default_rng(0).integers(0, 3, (11, 5, 7), dtype=np.uint8)
    whole = np.packbits(np.concatenate([labels == 1, labels == 2]).ravel(), bitorder="little").tobytes()
    assert _packed_frames(labels, [1, 2], frames_at_once=3) == whole + b"\x00" * (len(whole) % 2)


def test_ct_series_read_back_by_source_instance(fetal):
    """highdicom's lookup by source instance gives each CT slice its own mask, for each of two segments."""
    (stack,) = _stacks("CT5N")
    labels = np.zeros(stack.frames.shape, dtype=np.uint8)
    for index in range(len(labels)):
        labels[index, index, :] = 1
        labels[index, :, index] = 2
    seg = build_seg(stack, labels, two_segments(fetal), 9100, "test")
    uids = [ds.SOPInstanceUID for ds in stack.sources]
    read_back = seg.get_pixels_by_source_instance(uids, segment_numbers=[1, 2])
    for number in (1, 2):
        np.testing.assert_array_equal(read_back[..., number - 1].astype(bool), labels == number)


def test_report_and_overlay_beside_the_seg(models, fetal, tmp_path):
    result = segment_paths(input_path("OBXXXX1A.dcm"), tmp_path, models=models)
    (output,) = result.outputs
    report = json.loads(output.report_path.read_text())
    assert output.model == report["model"]["bundle"] == "fetal_head_us"
    assert report["model"]["name"] == fetal.name and report["model"]["version"] == fetal.version
    assert report["series_instance_uid"] == output.series_uid and report["frames"] == 1
    assert set(report["timing_s"]) == {"read", "inference", "measure", "write"}
    (segment,) = report["segments"]
    assert segment["label"] == "fetal head" and segment["number"] == 1
    assert "area_mm2_per_frame" in segment  # spacing from SequenceOfUltrasoundRegions
    assert "head_circumference_mm_per_frame" in segment
    with Image.open(output.overlay_path) as overlay:
        assert overlay.format == "PNG" and overlay.size == (800, 600)
    # an obstetric frame without a fetal head: the model says "nothing here", so no measurement and no SR
    assert segment["frames_with_segment"] == 0 and segment["head_circumference_mm_per_frame"] == [None]
    assert report["outputs"] == {"seg": output.seg_path.name, "sr": None, "overlay": output.overlay_path.name}
    assert output.sr_path is None
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        p.name for p in (output.seg_path, output.overlay_path, output.report_path)
    )


def test_a_failed_write_leaves_none_of_the_outputs(models, tmp_path):
    """All or nothing: when the report cannot take its place (a folder is in the way), neither the SEG nor the SR nor
    the overlay written before it is left behind."""
    (stack,) = _stacks("OBXXXX1A.dcm")
    (tmp_path / f"{stack.series_uid}.report.json").mkdir()
    result = segment_paths(input_path("OBXXXX1A.dcm"), tmp_path, models=models)
    assert result.outputs == [] and "not segmented" in result.errors[0][1]
    assert [p.name for p in tmp_path.iterdir()] == [f"{stack.series_uid}.report.json"]
