"""Geometry is proven, not assumed: label maps placed by physical coordinates go through our SEG writer and
come back, read by highdicom, on the same pixels of the same source slices as a reference SEG made by another
tool (CT) and voxel for voxel as the label volume itself (MR volumes written as DICOM series here).

Data: ../shared/data/reference_ct_mr (BSD-licensed, LICENSE.txt files there)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from test_app_support import dciodvfy_errors, write_mr_series

from lightweight_nets.bundle import BundleSpec, Segment
from lightweight_seg.dicom_io import Stack, build_stacks, find_files, read_headers
from lightweight_seg.routing import DEFAULT_BUNDLES
from lightweight_seg.seg_writer import build_seg

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "data" / "reference_ct_mr"
pytestmark = pytest.mark.skipif(not REFERENCE.is_dir(), reason=f"{REFERENCE} (shared reference data) is absent")
# The reference labels as a bundle's contract would describe them (only the segment and the algorithm matter here).
REFERENCE_LABELS = dataclasses.replace(
    BundleSpec.load(DEFAULT_BUNDLES / "fetal_head_us"),
    name="reference labels",
    version="1",
    segments=(
        Segment(
            1,
            "reference label",
            {"value": "91723000", "scheme": "SCT", "meaning": "Anatomical Structure"},
            {"value": "10200004", "scheme": "SCT", "meaning": "Liver"},
            (200, 120, 40),
        ),
    ),
)


def _stack(paths: list[Path] | Path) -> Stack:
    headers, errors = read_headers(find_files(paths)[0])
    stacks, decode_errors = build_stacks(headers[0].SeriesInstanceUID, headers)
    assert errors == decode_errors == [] and len(stacks) == 1
    return stacks[0]


def _sample(image: sitk.Image, points: np.ndarray) -> np.ndarray:
    """Values of ``image`` at LPS ``points`` (3, n), which must fall on its voxel centres."""
    direction = np.array(image.GetDirection()).reshape(3, 3)
    scaled = direction * np.array(image.GetSpacing())  # columns: index steps x, y, z in mm
    xyz = np.linalg.solve(scaled, points - np.array(image.GetOrigin())[:, None])
    np.testing.assert_allclose(xyz, np.rint(xyz), atol=1e-3)  # the grids coincide
    x, y, z = np.rint(xyz).astype(int)
    return sitk.GetArrayViewFromImage(image)[z, y, x]


def _on_source_grid(stack: Stack, image: sitk.Image) -> np.ndarray:
    """``image`` at each pixel centre of each source slice, placed by the slice's own DICOM geometry."""
    slices = []
    for ds, _ in stack.frame_sources:
        row_dir, col_dir = np.array(ds.ImageOrientationPatient[:3]), np.array(ds.ImageOrientationPatient[3:])
        rows, cols = np.indices((ds.Rows, ds.Columns)).reshape(2, -1)
        points = (
            np.array(ds.ImagePositionPatient, float)[:, None]
            + np.outer(row_dir, cols * ds.PixelSpacing[1])
            + np.outer(col_dir, rows * ds.PixelSpacing[0])
        )
        slices.append(_sample(image, points).reshape(ds.Rows, ds.Columns))
    return np.array(slices)


def _assert_volume_matches(seg: hd.seg.Segmentation, labels: sitk.Image) -> None:
    """Voxel for voxel: the SEG's volume, placed by its own affine, equals the label map there."""
    volume = seg.get_volume()
    indices = np.indices(volume.array.shape[:3]).reshape(3, -1)
    points = volume.affine[:3, :3] @ indices + volume.affine[:3, 3:4]
    expected = _sample(labels, points).reshape(volume.array.shape[:3]) > 0
    np.testing.assert_array_equal(volume.array[..., 0] > 0, expected)
    assert expected.sum() == (sitk.GetArrayViewFromImage(labels) > 0).sum()  # every labelled voxel covered


