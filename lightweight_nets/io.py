"""Reading single images and writing masks for the bundle's folder workflows (PNG/JPEG, NIfTI, DICOM).

The Deploy app reads whole DICOM series itself (``apps/lightweight_seg``); this module covers the
one-file-per-image folders that training and the bundle's inference config work on.
"""

from __future__ import annotations

import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lightweight_nets.transforms import to_grey

__all__ = ["Image2D", "IMAGE_SUFFIXES", "read_image", "write_mask", "mask_name", "atomic_path", "dicom_grey_frames",
           "dicom_number", "dicom_pixel_spacing_mm"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".nii", ".nii.gz", ".dcm")


@dataclass
class Image2D:
    """A grey 2D image (``pixels`` float32, H x W) and its pixel spacing in mm (row, column) where known."""

    pixels: np.ndarray
    spacing_mm: tuple[float, float] | None
    path: Path


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


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
        raise ValueError(f"{keyword} {_shown(raw)} has {len(numbers)} value{'s' * (len(numbers) != 1)}, "
                         f"not {count}")
    if not all(math.isfinite(n) for n in numbers):
        raise ValueError(f"{keyword} {_shown(raw)} is not a finite number")
    if positive and not all(n > 0 for n in numbers):
        raise ValueError(f"{keyword} {_shown(raw)} is not positive")
    return numbers


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
                (dy,), (dx,) = (dicom_number(region, k, count=1, positive=True)
                                for k in ("PhysicalDeltaY", "PhysicalDeltaX"))
            except ValueError as err:
                raise ValueError(f"ultrasound region {index} (SequenceOfUltrasoundRegions): {err}") from None
            return dy * 10, dx * 10
    return None


def dicom_grey_frames(ds) -> np.ndarray:
    """All frames of a DICOM instance as grey float32 ``(F, H, W)``.

    YBR_FULL and YBR_FULL_422 are decoded without pydicom's conversion to RGB and their Y plane is kept: Y is
    the BT.601 luma that ``to_grey`` computes, so the conversion, over half the decode time of a JPEG cine, is
    skipped. The two differ by rounding (< 0.5) and, where the RGB would be clipped to [0, 255], by a few grey
    levels. Palette colour goes through its LUT, RGB through ``to_grey``; grey through the modality LUT
    (RescaleSlope / RescaleIntercept: Hounsfield units for CT).
    """
    from pydicom.pixels import apply_color_lut, apply_modality_lut, get_decoder

    grey = _jpeg_baseline_luma(ds)
    if grey is not None:
        return grey
    pixels, decoded = get_decoder(ds.file_meta.TransferSyntaxUID).as_array(ds, raw=True)
    photometric = decoded["photometric_interpretation"]  # as decoded: pydicom corrects it from a JPEG codestream
    if photometric in ("YBR_FULL", "YBR_FULL_422"):
        grey = pixels[..., 0].astype(np.float32)
    elif photometric == "PALETTE COLOR":
        grey = to_grey(apply_color_lut(pixels, ds))
    elif int(ds.get("SamplesPerPixel", 1)) == 1:  # not through to_grey, which would take a width of 3 or 4 for colour
        # stored values to the modality's units (Hounsfield units for CT), as the 3D models were trained on
        grey = apply_modality_lut(pixels, ds).astype(np.float32)
    else:
        grey = to_grey(pixels)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    return grey.reshape(frames, int(ds.Rows), int(ds.Columns))


def _jpeg_baseline_luma(ds) -> np.ndarray | None:
    """The Y plane of a YBR JPEG baseline instance (the usual ultrasound cine), decoded by Pillow straight to
    grey: libjpeg then skips chroma decoding and upsampling, about 8x faster than decoding all three planes on a
    120-frame cine. ``None`` where this does not apply (other encodings, or a JPEG that is not YCbCr inside)."""
    import io

    from PIL import Image
    from pydicom.encaps import generate_frames
    from pydicom.uid import JPEGBaseline8Bit

    if (ds.file_meta.TransferSyntaxUID != JPEGBaseline8Bit or int(ds.get("SamplesPerPixel", 1)) != 3
            or not str(ds.get("PhotometricInterpretation", "")).startswith("YBR")):
        return None
    frames = []
    for fragment in generate_frames(ds.PixelData, number_of_frames=int(ds.get("NumberOfFrames", 1) or 1)):
        with Image.open(io.BytesIO(fragment)) as image:
            image.draft("L", image.size)
            if image.mode != "L" or image.size != (int(ds.Columns), int(ds.Rows)):
                return None
            frames.append(np.asarray(image, dtype=np.float32))
    return np.stack(frames)


