"""Segmenting frames with any backend, and the bundle's folder workflow (one mask per input image).

:func:`segment_frames` is the single path from grey frames to label maps on their own grid; the bundle's
inference config, the evaluation and the Deploy app all call it with the bundle's pre- and post-processing.
"""

from __future__ import annotations

import csv
import logging
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps
from tqdm import tqdm

from lightweight_nets.io import IMAGE_SUFFIXES, atomic_path, mask_name, read_image, write_mask
from lightweight_nets.measure import measure_segment
from lightweight_nets.transforms import Postprocessing, Preprocessing, VolumePreprocessing

__all__ = ["segment_frames", "segment_volume", "write_overlay", "read_csv_column", "read_pixel_sizes", "list_images",
           "list_volumes", "segment_folder", "segment_volume_folder"]

log = logging.getLogger(__name__)
BATCH_FRAMES = 16  # frames per forward pass: bounds memory for long cines without slowing small inputs
MAX_OVERLAY_FRAMES = 8
_TILE_SIZE = 256


def segment_frames(frames: np.ndarray, predictor, preprocessing: Preprocessing,
                   postprocessing: Postprocessing) -> np.ndarray:
    """Grey frames ``(N, H, W)`` -> label maps ``(N, H, W)`` uint8 on the same grid (0 background, k segment k),
    through the bundle's pre/post-processing and ``predictor.predict``, :data:`BATCH_FRAMES` frames at a time."""
    frames = np.asarray(frames)
    if frames.ndim == 2:
        frames = frames[None]
    labels = []
    for start in range(0, len(frames), BATCH_FRAMES):
        chunk = frames[start:start + BATCH_FRAMES]
        with torch.inference_mode():
            logits = predictor.predict(preprocessing(chunk))
        labels.append(postprocessing(logits, chunk.shape[1:]))
    return np.concatenate(labels)


def segment_volume(volume: np.ndarray, affine: np.ndarray, predictor, preprocessing: VolumePreprocessing,
                   postprocessing: Postprocessing) -> np.ndarray:
    """A 3D volume ``(X, Y, Z)`` with its voxel-to-RAS ``affine`` (mm) -> label map ``(X, Y, Z)`` uint8 on the same
    grid: the bundle's orientation, spacing and intensity, sliding-window inference over patches, the
    probabilities back on the input grid, then the bundle's labels (argmax or threshold, largest components)."""
    from monai.data import MetaTensor

    image = MetaTensor(torch.as_tensor(np.asarray(volume), dtype=torch.float32)[None],
                       affine=torch.as_tensor(np.asarray(affine), dtype=torch.float64))
    prepared = preprocessing(image)
    with torch.inference_mode():
        logits = preprocessing.inferer(prepared.as_tensor()[None], predictor.predict)
    probabilities = postprocessing.probabilities(logits)[0]
    return postprocessing.labels(preprocessing.invert(probabilities, prepared, image)[None])[0]


def _overlay_frame(frame: np.ndarray, labels: np.ndarray, colors: Sequence[Sequence[int]]) -> Image.Image:
    """A grey frame, scaled to 0-255, with segment k tinted in ``colors[k - 1]``."""
    low, high = float(frame.min()), float(frame.max())
    grey = (frame - low) / (high - low) * 255 if high > low else np.zeros_like(frame, dtype=np.float32)
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    for value, color in enumerate(colors, start=1):
        where = labels == value
        rgb[where] = 0.55 * rgb[where] + 0.45 * np.asarray(color, dtype=np.float32)
    return Image.fromarray(rgb.astype(np.uint8))


