"""Reading single images and writing masks for the bundle's folder workflows (PNG/JPEG, NIfTI, DICOM).

The Deploy app reads whole DICOM series itself (``apps/lightweight_seg``); this module covers the
one-file-per-image folders that training, evaluation and the bundle's inference config work on.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lightweight_nets.io.dicom import dicom_grey_frames, dicom_pixel_spacing_mm
from lightweight_nets.io.files import atomic_path, file_suffix
from lightweight_nets.transforms import to_grey

__all__ = ["Image2D", "IMAGE_SUFFIXES", "read_image", "image_spacing_mm", "write_mask", "mask_name"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".nii", ".nii.gz", ".dcm")


@dataclass
class Image2D:
    """A grey 2D image (``pixels`` float32, H x W) and its pixel spacing in mm (row, column) where known."""

    pixels: np.ndarray
    spacing_mm: tuple[float, float] | None
    path: Path


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
    suffix = file_suffix(path)
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


def image_spacing_mm(image: Image2D, pixel_sizes: Mapping[str, float]) -> tuple[float, float] | None:
    """The image's own (row, column) spacing in mm, else the square pixel size that a side table
    (:func:`lightweight_nets.io.tables.read_pixel_sizes`, HC18's) gives for its file name; None where neither does."""
    if image.spacing_mm:
        return image.spacing_mm
    size = pixel_sizes.get(image.path.name)
    return None if size is None else (size, size)


def mask_name(image_path: Path) -> str:
    """Output mask file name for an input image: same name, PNG for pictures, same format otherwise."""
    suffix = file_suffix(image_path)
    stem = image_path.name[: -len(suffix)] if suffix else image_path.name
    return stem + (suffix if suffix in (".nii", ".nii.gz", ".png") else ".png")


def write_mask(mask: np.ndarray, target: str | Path, like: Image2D | None = None) -> Path:
    """Write a mask (H x W) atomically: PNG (a boolean mask as 0/255, a label map as its values) or NIfTI (uint8
    labels, the input's spacing)."""
    target = Path(target)
    with atomic_path(target) as tmp:
        if file_suffix(target) in (".nii", ".nii.gz"):
            import nibabel as nib

            sy, sx = like.spacing_mm if like is not None and like.spacing_mm else (1.0, 1.0)
            nib.save(nib.Nifti1Image(mask.astype(np.uint8).T, np.diag([sx, sy, 1.0, 1.0])), str(tmp))
        else:
            from PIL import Image

            pixels = mask.astype(np.uint8) * 255 if mask.dtype == bool else mask.astype(np.uint8)
            Image.fromarray(pixels).save(tmp, format="PNG")
    return target
