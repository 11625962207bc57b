"""Segmenting frames with any backend, and the bundle's folder workflow (one mask per input image).

:func:`segment_frames` is the single path from grey frames to masks on their own grid; the bundle's
inference config, the evaluation and the Deploy app all call it.
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
from PIL import Image
from tqdm import tqdm

from lightweight_nets.io import IMAGE_SUFFIXES, atomic_path, mask_name, read_image, write_mask
from lightweight_nets.measure import head_circumference_mm
from lightweight_nets.transforms import DEFAULT_SPATIAL_SIZE, postprocess, preprocess

__all__ = ["segment_frames", "write_overlay", "read_csv_column", "read_pixel_sizes", "list_images", "segment_folder"]

log = logging.getLogger(__name__)
BATCH_FRAMES = 16  # frames per forward pass: bounds memory for long cines without slowing small inputs
MAX_OVERLAY_FRAMES = 8
_TILE_SIZE = 256
_TINT = np.array([255, 40, 40], dtype=np.float32)


def segment_frames(frames: np.ndarray, predictor, keep_largest: bool = True,
                   spatial_size: Sequence[int] = DEFAULT_SPATIAL_SIZE) -> np.ndarray:
    """Grey frames ``(N, H, W)`` -> boolean masks ``(N, H, W)`` on the same grid, through the shared
    pre/post-processing and ``predictor.predict``."""
    frames = np.asarray(frames)
    if frames.ndim == 2:
        frames = frames[None]
    masks = []
    for start in range(0, len(frames), BATCH_FRAMES):
        chunk = frames[start:start + BATCH_FRAMES]
        with torch.inference_mode():
            probabilities = predictor.predict(preprocess(chunk, spatial_size))
        masks.append(postprocess(probabilities, chunk.shape[1:], keep_largest=keep_largest))
    return np.concatenate(masks)


def _overlay_frame(frame: np.ndarray, mask: np.ndarray) -> Image.Image:
    """A grey frame, scaled to 0-255, with the mask tinted red."""
    low, high = float(frame.min()), float(frame.max())
    grey = (frame - low) / (high - low) * 255 if high > low else np.zeros_like(frame, dtype=np.float32)
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    rgb[mask] = 0.55 * rgb[mask] + 0.45 * _TINT
    return Image.fromarray(rgb.astype(np.uint8))


def write_overlay(frames: np.ndarray, masks: np.ndarray, path: str | Path) -> Path:
    """PNG for a person to check at a glance: one frame at full size, or a contact sheet of up to
    :data:`MAX_OVERLAY_FRAMES` evenly spaced frames (slices or cine frames) in 256-pixel tiles. Atomic."""
    frames, masks = np.asarray(frames), np.asarray(masks, dtype=bool)
    if len(frames) == 1:
        image = _overlay_frame(frames[0], masks[0])
    else:
        picks = np.unique(np.linspace(0, len(frames) - 1, min(len(frames), MAX_OVERLAY_FRAMES)).round().astype(int))
        columns = math.ceil(math.sqrt(len(picks)))
        rows = math.ceil(len(picks) / columns)
        image = Image.new("RGB", (columns * _TILE_SIZE, rows * _TILE_SIZE))
        for slot, index in enumerate(picks):
            tile = _overlay_frame(frames[index], masks[index])
            tile.thumbnail((_TILE_SIZE, _TILE_SIZE))
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


def segment_folder(predictor, dataset_dir: str | Path, output_dir: str | Path, keep_largest: bool = True,
                   pixel_size_csv: str | Path | None = None, measure_head_circumference: bool = True,
                   spatial_size: Sequence[int] = DEFAULT_SPATIAL_SIZE) -> Path:
    """Segment every image in ``dataset_dir``: one mask per input named after it (PNG for pictures, same format
    for NIfTI; empty where nothing is found), an overlay PNG per input under ``overlays/``, and ``results.csv``
    with the segmented area and, for the fetal-head model, the head circumference in mm (pixel size from
    DICOM/NIfTI or ``pixel_size_csv``). ``spatial_size`` is the grid the model was trained on.

    A file that cannot be read gets a one-line error naming it and the rest is still processed; the run fails
    (``SystemExit`` 1) when no image could be segmented. Returns the results CSV path."""
    output_dir = Path(output_dir)
    images = list_images(dataset_dir)
    if not images:
        raise SystemExit(f"{dataset_dir}: no images to segment (looked for {', '.join(IMAGE_SUFFIXES)})")
    pixel_sizes = read_pixel_sizes(pixel_size_csv)
    rows, failures = [], 0
    for path in tqdm(images, desc="segmenting", unit="image"):
        try:
            image = read_image(path)
        except ValueError as err:
            log.error("%s", err)
            failures += 1
            continue
        mask = segment_frames(image.pixels, predictor, keep_largest, spatial_size)[0]
        write_mask(mask, output_dir / mask_name(path), like=image)
        write_overlay(image.pixels[None], mask[None], output_dir / "overlays" / f"{Path(mask_name(path)).stem}.png")
        spacing = image.spacing_mm or ((pixel_sizes[path.name],) * 2 if path.name in pixel_sizes else None)
        row = {"image": path.name, "mask": mask_name(path), "pixels": int(mask.sum()), "area_mm2": "",
               "head_circumference_mm": ""}
        if spacing is not None:
            row["area_mm2"] = round(float(mask.sum()) * spacing[0] * spacing[1], 2)
            if measure_head_circumference:
                hc = head_circumference_mm(mask, spacing)
                row["head_circumference_mm"] = "" if hc is None else round(hc, 2)
        rows.append(row)
    if not rows:
        raise SystemExit(f"{dataset_dir}: none of {len(images)} images could be segmented")
    results = output_dir / "results.csv"
    with atomic_path(results) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"segmented {len(rows)} of {len(images)} images -> {output_dir} (masks, overlays/, results.csv)"
          + (f"; {failures} failed, see the errors above" if failures else ""))
    return results
