"""Bad input: each case gets one line naming the file and the problem, the rest of the folder is still
segmented, and nothing half-written is left behind. Every series goes to the fetal-head model (forced), so that
the CT and MR files are read as far as a model that is for them would read them."""

from __future__ import annotations

import json
import os
import shutil
import threading
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_charset_files
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from test_app_support import REPO, dciodvfy_errors, input_path

import lightweight_seg.pipeline
from lightweight_nets.io.dicom import dicom_pixel_spacing_mm
from lightweight_nets.measure import measure_segment
from lightweight_seg.dicom_io import build_stacks, find_files, one_line
from lightweight_seg.pipeline import segment_paths

SAMPLE_US = REPO / "samples" / "dicom" / "us_hc18_006.dcm"  # calibrated in cm by an ultrasound region


def _edited(folder, name: str, source, edit, new_series: bool = True):
    """A real file, changed by ``edit(ds)`` and saved as ``folder/name`` (its own series unless told otherwise)."""
    ds = pydicom.dcmread(source)
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    if new_series:
        ds.SeriesInstanceUID = pydicom.uid.generate_uid()
    edit(ds)
    path = folder / name
    ds.save_as(path)
    return path


def _patched(path, old: bytes, new: bytes):
    """Replace one value in the file's bytes (for values pydicom will not write, such as "abc" as a number)."""
    data = path.read_bytes()
    assert data.count(old) == 1 and len(old) == len(new)
    path.write_bytes(data.replace(old, new))
    return path


def _delete(*keywords):
    def edit(ds):
        for keyword in keywords:
            delattr(ds, keyword)

    return edit


def _set(**values):
    def edit(ds):
        for keyword, value in values.items():
            setattr(ds, keyword, value)

    return edit


def _region(**values):
    def edit(ds):
        for keyword, value in values.items():
            if value is None:
                delattr(ds.SequenceOfUltrasoundRegions[0], keyword)
            else:
                setattr(ds.SequenceOfUltrasoundRegions[0], keyword, value)

    return edit


def _not_dicom(folder):
    path = folder / "notes.txt"
    path.write_text("not an image\n")
    return path, "not a DICOM file"


def _truncated_pixels(folder):
    path = folder / "truncated_pixels.dcm"
    path.write_bytes(input_path("CT_small.dcm").read_bytes()[:20000])
    return path, "truncated: PixelData needs 32768 bytes from byte 6300, the file has 20000"


def _truncated_header(folder):
    path = folder / "truncated_header.dcm"
    path.write_bytes(input_path("CT_small.dcm").read_bytes()[:1000])
    return path, "truncated: OtherPatientIDsSequence needs 72 bytes from byte 994, the file has 1000"


def _no_pixel_data(folder):
    return _edited(folder, "no_pixels.dcm", input_path("MR_small.dcm"), _delete("PixelData")), "no pixel data"


def _unsupported_sop_class(folder):
    path = folder / "rtplan.dcm"
    shutil.copy(input_path("rtplan.dcm"), path)
    return path, "unsupported SOP class 'RT Plan Storage'"


# 1: what the SDK loader stops on (it reads every file whole, and catches only InvalidDicomError)
def _deflate_not_deflated(folder):
    """The file meta says Deflated Explicit VR Little Endian, the data set is written plain."""
    ds = pydicom.dcmread(input_path("CT_small.dcm"))
    ds.file_meta.TransferSyntaxUID = pydicom.uid.DeflatedExplicitVRLittleEndian
    body = DicomBytesIO()
    body.is_little_endian, body.is_implicit_VR = True, False
    write_dataset(body, ds)
    meta = DicomBytesIO()
    write_file_meta_info(meta, ds.file_meta)
    path = folder / "deflate.dcm"
    path.write_bytes(b"\0" * 128 + b"DICM" + meta.getvalue() + body.getvalue())
    return path, "not deflated although its transfer syntax is Deflate (error: Error -3"