def test_ct_seg_covers_the_reference_seg_pixels_slice_by_slice(tmp_path):
    folder = REFERENCE / "ct_3slice"
    stack = _stack([folder / "01.dcm", folder / "02.dcm", folder / "03.dcm"])
    assert [Path(ds.filename).name for ds in stack.sources] == ["03.dcm", "02.dcm", "01.dcm"]  # along the normal
    masks = _on_source_grid(stack, sitk.ReadImage(str(folder / "liver_seg.nrrd"))) > 0
    build_seg(stack, masks.astype(np.uint8), REFERENCE_LABELS, 9100, "liver").save_as(tmp_path / "liver.seg.dcm")
    assert dciodvfy_errors(tmp_path / "liver.seg.dcm") == []
    ours, reference = hd.seg.segread(tmp_path / "liver.seg.dcm"), hd.seg.segread(folder / "liver.dcm")
    assert {uid for *_, uid in ours.get_source_image_uids()} == {uid for *_, uid in reference.get_source_image_uids()}
    for ds in stack.sources:
        mine = ours.get_pixels_by_source_instance([ds.SOPInstanceUID], segment_numbers=[1])
        theirs = reference.get_pixels_by_source_instance(
            [ds.SOPInstanceUID], segment_numbers=[1], ignore_spatial_locations=True
        )  # not recorded there
        assert theirs.sum() > 0
        np.testing.assert_array_equal(mine > 0, theirs > 0)
    _assert_volume_matches(ours, sitk.ReadImage(str(folder / "liver_seg.nrrd")))


@pytest.mark.parametrize("case", ["brain1", "breast1"])
def test_mr_volume_label_round_trips_voxel_for_voxel(case, tmp_path):
    image = sitk.ReadImage(str(REFERENCE / "mri" / f"{case}_image.nrrd"))
    labels = sitk.ReadImage(str(REFERENCE / "mri" / f"{case}_label.nrrd"))
    write_mr_series(image, tmp_path)
    stack = _stack(tmp_path)
    np.testing.assert_array_equal(stack.frames, _on_source_grid(stack, image))  # each slice in its place
    assert stack.slice_spacing_mm == pytest.approx(image.GetSpacing()[2])
    masks = _on_source_grid(stack, labels) > 0
    build_seg(stack, masks.astype(np.uint8), REFERENCE_LABELS, 9100, "label").save_as(tmp_path / "label.seg")
    assert dciodvfy_errors(tmp_path / "label.seg") == []
    seg = hd.seg.segread(tmp_path / "label.seg")
    _assert_volume_matches(seg, labels)
    source_uids = [ds.SOPInstanceUID for ds in stack.sources]
    by_instance = seg.get_pixels_by_source_instance(source_uids, segment_numbers=[1])[..., 0] > 0
    np.testing.assert_array_equal(by_instance, masks)
    assert pydicom.dcmread(tmp_path / "label.seg").FrameOfReferenceUID == stack.sources[0].FrameOfReferenceUID


STS_DICOM = REFERENCE.parent / "sts_dicom"


@pytest.mark.parametrize("series", ["STS_002/CT", "STS_019/MR_T1"])
def test_volume_affine_and_seg_of_a_native_series_match_its_label_volume(series, tmp_path):
    """A real CT and MR series (IBSI): the RAS affine a 3D model resamples from maps each voxel of the stack onto
    the same voxel of the series' own label volume, and the SEG written from it comes back voxel for voxel."""
    stack = _stack(STS_DICOM / series / "image")
    label_path = STS_DICOM / series / "label.nii.gz"
    reference = nib.load(str(label_path))
    truth = np.asarray(reference.dataobj) > 0
    indices = np.linalg.solve(reference.affine, stack.ras_affine())  # stack voxel -> label voxel
    np.testing.assert_allclose(indices, np.rint(indices), atol=1e-3)
    volume = np.transpose(_on_source_grid(stack, sitk.ReadImage(str(label_path))) > 0, (2, 1, 0))
    mapped = np.rint(indices[:3, :3]).astype(int)
    assert np.abs(mapped).sum() == 3 and volume.sum() == truth.sum() > 0
    build_seg(stack, np.transpose(volume, (2, 1, 0)).astype(np.uint8), REFERENCE_LABELS, 9100, "label").save_as(
        tmp_path / "label.seg"
    )
    # the only errors are the source's own (a StudyID longer than SH allows), which a SEG of the study copies
    assert set(dciodvfy_errors(tmp_path / "label.seg")) <= set(dciodvfy_errors(stack.sources[0].filename))
    _assert_volume_matches(hd.seg.segread(tmp_path / "label.seg"), sitk.ReadImage(str(label_path)))