def _read_dicom(path: Path) -> tuple[np.ndarray, tuple[float, float] | None]:
    import pydicom

    ds = pydicom.dcmread(path)
    if "PixelData" not in ds:
        raise ValueError("DICOM file has no pixel data")
    frames = dicom_grey_frames(ds)
    if len(frames) > 1:
        raise ValueError("multi-frame DICOM: use the Deploy app (apps/lightweight_seg) for cine and volumes")
    return frames[0], dicom_pixel_spacing_mm(ds)


def read_image(path: str | Path) -> Image2D:
    """Read one 2D image as grey float32; raises ``ValueError("<path>: <problem>")`` on bad input."""
    path = Path(path)
    suffix = _suffix(path)
    try:
        if suffix == ".dcm":
            pixels, spacing = _read_dicom(path)
        elif suffix in (".nii", ".nii.gz"):
            import nibabel as nib

            img = nib.load(str(path))
            pixels = np.squeeze(np.asarray(img.dataobj)).T  # NIfTI is (x, y): rows are y
            zooms = img.header.get_zooms()
            spacing = (float(zooms[1]), float(zooms[0]))
        elif suffix in IMAGE_SUFFIXES:
            from PIL import Image

            with Image.open(path) as im:
                pixels = np.asarray(im.convert("RGB") if im.mode in ("P", "RGBA", "CMYK") else im)
            spacing = None
        else:
            raise ValueError(f"unsupported file type {suffix!r} (supported: {', '.join(IMAGE_SUFFIXES)})")
        grey = to_grey(pixels)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None
    except Exception as err:  # decoder errors of every library: report them the same way
        raise ValueError(f"{path}: cannot read image ({type(err).__name__}: {err})") from None
    if grey.ndim != 2:
        raise ValueError(f"{path}: expected a 2D image, got shape {grey.shape}")
    return Image2D(grey, spacing, path)


def mask_name(image_path: Path) -> str:
    """Output mask file name for an input image: same name, PNG for pictures, same format otherwise."""
    suffix = _suffix(image_path)
    stem = image_path.name[: -len(suffix)] if suffix else image_path.name
    return stem + (suffix if suffix in (".nii", ".nii.gz", ".png") else ".png")


_UMASK = os.umask(0)
os.umask(_UMASK)


class atomic_path:
    """Context manager yielding a temporary path beside ``target``; renamed onto it only on success."""

    def __init__(self, target: str | Path):
        self.target = Path(target)

    def __enter__(self) -> Path:
        self.target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.target.name}.", suffix=".part" + _suffix(self.target),
                                   dir=self.target.parent)
        os.close(fd)
        self.tmp = Path(tmp)
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            try:
                os.chmod(self.tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give the usual permissions
                os.replace(self.tmp, self.target)
                return
            except OSError:  # e.g. a folder in the way: the temporary file must not stay behind either
                self.tmp.unlink(missing_ok=True)
                raise
        self.tmp.unlink(missing_ok=True)


def write_mask(mask: np.ndarray, target: str | Path, like: Image2D | None = None) -> Path:
    """Write a mask (H x W) atomically: PNG (a boolean mask as 0/255, a label map as its values) or NIfTI (uint8
    labels, the input's spacing)."""
    target = Path(target)
    with atomic_path(target) as tmp:
        if _suffix(target) in (".nii", ".nii.gz"):
            import nibabel as nib

            sy, sx = like.spacing_mm if like is not None and like.spacing_mm else (1.0, 1.0)
            nib.save(nib.Nifti1Image(mask.astype(np.uint8).T, np.diag([sx, sy, 1.0, 1.0])), str(tmp))
        else:
            from PIL import Image

            pixels = mask.astype(np.uint8) * 255 if mask.dtype == bool else mask.astype(np.uint8)
            Image.fromarray(pixels).save(tmp, format="PNG")
    return target
