"""The SEGs the app writes, read by the real clients a user would open them with: each SEG frame must land on its
source frame with the pixels of the app's label map, in every one of them.

* highdicom (``segread`` + ``get_pixels_by_source_frame`` / ``_by_source_instance``),
* dcmqi's ``segimage2itkimage`` (3D Slicer's reader; PyPI ``dcmqi``), slice k of its volume being source frame k,
* pydicom-seg (``.venv-pydicom-seg``: it needs pydicom<3), likewise,
* OHIF's reader, ``@cornerstonejs/adapters`` ``createFromDICOMSegBuffer`` with dcmjs, in node (tests/clients).

Every ultrasound input (single-frame grey, RGB, palette, JPEG 2000; the 2-frame palette image; two JPEG cines; the
demo) and an MR through the fetal-head model, forced (the SEG plumbing, not a result), and the limb CT series of
the samples through the model its rules route it to (the sarcoma CT model: a 47-slice SEG of a real tumour; the
fetal model finds nothing on a CT). ``make test``
installs the clients (``make seg-clients``)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from test_app_support import REPO, input_path

from lightweight_seg.dicom_io import Stack, build_stacks, find_files, read_headers
from lightweight_seg.pipeline import segment_paths, segment_stack

CLIENTS = REPO / "tests" / "clients"
PYDICOM_SEG_PYTHON = REPO / ".venv-pydicom-seg" / "bin" / "python"
SEGIMAGE2ITKIMAGE = Path(sys.executable).parent / "segimage2itkimage"  # dcmqi, installed in the venv
CASES = [
    "US1_UNCR.dcm",
    "US1_J2KR.dcm",
    "OBXXXX1A.dcm",
    "OBXXXX1A_2frame.dcm",
    "examples_ybr_color.dcm",
    pytest.param("color3d_jpeg_baseline.dcm", marks=pytest.mark.slow),
    "us_hc18_006.dcm",
    "sts_019_ct",
    "MR_small.dcm",
]
ROUTED = {"sts_019_ct"}  # segmented by the model the bundles' rules choose, the others by the fetal model, forced


@dataclass
class Written:
    """A SEG the app wrote, the stack it covers and the app's label map of that stack."""

    seg_path: Path
    stack: Stack
    labels: np.ndarray


def _source(name: str) -> Path:
    return REPO / "samples" / "dicom" / name if name.startswith(("us_hc18", "sts_")) else input_path(name)


def _require(path: Path, what: str) -> None:
    if not path.exists():
        pytest.fail(f"{what} missing ({path}): install the SEG clients (make seg-clients)")


@pytest.fixture(scope="module")
def written(models, fetal_only, tmp_path_factory):
    """The SEG of each case, written by the app, once for the module (a dict filled as the cases ask)."""
    cache: dict[str, Written] = {}

    def write(name: str) -> Written:
        if name not in cache:
            output_dir = tmp_path_factory.mktemp(Path(name).stem)
            router = models if name in ROUTED else fetal_only
            result = segment_paths(_source(name), output_dir, models=router)
            assert result.errors == [] and len(result.outputs) == 1
            headers, errors = read_headers(find_files(_source(name))[0])
            (stack,), decode_errors = build_stacks(headers[0].SeriesInstanceUID, headers)
            assert errors == decode_errors == []
            spec = router.bundles[result.outputs[0].model]
            labels = segment_stack(stack, spec, router.predictor(spec))
            cache[name] = Written(result.outputs[0].seg_path, stack, labels)
        return cache[name]

    return write


def _source_frames(stack: Stack) -> list[tuple[str, int]]:
    """(SOPInstanceUID, frame number) of each frame of the stack; frame 1 for a single-frame instance."""
    return [(ds.SOPInstanceUID, frame or 1) for ds, frame in stack.frame_sources]


def _assert_same_masks(read_back: np.ndarray, written: Written, client: str) -> None:
    """``read_back`` (frames, rows, columns) holds segment numbers, frame i for source frame i of the stack."""
    assert read_back.shape == written.labels.shape, f"{client}: {read_back.shape} != {written.labels.shape}"
    for index, (source, frame) in enumerate(_source_frames(written.stack)):
        wrong = int((read_back[index] != written.labels[index]).sum())
        assert wrong == 0, f"{client}: {wrong} pixels differ on source {source} frame {frame}"
    assert written.labels.any()  # the comparison saw a mask, not only background