# 2: what the SDK loader drops without a word, or pydicom reads as an empty data set with only a warning
def _no_study_uid(folder):
    return (
        _edited(folder, "no_study.dcm", input_path("CT_small.dcm"), _delete("StudyInstanceUID")),
        "incomplete header: no StudyInstanceUID",
    )


def _empty_series_uid(folder):
    return (
        _edited(folder, "empty_series.dcm", input_path("CT_small.dcm"), _set(SeriesInstanceUID="")),
        "SeriesInstanceUID is empty",
    )


def _no_sop_class(folder):
    return (
        _edited(folder, "no_sop_class.dcm", input_path("CT_small.dcm"), _delete("SOPClassUID")),
        "no SOPClassUID in the data set (the file meta information says 'CT Image Storage')",
    )


def _no_modality(folder):
    return _edited(
        folder, "no_modality.dcm", input_path("MR_small.dcm"), _delete("Modality")
    ), "incomplete header: no Modality"


def _one_value_pixel_spacing(folder):
    return (
        _edited(folder, "one_spacing.dcm", input_path("CT_small.dcm"), _set(PixelSpacing="0.5")),
        "PixelSpacing '0.5' has 1 value, not 2",
    )


def _truncated_jpeg(folder):
    path = folder / "truncated_jpeg.dcm"
    path.write_bytes(input_path("color3d_jpeg_baseline.dcm").read_bytes()[:60000])
    return path, "no data set after the file meta information (truncated"


