"""DICOM pixels and numbers as the models need them: every frame of an instance as grey, pixel spacing in mm, and
numeric attributes read with one clear error. Shared by the bundle's folder workflow (one file per image) and the
Deploy app (whole series)."""

from __future__ import annotations

import math

import numpy as np

from lightweight_nets.transforms import to_grey

__all__ = ["dicom_grey_frames", "dicom_number", "dicom_pixel_spacing_mm", "number_of_frames"]

_CM_UNITS = 3  # PhysicalUnitsX/YDirection code for centimetres (PS3.3 C.8.5.5.1.15)


def dicom_number(ds, keyword: str, count: int | None = None, positive: bool = False) -> tuple[float, ...]:
    """The values of a numeric DICOM attribute as finite floats (``count`` of them, when given; ``positive``: each
    above zero). ``ValueError`` naming the attribute and its value for an absent or empty attribute, text that is not
    a number, the wrong number of values, NaN or infinity, or a value that must be positive and is not."""
    if keyword not in ds or ds[keyword].value in (None, ""):
        raise ValueError(f"no {keyword}" if keyword not in ds else f"{keyword} is empty")
    raw = ds[keyword].value
    values = [raw] if isinstance(raw, (str, bytes, int, float)) else list(raw)
    try:
        numbers = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        raise ValueError(f"{keyword} {_shown(raw)} is not a number") from None
    if count is not None and len(numbers) != count:
        raise ValueError(f"{keyword} {_shown(raw)} has {len(numbers)} value{'s' * (len(numbers) != 1)}, not {count}")
    if not all(math.isfinite(n) for n in numbers):
        raise ValueError(f"{keyword} {_shown(raw)} is not a finite number")
    if positive and not all(n > 0 for n in numbers):
        raise ValueError(f"{keyword} {_shown(raw)} is not positive")
    return numbers


def number_of_frames(ds) -> int:
    """How many frames an instance holds: NumberOfFrames, 1 where it is absent or empty (single-frame IODs)."""
    return int(ds.get("NumberOfFrames", 1) or 1)


def _shown(value) -> str:
    """A DICOM value as it reads in the file, quoted (``'0.5\\0.5'``)."""
    text = str(value) if isinstance(value, (str, bytes, int, float)) else "\\".join(str(v) for v in value)
    return f"'{text}'"


def dicom_pixel_spacing_mm(ds) -> tuple[float, float] | None:
    """(row, column) pixel spacing in mm: PixelSpacing, else the first ultrasound region calibrated in cm; None
    where neither is given (an empty PixelSpacing counts as not given). ``ValueError`` naming the attribute where the
    one used is not two positive finite numbers (a zero, negative or NaN spacing gives wrong areas and lengths)."""
    if ds.get("PixelSpacing", None) not in (None, ""):
        return dicom_number(ds, "PixelSpacing", count=2, positive=True)
    for index, region in enumerate(ds.get("SequenceOfUltrasoundRegions", None) or [], start=1):
        if region.get("PhysicalUnitsXDirection") == _CM_UNITS and region.get("PhysicalUnitsYDirection") == _CM_UNITS:
            try:
                (dy,), (dx,) = (
                    dicom_number(region, k, count=1, positive=True) for k in ("PhysicalDeltaY", "PhysicalDeltaX")
                )
            except ValueError as err:
                raise ValueError(f"ultrasound region {index} (SequenceOfUltrasoundRegions): {err}") from None
            return dy * 10, dx * 10
    return None


def dicom_grey_frames(ds) -> np.ndarray:
    """All frames of a DICOM instance as grey ``(F, H, W)``: uint8 where the source is 8-bit YBR colour (the
    ultrasound cine: a quarter of the memory of float32, which a long cine needs), float32 otherwise.

    YBR_FULL and YBR_FULL_422 are decoded without pydicom's conversion to RGB and their Y plane is kept: Y is
    the BT.601 luma that ``to_grey`` computes, so the conversion, a large part of decoding a JPEG cine
    (docs/benchmarks.md), is skipped. The two differ by rounding (< 0.5) and, where the RGB would be clipped to
    [0, 255], by a few grey levels. Palette colour goes through its LUT, RGB through ``to_grey``; grey through the
    modality LUT (RescaleSlope / RescaleIntercept: Hounsfield units for CT).
    """
    from pydicom.pixels import apply_color_lut, apply_modality_lut, get_decoder

    grey = _jpeg_baseline_luma(ds)
    if grey is not None:
        return grey
    pixels, decoded = get_decoder(ds.file_meta.TransferSyntaxUID).as_array(ds, raw=True)
    photometric = decoded["photometric_interpretation"]  # as decoded: pydicom corrects it from a JPEG codestream
    if photometric in ("YBR_FULL", "YBR_FULL_422"):
        grey = np.ascontiguousarray(pixels[..., 0])
    elif photometric == "PALETTE COLOR":
        grey = to_grey(apply_color_lut(pixels, ds))
    elif int(ds.get("SamplesPerPixel", 1)) == 1:  # not through to_grey, which would take a width of 3 or 4 for colour
        # stored values to the modality's units (Hounsfield units for CT), as the 3D models were trained on
        grey = apply_modality_lut(pixels, ds).astype(np.float32)
    else:
        grey = to_grey(pixels)
    return grey.reshape(number_of_frames(ds), int(ds.Rows), int(ds.Columns))


def _jpeg_baseline_luma(ds) -> np.ndarray | None:
    """The Y plane of a YBR JPEG baseline instance (the usual ultrasound cine), decoded by Pillow straight to
    grey: libjpeg then skips chroma decoding and upsampling, the larger part of decoding all three planes
    (docs/benchmarks.md). ``None`` where this does not apply (other encodings, or a JPEG that is not YCbCr inside)."""
    import io

    from PIL import Image
    from pydicom.encaps import generate_frames
    from pydicom.uid import JPEGBaseline8Bit

    if (
        ds.file_meta.TransferSyntaxUID != JPEGBaseline8Bit
        or int(ds.get("SamplesPerPixel", 1)) != 3
        or not str(ds.get("PhotometricInterpretation", "")).startswith("YBR")
    ):
        return None
    frames = np.empty((number_of_frames(ds), int(ds.Rows), int(ds.Columns)), dtype=np.uint8)
    for frame, fragment in zip(frames, generate_frames(ds.PixelData, number_of_frames=len(frames)), strict=True):
        with Image.open(io.BytesIO(fragment)) as image:
            image.draft("L", image.size)
            if image.mode != "L" or image.size != (frame.shape[1], frame.shape[0]):
                return None
            frame[:] = np.asarray(image)
    return frames
