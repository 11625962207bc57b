"""DICOM grey frames: the Y plane of YBR cines against pydicom's RGB through the shared luminance, other
photometric interpretations unchanged."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.pixels import apply_color_lut, apply_modality_lut, get_decoder

from lightweight_nets.io.dicom import dicom_grey_frames, number_of_frames
from lightweight_nets.transforms import to_grey


def _dataset(name: str) -> pydicom.Dataset:
    path = get_testdata_file(name, download=False)
    assert path is not None, f"{name} is not available offline"
    return pydicom.dcmread(path)


# JPEG cines are decoded by Pillow (libjpeg-turbo) straight to grey, pydicom's RGB comes from pylibjpeg: the two
# IDCTs may differ by one grey level, so the unclipped tolerance is 0.5 rounding + 1 for those.
@pytest.mark.parametrize(
    ("name", "unclipped_tolerance"),
    [
        ("examples_ybr_color.dcm", 1.5),
        ("color3d_jpeg_baseline.dcm", 1.5),
        ("SC_ybr_full_uncompressed.dcm", 0.5),
        ("SC_ybr_full_422_uncompressed.dcm", 0.5),
    ],
)
def test_ybr_grey_is_the_luma_of_the_rgb(name, unclipped_tolerance):
    """YBR_FULL(_422), JPEG cines and native: the Y plane equals the BT.601 luma of pydicom's RGB up to rounding,
    and within a few grey levels where that RGB is clipped to [0, 255] (out-of-gamut chroma)."""
    ds = _dataset(name)
    grey = dicom_grey_frames(ds)
    rgb = ds.pixel_array
    expected = to_grey(rgb).reshape(grey.shape)
    assert grey.dtype == np.uint8  # 8-bit colour ultrasound stays 8-bit: a long cine in a quarter of float32's memory
    difference = np.abs(grey - expected)
    clipped = ((rgb == 0) | (rgb == 255)).any(axis=-1).reshape(grey.shape)
    assert difference[~clipped].max() < unclipped_tolerance
    assert difference.max() <= 7.0  # 6.6 (color3d_jpeg_baseline) and 5.9 (examples_ybr_color) measured


@pytest.mark.parametrize("name", ["examples_ybr_color.dcm", "color3d_jpeg_baseline.dcm"])
def test_jpeg_cine_grey_is_pydicoms_y_plane(name):
    """The fast path (Pillow, luma only) against pydicom's own YBR decode: one grey level at most, on ~1% of pixels."""
    ds = _dataset(name)
    y_plane = get_decoder(ds.file_meta.TransferSyntaxUID).as_array(ds, raw=True)[0][..., 0].astype(np.float32)
    difference = np.abs(dicom_grey_frames(ds) - y_plane.reshape(-1, ds.Rows, ds.Columns))
    assert difference.max() <= 1 and (difference > 0).mean() < 0.02  # 1.2% and 1.4% measured


@pytest.mark.parametrize("name", ["US1_UNCR.dcm", "US1_J2KR.dcm", "OBXXXX1A.dcm", "CT_small.dcm", "MR_small.dcm"])
def test_rgb_palette_and_monochrome_grey_unchanged(name):
    """RGB (also YBR_RCT, which pydicom returns as RGB), palette colour and monochrome: as pydicom's array
    through the shared luminance, exactly; monochrome in its modality's units (CT: Hounsfield)."""
    ds = _dataset(name)
    pixels = ds.pixel_array
    if ds.PhotometricInterpretation == "PALETTE COLOR":
        pixels = apply_color_lut(pixels, ds)
    elif ds.SamplesPerPixel == 1:
        pixels = apply_modality_lut(pixels, ds)[..., None]
    expected = to_grey(pixels).reshape(1, ds.Rows, ds.Columns)
    np.testing.assert_array_equal(dicom_grey_frames(ds), expected)


def test_number_of_frames_of_single_and_multi_frame_instances():
    """1 where NumberOfFrames is absent (single-frame IODs) or empty, its value otherwise."""
    cine, single = _dataset("color3d_jpeg_baseline.dcm"), _dataset("CT_small.dcm")
    assert number_of_frames(cine) == 120 == len(dicom_grey_frames(cine))
    assert "NumberOfFrames" not in single and number_of_frames(single) == 1
    single.NumberOfFrames = None
    assert number_of_frames(single) == 1