def _truncated_jpeg2000(folder):
    path = folder / "truncated_j2k.dcm"
    data = SAMPLE_US.read_bytes()
    path.write_bytes(data[: len(data) * 3 // 4])
    return path, "no data set after the file meta information (truncated"


# 3: what stack building met unguarded
def _no_position(folder):
    return (
        _edited(folder, "no_position.dcm", input_path("CT_small.dcm"), _delete("ImagePositionPatient")),
        "no ImagePositionPatient",
    )


def _pixel_spacing_abc(folder):
    path = _edited(folder, "spacing_abc.dcm", input_path("CT_small.dcm"), _set(PixelSpacing=[9.87, 9.8]))
    return _patched(path, b"9.87\\9.8", b"abc\\1.00"), "PixelSpacing 'abc\\1.00' is not a number"


def _region_without_delta_y(folder):
    return (
        _edited(folder, "no_delta_y.dcm", SAMPLE_US, _region(PhysicalDeltaY=None)),
        "ultrasound region 1 (SequenceOfUltrasoundRegions): no PhysicalDeltaY",
    )


# 4: what highdicom met first, deep inside the SEG writer
def _nan_pixel_spacing(folder):
    return (
        _edited(folder, "nan_spacing.dcm", input_path("CT_small.dcm"), _set(PixelSpacing=["nan", "0.6"])),
        "PixelSpacing 'nan\\0.6' is not a finite number",
    )


def _nan_slice_thickness(folder):
    return (
        _edited(folder, "nan_thickness.dcm", input_path("MR_small.dcm"), _set(SliceThickness="nan")),
        "SliceThickness 'nan' is not a finite number",
    )


def _no_orientation(folder):
    return (
        _edited(folder, "no_orientation.dcm", input_path("CT_small.dcm"), _delete("ImageOrientationPatient")),
        "no ImageOrientationPatient",
    )


def _degenerate_orientation(folder):
    flat = _set(ImageOrientationPatient=["1", "0", "0", "1", "0", "0"])
    return (
        _edited(folder, "flat.dcm", input_path("CT_small.dcm"), flat),
        "ImageOrientationPatient '1\\0\\0\\1\\0\\0' is not two perpendicular unit vectors",
    )


def _five_value_orientation(folder):
    five = _set(ImageOrientationPatient=["1", "0", "0", "0", "1"])
    return (
        _edited(folder, "five.dcm", input_path("MR_small.dcm"), five),
        "ImageOrientationPatient '1\\0\\0\\0\\1' has 5 values, not 6",
    )


def _ct_without_frame_of_reference(folder):
    return (
        _edited(folder, "no_for.dcm", input_path("CT_small.dcm"), _delete("FrameOfReferenceUID")),
        "no FrameOfReferenceUID (a CT or MR image needs one)",
    )


def _nan_region_delta(folder):
    return (
        _edited(folder, "nan_delta.dcm", SAMPLE_US, _region(PhysicalDeltaX=float("nan"))),
        "ultrasound region 1 (SequenceOfUltrasoundRegions): PhysicalDeltaX 'nan' is not a finite number",
    )


def _bogus_character_set(folder):
    return (
        _edited(folder, "charset.dcm", SAMPLE_US, _set(SpecificCharacterSet="ISO_IR 999")),
        "SpecificCharacterSet 'ISO_IR 999' is not a character set the DICOM standard defines",
    )


# 6: spacing that would give a wrong number as if measured
def _negative_thickness(folder):
    return (
        _edited(folder, "negative_thickness.dcm", input_path("MR_small.dcm"), _set(SliceThickness="-5")),
        "SliceThickness '-5' is not positive",
    )


def _zero_pixel_spacing(folder):
    return (
        _edited(folder, "zero_spacing.dcm", input_path("CT_small.dcm"), _set(PixelSpacing=["0", "0.5"])),
        "PixelSpacing '0\\0.5' is not positive",
    )


def _zero_region_delta(folder):
    return (
        _edited(folder, "zero_delta.dcm", SAMPLE_US, _region(PhysicalDeltaY=0)),
        "ultrasound region 1 (SequenceOfUltrasoundRegions): PhysicalDeltaY '0.0' is not positive",
    )


def _negative_region_delta(folder):
    return (
        _edited(folder, "negative_delta.dcm", SAMPLE_US, _region(PhysicalDeltaX=-0.0066, PhysicalDeltaY=-0.0066)),
        "ultrasound region 1 (SequenceOfUltrasoundRegions): PhysicalDeltaY '-0.0066' is not positive",
    )


# a UID that is not one would name an output file outside the output folder ("../x") or split a line
def _path_in_series_uid(folder):
    return (
        _edited(folder, "evil_uid.dcm", input_path("CT_small.dcm"), _set(SeriesInstanceUID="../../evil")),
        "SeriesInstanceUID '../../evil' is not a UID (digits and dots, at most 64 characters)",
    )


# what the model would see as NaN
def _nan_rescale_slope(folder):
    return (
        _edited(folder, "nan_slope.dcm", input_path("CT_small.dcm"), _set(RescaleSlope="nan")),
        "RescaleSlope 'nan' is not a finite number",
    )


# patient and study values the SEG copies, which highdicom refuses deep inside
def _bad_patient_sex(folder):
    return (
        _edited(folder, "sex.dcm", input_path("CT_small.dcm"), _set(PatientSex="Q")),
        "PatientSex 'Q' is not M, F or O",
    )


def _bad_study_date(folder):
    return (
        _edited(folder, "date.dcm", input_path("MR_small.dcm"), _set(StudyDate="2020-13-45")),
        "StudyDate '2020-13-45' is not a date (YYYYMMDD)",
    )


BAD_FILES = [
    _not_dicom,
    _truncated_pixels,
    _truncated_header,
    _no_pixel_data,
    _unsupported_sop_class,
    _deflate_not_deflated,
    _no_study_uid,
    _empty_series_uid,
    _no_sop_class,
    _no_modality,
    _one_value_pixel_spacing,
    _truncated_jpeg,
    _truncated_jpeg2000,
    _no_position,
    _pixel_spacing_abc,
    _region_without_delta_y,
    _nan_pixel_spacing,
    _nan_slice_thickness,
    _no_orientation,
    _degenerate_orientation,
    _five_value_orientation,
    _ct_without_frame_of_reference,
    _nan_region_delta,
    _bogus_character_set,
    _negative_thickness,
    _zero_pixel_spacing,
    _zero_region_delta,
    _negative_region_delta,
    _path_in_series_uid,
    _nan_rescale_slope,
    _bad_patient_sex,
    _bad_study_date,
]


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
    rules.write_text(
        json.dumps(
            {
                "selections": [
                    {"name": "primary US", "conditions": {"Modality": "US", "ImageType": ["PRIMARY", "!DERIVED"]}},
                    {"name": "chest CT", "conditions": {"Modality": "CT", "BodyPartExamined": "chest"}},
                ]
            }
        )
    )
    paths = [input_path("OBXXXX1A.dcm"), input_path("examples_ybr_color.dcm"), input_path("CT5N")]
    result = segment_paths(paths, tmp_path / "out", models=fetal_only, rules=rules)
    # examples_ybr_color is DERIVED and CT5N names no body part: only OBXXXX1A's series is segmented, the others
    # are named
    assert [json.loads(o.report_path.read_text())["source_instances"] for o in result.outputs] == [
        [pydicom.dcmread(input_path("OBXXXX1A.dcm"), stop_before_pixels=True).SOPInstanceUID]
    ]
    unselected = [
        pydicom.dcmread(next(iter(find_files(p)[0])), stop_before_pixels=True).SeriesInstanceUID for p in paths[1:]
    ]
    assert result.skipped == [
        (uid, f"series {uid}: not selected by the selection rules (rules.json)") for uid in unselected
    ]


def test_failed_seg_leaves_nothing_behind(fetal_only, tmp_path, monkeypatch):
    """A series that fails while its outputs are written (here the report, after the SEG and the overlay) is one
    line naming the series, and no SEG, overlay, report or temporary file is left."""

    def fail(report, path):
        raise OSError("disk full")

    monkeypatch.setattr(lightweight_seg.pipeline, "write_report", fail)
    path = input_path("CT_small.dcm")
    uid = pydicom.dcmread(path, stop_before_pixels=True).SeriesInstanceUID
    result = segment_paths(path, tmp_path / "out", models=fetal_only)
    assert result.outputs == []
    assert result.errors == [(uid, f"series {uid}: not segmented (OSError: disk full)")]
    assert list((tmp_path / "out").iterdir()) == []


def _run_with_deadline(function, *args, seconds: float = 120):
    """``function(*args)`` in a daemon thread, so that a hang fails the test instead of stopping the suite."""
    outcome = {}
    worker = threading.Thread(target=lambda: outcome.update(value=function(*args)), daemon=True)
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), f"{function.__name__} still running after {seconds} s"
    return outcome["value"]


def test_hostile_entries_are_named_never_followed_and_each_file_read_once(fetal_only, tmp_path):
    """1: a FIFO (opened, it would block for ever), a dangling link, a link to itself, a link from a folder back to
    its parent and one to / (cycles) and an empty file beside a good series: each one line, never opened or
    followed; a second link to a good file does not make it two instances; the series is segmented with its 5
    slices."""
    folder = tmp_path / "in"
    shutil.copytree(input_path("CT5N"), folder / "ct")
    slice_name = sorted(p.name for p in (folder / "ct").iterdir())[0]
    os.mkfifo(folder / "fifo")
    (folder / "dangling").symlink_to(tmp_path / "gone.dcm")
    (folder / "itself").symlink_to("itself")
    (folder / "ct" / "parent").symlink_to("..")
    (folder / "root").symlink_to("/")
    (folder / "again.dcm").symlink_to(folder / "ct" / slice_name)
    (folder / "empty.dcm").write_bytes(b"")  # as /proc files say of themselves (/proc/kmsg blocks its reader)
    files, problems = _run_with_deadline(find_files, folder)
    assert len(files) == 5 and len({f.resolve() for f in files}) == 5
    assert problems == [
        (
            str(folder / "ct" / "parent"),
            f"{folder / 'ct' / 'parent'}: symbolic link to a folder already read (a loop?): not followed",
        ),
        (str(folder / "dangling"), f"{folder / 'dangling'}: dangling symbolic link (to {tmp_path / 'gone.dcm'})"),
        (str(folder / "empty.dcm"), f"{folder / 'empty.dcm'}: empty file"),
        (str(folder / "fifo"), f"{folder / 'fifo'}: not a regular file (FIFO): not read"),
        (str(folder / "itself"), f"{folder / 'itself'}: symbolic link loop: not followed"),
        (
            str(folder / "root"),
            f"{folder / 'root'}: symbolic link to a folder that holds the input (a loop): not followed",
        ),
    ]
    result = _run_with_deadline(segment_paths, folder, tmp_path / "out", fetal_only)
    (output,) = result.outputs
    assert json.loads(output.report_path.read_text())["frames"] == 5
    assert result.errors == problems


def test_a_folder_tree_deeper_than_the_recursion_limit_is_read(tmp_path, monkeypatch):
    """1: 1200 nested folders (the walk is a loop, not a recursion) still give their file."""
    monkeypatch.chdir(tmp_path)
    try:
        for _ in range(1200):
            os.mkdir("d")
            os.chdir("d")
        Path("deep.dcm").write_bytes(b"not an image")
        os.chdir(tmp_path)
        files, problems = find_files(Path("d"))
        assert [len(f.parts) for f in files] == [1201] and problems == []
    finally:  # removed bottom up here: pytest's own clean-up (shutil.rmtree) recurses, and would fail on it
        os.chdir(tmp_path)
        depth = 0
        while os.path.isdir("d"):
            os.chdir("d")
            depth += 1
        for name in os.listdir("."):
            os.remove(name)
        for _ in range(depth):
            os.chdir("..")
            os.rmdir("d")


def test_build_stacks_never_raises(tmp_path):
    """3: headers handed to build_stacks unchecked (as any caller may): a slice of the series without
    ImagePositionPatient, one whose PixelSpacing is "abc" and one deleted since its header was read are each one
    line naming the file and what is wrong; the other slices still make their stack."""
    folder = tmp_path / "in"
    shutil.copytree(input_path("CT5N"), folder)
    good = sorted(folder.iterdir())
    no_position = _edited(folder, "no_position.dcm", good[0], _delete("ImagePositionPatient"), new_series=False)
    abc = _patched(
        _edited(folder, "abc.dcm", good[1], _set(PixelSpacing=[9.87, 9.8]), new_series=False),
        b"9.87\\9.8",
        b"abc\\1.00",
    )
    gone = _edited(folder, "gone.dcm", good[2], lambda ds: None, new_series=False)
    headers = [pydicom.dcmread(path, stop_before_pixels=True) for path in [*good, no_position, abc, gone]]
    gone.unlink()
    stacks, errors = build_stacks(headers[0].SeriesInstanceUID, headers)
    assert [len(stack.frames) for stack in stacks] == [5]
    assert [where for where, _ in errors] == [str(no_position), str(abc), str(gone)]
    assert errors[0][1] == f"{no_position}: no ImagePositionPatient"
    assert errors[1][1] == f"{abc}: PixelSpacing 'abc\\1.00' is not a number"
    assert errors[2][1].startswith(f"{gone}: unreadable DICOM (FileNotFoundError")


def test_japanese_character_set_gives_a_seg(fetal_only, tmp_path):
    """5: SpecificCharacterSet "\\ISO 2022 IR 87" (an empty first value, the default repertoire, then Japanese with
    code extensions, as PS3.3 C.12.1.1.2 allows) is segmented; the SEG carries the patient's name in UTF-8."""
    japanese = pydicom.dcmread(get_charset_files("chrH31.dcm")[0])
    assert list(japanese.SpecificCharacterSet) == ["", "ISO 2022 IR 87"]

    def edit(ds):
        ds.SpecificCharacterSet = japanese.SpecificCharacterSet
        ds.PatientName = japanese.PatientName

    path = _edited(tmp_path, "japanese.dcm", SAMPLE_US, edit)
    assert b"\x1b$B" in path.read_bytes()  # written with the ISO 2022 escape to JIS X 0208
    result = segment_paths(path, tmp_path / "out", models=fetal_only)
    assert result.errors == [] and len(result.outputs) == 1
    seg = pydicom.dcmread(result.outputs[0].seg_path)
    assert seg.SpecificCharacterSet == "ISO_IR 192" and str(seg.PatientName) == "Yamada^Tarou=山田^太郎=やまだ^たろう"
    assert dciodvfy_errors(result.outputs[0].seg_path) == []


@pytest.mark.parametrize(
    ("pixel_spacing", "slice_spacing", "reason"),
    [
        ((0.0, 0.5), 1.0, "pixel spacing (0.0, 0.5) mm is not two positive numbers"),
        ((-0.5, -0.5), 1.0, "pixel spacing (-0.5, -0.5) mm is not two positive numbers"),
        ((float("nan"), 0.5), 1.0, "pixel spacing (nan, 0.5) mm is not two positive numbers"),
        (None, 1.0, "no pixel spacing"),
    ],
)
def test_a_measurement_the_spacing_does_not_allow_is_not_measured(pixel_spacing, slice_spacing, reason):
    """6: zero, negative or NaN spacing never gives a number (0 mm2 for a non-empty mask, a positive but wrong head
    circumference, a negative volume): the measurement is named as not measured, with the reason."""
    masks = np.zeros((1, 64, 64), bool)
    masks[0, 16:48, 20:44] = True
    measured = measure_segment(masks, ["area", "head_circumference", "volume"], pixel_spacing, slice_spacing)
    assert measured["pixels_per_frame"] == [768]
    assert measured["not_measured"] == {"area": reason, "head_circumference": reason, "volume": reason}
    assert not {"area_mm2_per_frame", "head_circumference_mm_per_frame", "volume_mm3"} & set(measured)


@pytest.mark.parametrize("slice_spacing", [-2.0, 0.0, float("nan"), None])
def test_a_volume_without_a_positive_slice_spacing_is_not_measured(slice_spacing):
    masks = np.ones((2, 4, 4), bool)
    measured = measure_segment(masks, ["area", "volume"], (0.5, 0.5), slice_spacing)
    assert measured["area_mm2_per_frame"] == [4.0, 4.0] and "volume_mm3" not in measured
    assert measured["not_measured"]["volume"] in (
        "no slice spacing",
        f"slice spacing {slice_spacing!r} mm is not a positive number",
    )


def test_dicom_spacing_is_checked_where_it_is_read():
    """6: lightweight_nets.io.dicom, which the bundle's folder workflow reads DICOM spacing with, refuses a spacing
    that is not two positive numbers, naming the attribute."""
    ds = pydicom.dcmread(SAMPLE_US, stop_before_pixels=True)
    assert dicom_pixel_spacing_mm(ds) == pytest.approx((0.065605648, 0.065605648))
    ds.SequenceOfUltrasoundRegions[0].PhysicalDeltaX = -0.0065
    with pytest.raises(
        ValueError,
        match=r"^ultrasound region 1 \(SequenceOfUltrasoundRegions\): PhysicalDeltaX "
        "'-0.0065' is not positive$",
    ):
        dicom_pixel_spacing_mm(ds)
    ds.PixelSpacing = ["0.5", "0"]
    with pytest.raises(ValueError, match=r"^PixelSpacing '0.5\\0' is not positive$"):
        dicom_pixel_spacing_mm(ds)


def test_file_names_print_on_one_line(fetal_only, tmp_path):
    """7: a newline, a tab or an escape in a file name, or bytes that are not UTF-8, keep the message one printable
    line (escaped as Python writes them); the good series beside is still segmented."""
    folder = tmp_path / "in"
    shutil.copytree(input_path("CT5N"), folder)
    (folder / "two\nlines\t\x1b[31m.dcm").write_text("not an image\n")
    (Path(os.fsdecode(os.fsencode(folder) + b"/caf\xe9.dcm"))).write_text("not an image\n")
    result = segment_paths(folder, tmp_path / "out", models=fetal_only)
    assert len(result.outputs) == 1
    assert sorted(message for _, message in result.errors) == [
        f"{folder}/caf\\xe9.dcm: not a DICOM file",
        f"{folder}/two\\nlines\\t\\x1b[31m.dcm: not a DICOM file",
    ]
    assert all(message.isprintable() and message.encode("utf-8") for _, message in result.errors)
    assert one_line("\\ISO 2022 IR 87 山田") == "\\ISO 2022 IR 87 山田"  # nothing else changes


def _same_position(good, folder):
    """A second slice at the position of the first (a new instance, the same AcquisitionNumber)."""
    return _edited(
        folder, "zz_same_position.dcm", good[0], lambda ds: None, new_series=False
    ), f"same ImagePositionPatient as {good[0]} in its series and not a later acquisition: left out"


def _other_study(good, folder):
    """A slice of the series that names another study."""
    elsewhere = _set(StudyInstanceUID="1.2.3.4", ImagePositionPatient=[0, 0, 99])
    path = _edited(folder, "zz_other_study.dcm", good[0], elsewhere, new_series=False)
    study = pydicom.dcmread(good[0], stop_before_pixels=True).StudyInstanceUID
    return path, f"StudyInstanceUID 1.2.3.4 differs from the rest of series {{series}} ({study}): left out"


@pytest.mark.parametrize("make_odd_slice", [_same_position, _other_study], ids=["same_position", "other_study"])
def test_a_slice_that_does_not_fit_its_series_is_named_and_the_rest_segmented(make_odd_slice, fetal_only, tmp_path):
    """A slice that a SEG cannot hold with the others (highdicom refuses two at one position, and sources of two
    studies) is named and left out; the series is segmented without it, not lost with it."""
    folder = tmp_path / "in"
    shutil.copytree(input_path("CT5N"), folder)
    good = sorted(folder.iterdir())
    path, message = make_odd_slice(good, folder)
    series = pydicom.dcmread(good[0], stop_before_pixels=True).SeriesInstanceUID
    result = segment_paths(folder, tmp_path / "out", models=fetal_only)
    (output,) = result.outputs
    assert json.loads(output.report_path.read_text())["frames"] == 5
    assert result.errors == [(str(path), f"{path}: {message.format(series=series)}")]


def test_anonymised_file_and_odd_series_number_still_give_a_conformant_seg(fetal_only, tmp_path):
    """Type 2 patient and study attributes left out (as anonymisers do) are empty in the SEG, and a source
    SeriesNumber that is not a number, or so large that 9000 + 100 x it is out of range, gives the SEG its own."""

    def anonymise(ds):
        for keyword in (
            "PatientName",
            "PatientID",
            "PatientBirthDate",
            "PatientSex",
            "AccessionNumber",
            "StudyID",
            "StudyDate",
            "StudyTime",
            "ReferringPhysicianName",
        ):
            if keyword in ds:
                delattr(ds, keyword)
        ds.SeriesNumber = 99999999

    path = _edited(tmp_path, "anonymous.dcm", input_path("CT_small.dcm"), anonymise)
    result = segment_paths(path, tmp_path / "out", models=fetal_only)
    assert result.errors == [] and len(result.outputs) == 1
    seg = pydicom.dcmread(result.outputs[0].seg_path)
    assert seg.PatientID == "" and seg.StudyID == "" and seg.SeriesNumber == 9000
    assert dciodvfy_errors(result.outputs[0].seg_path) == []


def test_a_copy_of_an_instance_is_named_not_doubled(fetal_only, tmp_path):
    """A second file holding an instance already read (same SOPInstanceUID) is named and left out: the SEG has
    each slice once."""
    folder = tmp_path / "in"
    shutil.copytree(input_path("CT5N"), folder)
    first = sorted(folder.iterdir())[0]
    shutil.copy(first, folder / "zz_copy.dcm")
    result = segment_paths(folder, tmp_path / "out", models=fetal_only)
    assert json.loads(result.outputs[0].report_path.read_text())["frames"] == 5
    assert result.errors == [
        (str(folder / "zz_copy.dcm"), f"{folder / 'zz_copy.dcm'}: same SOPInstanceUID as {first}: left out")
    ]