@pytest.mark.parametrize("name", CASES)
def test_highdicom_gives_each_source_frame_its_mask(written, fetal, name):
    case = written(name)
    seg = hd.seg.segread(case.seg_path)
    frames = _source_frames(case.stack)
    numbers = [segment.number for segment in fetal.segments]
    if case.stack.is_cine:
        (uid,) = {uid for uid, _ in frames}
        pixels = seg.get_pixels_by_source_frame(
            uid, source_frame_numbers=[frame for _, frame in frames], segment_numbers=numbers
        )
    else:
        pixels = seg.get_pixels_by_source_instance([uid for uid, _ in frames], segment_numbers=numbers)
    read_back = np.zeros(case.labels.shape, np.uint8)
    for channel, number in enumerate(numbers):
        read_back[pixels[..., channel] > 0] = number
    _assert_same_masks(read_back, case, "highdicom")


@pytest.mark.parametrize("name", CASES)
def test_dcmqi_volume_slice_k_is_source_frame_k(written, fetal, name, tmp_path):
    _require(SEGIMAGE2ITKIMAGE, "dcmqi's segimage2itkimage")
    case = written(name)
    run = subprocess.run(
        [
            str(SEGIMAGE2ITKIMAGE),
            "--inputDICOM",
            str(case.seg_path),
            "--outputDirectory",
            str(tmp_path),
            "--outputType",
            "nrrd",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, f"segimage2itkimage: {run.stdout[-2000:]}{run.stderr[-2000:]}"
    meta = json.loads((tmp_path / "meta.json").read_text())
    read_back = np.zeros(case.labels.shape, np.uint8)
    for group, segments in enumerate(meta["segmentAttributes"], start=1):  # one file per group of segments
        image = sitk.ReadImage(str(tmp_path / f"{group}.nrrd"))
        volume = sitk.GetArrayFromImage(image)  # (slices, rows, columns)
        for segment in segments:
            read_back[volume == segment["labelID"]] = segment["labelID"]
    _assert_same_masks(read_back, case, "dcmqi")
    if case.stack.pixel_spacing_mm is not None:  # calibrated: the volume is in mm
        row, column = case.stack.pixel_spacing_mm
        assert image.GetSpacing()[:2] == pytest.approx((column, row), rel=1e-4)


@pytest.mark.parametrize("name", CASES)
def test_pydicom_seg_reads_every_frame(written, name, tmp_path):
    _require(PYDICOM_SEG_PYTHON, "pydicom-seg's venv")
    case = written(name)
    out = tmp_path / "read.npz"
    run = subprocess.run(
        [str(PYDICOM_SEG_PYTHON), str(CLIENTS / "read_pydicom_seg.py"), str(case.seg_path), str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, f"pydicom-seg: {run.stderr[-2000:]}"
    read_back = np.zeros(case.labels.shape, np.uint8)
    with np.load(out) as arrays:
        for key in (k for k in arrays.files if k.startswith("segment_")):
            read_back[arrays[key] > 0] = int(key.removeprefix("segment_"))
    _assert_same_masks(read_back, case, "pydicom-seg")


@pytest.mark.parametrize("name", CASES)
def test_cornerstone_adapter_maps_every_seg_frame_to_its_source_frame(written, name, tmp_path):
    node = shutil.which("node")
    if node is None:
        pytest.fail("node missing: install nodejs (make system-packages)")
    _require(CLIENTS / "node_modules" / "@cornerstonejs" / "adapters", "@cornerstonejs/adapters")
    case = written(name)
    sources = sorted({ds.filename for ds in case.stack.sources})
    labels_out = tmp_path / "labels.raw"
    run = subprocess.run(
        [node, str(CLIENTS / "seg_frames.mjs"), str(case.seg_path), str(labels_out), *sources],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, f"cornerstone: {run.stderr[-2000:]}"
    report = json.loads(run.stdout.splitlines()[-1])
    order = [tuple(frame) for frame in report["frames"]]
    assert sorted(order) == sorted(_source_frames(case.stack))
    rows, columns = case.labels.shape[1:]
    by_frame = dict(zip(order, np.fromfile(labels_out, np.uint8).reshape(len(order), rows, columns)))
    read_back = np.array([by_frame[key] for key in _source_frames(case.stack)])
    _assert_same_masks(read_back, case, "cornerstone")


@pytest.mark.parametrize("name", ["OBXXXX1A.dcm", "US1_UNCR.dcm", "MR_small.dcm"])
def test_seg_names_its_content_creator_and_colours(written, fetal, name):
    seg = pydicom.dcmread(written(name).seg_path)
    assert seg.ContentCreatorName == f"lightweight-seg^{fetal.id}"
    assert fetal.segments[0].label in seg.ContentDescription and fetal.version in seg.ContentDescription
    for description, segment in zip(seg.SegmentSequence, fetal.segments, strict=True):
        colour = hd.color.CIELabColor.from_dicom_value(description.RecommendedDisplayCIELabValue)
        assert colour.to_rgb() == pytest.approx(segment.color_rgb, abs=1)
