"""Human-readable companions of each SEG: an overlay PNG (viewers that cannot show SEG still show this) and a
small JSON report with what was segmented, how much, by which model, and how long it took."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from PIL import Image

from lightweight_nets.measure import head_circumference_mm
from lightweight_seg.dicom_io import Stack

__all__ = ["MAX_OVERLAY_FRAMES", "write_overlay", "measurements", "write_report"]

MAX_OVERLAY_FRAMES = 8
_TILE_SIZE = 256
_TINT = np.array([255, 40, 40], dtype=np.float32)


def _overlay_frame(frame: np.ndarray, mask: np.ndarray) -> Image.Image:
    """A grey frame, scaled to 0-255, with the mask tinted red."""
    low, high = float(frame.min()), float(frame.max())
    grey = (frame - low) / (high - low) * 255 if high > low else np.zeros_like(frame)
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    rgb[mask] = 0.55 * rgb[mask] + 0.45 * _TINT
    return Image.fromarray(rgb.astype(np.uint8))


def write_overlay(frames: np.ndarray, masks: np.ndarray, path: Path) -> None:
    """One frame at full size, or a contact sheet of up to :data:`MAX_OVERLAY_FRAMES` evenly spaced frames
    (slices or cine frames), each fitted into a 256-pixel tile."""
    if len(frames) == 1:
        _overlay_frame(frames[0], masks[0]).save(path, format="PNG")
        return
    picks = np.unique(np.linspace(0, len(frames) - 1, min(len(frames), MAX_OVERLAY_FRAMES)).round().astype(int))
    columns = math.ceil(math.sqrt(len(picks)))
    rows = math.ceil(len(picks) / columns)
    sheet = Image.new("RGB", (columns * _TILE_SIZE, rows * _TILE_SIZE))
    for slot, index in enumerate(picks):
        tile = _overlay_frame(frames[index], masks[index])
        tile.thumbnail((_TILE_SIZE, _TILE_SIZE))
        sheet.paste(tile, ((slot % columns) * _TILE_SIZE, (slot // columns) * _TILE_SIZE))
    sheet.save(path, format="PNG")


def measurements(stack: Stack, masks: np.ndarray) -> dict:
    """Segment size per frame (pixels, and mm^2 where the pixel spacing is known), the volume for a CT/MR
    stack with a slice spacing, and the head circumference per frame for ultrasound with a known spacing."""
    pixels = masks.reshape(len(masks), -1).sum(axis=1)
    result = {"pixels_per_frame": pixels.tolist(), "frames_with_segment": int((pixels > 0).sum())}
    if stack.pixel_spacing_mm is not None:
        pixel_area = stack.pixel_spacing_mm[0] * stack.pixel_spacing_mm[1]
        result["area_mm2_per_frame"] = [round(float(p) * pixel_area, 2) for p in pixels]
        if stack.modality in ("CT", "MR") and stack.slice_spacing_mm:
            result["volume_mm3"] = round(float(pixels.sum()) * pixel_area * stack.slice_spacing_mm, 2)
        if stack.modality == "US":
            circumferences = [head_circumference_mm(mask, stack.pixel_spacing_mm) for mask in masks]
            result["head_circumference_mm_per_frame"] = [None if c is None else round(c, 2) for c in circumferences]
    return result


def write_report(report: dict, path: Path) -> None:
    path.write_text(json.dumps(report, indent=2) + "\n")