def write_overlay(frames: np.ndarray, labels: np.ndarray, path: str | Path,
                  colors: Sequence[Sequence[int]] = ((255, 40, 40),)) -> Path:
    """PNG for a person to check at a glance: one frame at full size, or a contact sheet of up to
    :data:`MAX_OVERLAY_FRAMES` evenly spaced frames (slices or cine frames) in 256-pixel tiles, segment k in
    ``colors[k - 1]`` (the bundle's display colours). Atomic."""
    frames, labels = np.asarray(frames), np.asarray(labels)
    if len(frames) == 1:
        image = _overlay_frame(frames[0], labels[0], colors)
    else:
        picks = np.unique(np.linspace(0, len(frames) - 1, min(len(frames), MAX_OVERLAY_FRAMES)).round().astype(int))
        columns = math.ceil(math.sqrt(len(picks)))
        rows = math.ceil(len(picks) / columns)
        image = Image.new("RGB", (columns * _TILE_SIZE, rows * _TILE_SIZE))
        for slot, index in enumerate(picks):
            tile = ImageOps.contain(_overlay_frame(frames[index], labels[index], colors), (_TILE_SIZE, _TILE_SIZE))
            image.paste(tile, ((slot % columns) * _TILE_SIZE, (slot // columns) * _TILE_SIZE))
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")
    return Path(path)


def read_csv_column(csv_path: str | Path | None, column: str, convert: Callable[[str], Any] = str) -> dict[str, Any]:
    """``{file name: convert(value)}`` from a CSV with a ``filename`` column and ``column``; ``{}`` without a path,
    a clear error naming the file when a column is missing."""
    if not csv_path:
        return {}
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    if rows and not {"filename", column} <= set(rows[0]):
        raise ValueError(f"{csv_path}: needs columns filename and {column}, has {', '.join(rows[0])}")
    return {row["filename"]: convert(row[column]) for row in rows}


def read_pixel_sizes(csv_path: str | Path | None) -> dict[str, float]:
    """``{file name: pixel size in mm}`` from a CSV with ``filename`` and ``pixel_size_mm`` columns (HC18's)."""
    return read_csv_column(csv_path, "pixel_size_mm", float)


def list_images(folder: str | Path) -> list[Path]:
    """Image files directly in ``folder`` (sorted); a clear error for a missing folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such input folder")
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and (p.name.lower().endswith(".nii.gz") or p.suffix.lower() in IMAGE_SUFFIXES))


def segment_folder(predictor, preprocessing: Preprocessing, postprocessing: Postprocessing, segments: Sequence,
                   dataset_dir: str | Path, output_dir: str | Path, pixel_size_csv: str | Path | None = None) -> Path:
    """Segment every image in ``dataset_dir`` with a bundle's model: one mask per input named after it (PNG for
    pictures, 0/255 for a one-segment model and label values otherwise; same format for NIfTI; empty where nothing
    is found), an overlay PNG per input under ``overlays/``, and ``results.csv`` with one row per image and
    segment: its pixels and the measurements the bundle's segment asks for (``area_mm2``,
    ``head_circumference_mm``) where the pixel size is known (from DICOM/NIfTI or ``pixel_size_csv``).

    A file that cannot be read gets a one-line error naming it and the rest is still processed; the run fails
    (``SystemExit`` 1) when no image could be segmented. Returns the results CSV path."""
    output_dir = Path(output_dir)
    images = list_images(dataset_dir)
    if not images:
        raise SystemExit(f"{dataset_dir}: no images to segment (looked for {', '.join(IMAGE_SUFFIXES)})")
    pixel_sizes = read_pixel_sizes(pixel_size_csv)
    colors = [segment.color_rgb for segment in segments]
    rows, segmented, failures = [], 0, 0
    for path in tqdm(images, desc="segmenting", unit="image"):
        try:
            image = read_image(path)
        except ValueError as err:
            log.error("%s", err)
            failures += 1
            continue
        labels = segment_frames(image.pixels, predictor, preprocessing, postprocessing)
        write_mask(labels[0] > 0 if len(segments) == 1 else labels[0], output_dir / mask_name(path), like=image)
        write_overlay(image.pixels[None], labels, output_dir / "overlays" / f"{Path(mask_name(path)).stem}.png",
                      colors)
        spacing = image.spacing_mm or ((pixel_sizes[path.name],) * 2 if path.name in pixel_sizes else None)
        for segment in segments:
            measured = measure_segment(labels == segment.number, segment.measurements, spacing)
            row = {"image": path.name, "mask": mask_name(path), "segment": segment.label}
            row.update({key.removesuffix("_per_frame"): "" if values[0] is None else values[0]
                        for key, values in measured.items() if key.endswith("_per_frame")})
            row.update(_not_measured_column(measured))
            rows.append(row)
        segmented += 1
    return _write_results(rows, dataset_dir, output_dir, segmented, len(images), failures, "images",
                          "masks, overlays/, results.csv")



def _not_measured_column(measured: dict) -> dict:
    """The results.csv column naming each measurement the spacing did not allow, and why."""
    reasons = measured.get("not_measured", {})
    return {"not_measured": "; ".join(f"{name}: {why}" for name, why in reasons.items())} if reasons else {}


def list_volumes(folder: str | Path) -> list[Path]:
    """The volumes directly in ``folder`` (sorted): NIfTI files, and sub-folders that hold a DICOM series (files
    other than NIfTI)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such input folder")
    return sorted(p for p in folder.iterdir()
                  if (p.is_file() and _is_nifti(p))
                  or (p.is_dir() and any(c.is_file() and not c.name.startswith(".") and not _is_nifti(c)
                                         for c in p.iterdir())))


def _axial_slices(volume: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """The volume as axial slices the way a radiologist looks at them (patient's right on the left, anterior at the
    top), whatever its voxel order: for overlays."""
    import nibabel as nib

    ras = nib.orientations.apply_orientation(volume, nib.orientations.io_orientation(affine))
    return np.moveaxis(ras, -1, 0).transpose(0, 2, 1)[:, ::-1, ::-1]


def _is_nifti(path: Path) -> bool:
    return path.name.lower().endswith((".nii", ".nii.gz"))


def _volume_name(path: Path) -> str:
    """``<name>.nii.gz`` for an input volume (a NIfTI file or a DICOM series folder)."""
    name = path.name
    for suffix in (".nii.gz", ".nii"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
    return f"{name}.nii.gz"


def segment_volume_folder(predictor, preprocessing: VolumePreprocessing, postprocessing: Postprocessing,
                          segments: Sequence, dataset_dir: str | Path, output_dir: str | Path) -> Path:
    """Segment every volume in ``dataset_dir`` (NIfTI files, or sub-folders each holding one DICOM series) with a
    bundle's 3D model: a label map per input named after it (``<name>.nii.gz``, the input's grid and affine), an
    overlay PNG of evenly spaced slices under ``overlays/``, and ``results.csv`` with one row per volume and
    segment: its voxels and the measurements its bundle asks for (``volume_mm3``).

    A volume that cannot be read gets a one-line error naming it and the rest is still processed; the run fails
    (``SystemExit`` 1) when no volume could be segmented. Returns the results CSV path."""
    import nibabel as nib
    from monai.transforms import LoadImage

    output_dir = Path(output_dir)
    volumes = list_volumes(dataset_dir)
    if not volumes:
        raise SystemExit(f"{dataset_dir}: no volumes to segment (looked for .nii, .nii.gz and DICOM series folders)")
    colors = [segment.color_rgb for segment in segments]
    rows, segmented, failures = [], 0, 0
    for path in tqdm(volumes, desc="segmenting", unit="volume"):
        try:
            image = LoadImage(image_only=True, reader="PydicomReader" if path.is_dir() else "NibabelReader")(path)
            if image.dim() != 3:
                raise ValueError(f"expected a 3D volume, got shape {tuple(image.shape)}")
        except Exception as err:  # every reader fails its own way on a bad file
            log.error("%s: cannot read volume (%s)", path, str(err).strip().splitlines()[0] if str(err) else err)
            failures += 1
            continue
        volume, affine = image.numpy(), image.affine.numpy()
        labels = segment_volume(volume, affine, predictor, preprocessing, postprocessing)
        name = _volume_name(path)
        with atomic_path(output_dir / name) as tmp:
            nib.save(nib.Nifti1Image(labels, affine), str(tmp))
        write_overlay(_axial_slices(volume, affine), _axial_slices(labels, affine),
                      output_dir / "overlays" / f"{name[:-7]}.png", colors)
        spacing = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
        for segment in segments:
            measured = measure_segment(np.moveaxis(labels == segment.number, -1, 0), segment.measurements,
                                       (float(spacing[0]), float(spacing[1])), float(spacing[2]))
            row = {"volume": path.name, "labels": name, "segment": segment.label,
                   "voxels": int(sum(measured["pixels_per_frame"]))}
            row.update({key: value for key, value in measured.items() if not key.endswith("_per_frame")
                        and key not in ("frames_with_segment", "not_measured")})
            row.update(_not_measured_column(measured))
            rows.append(row)
        segmented += 1
    return _write_results(rows, dataset_dir, output_dir, segmented, len(volumes), failures, "volumes",
                          "label maps, overlays/, results.csv")


def _write_results(rows: list[dict], dataset_dir: Path, output_dir: Path, segmented: int, total: int,
                   failures: int, what: str, outputs: str) -> Path:
    """Write ``results.csv`` (one row per input and segment) and say what was done; exit when nothing was."""
    if not rows:
        raise SystemExit(f"{dataset_dir}: none of {total} {what} could be segmented")
    results = output_dir / "results.csv"
    with atomic_path(results) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(dict.fromkeys(key for row in rows for key in row)), restval="")
        writer.writeheader()
        writer.writerows(rows)
    print(f"segmented {segmented} of {total} {what} -> {output_dir} ({outputs})"
          + (f"; {failures} failed, see the errors above" if failures else ""))
    return results
