"""Overlay PNGs for a person to check a segmentation at a glance: the grey image with each segment tinted in the
bundle's display colour, one frame at full size or a contact sheet of several."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from lightweight_nets.io.files import atomic_path

__all__ = ["MAX_OVERLAY_FRAMES", "write_overlay"]

MAX_OVERLAY_FRAMES = 8
_TILE_SIZE = 256


def _overlay_frame(frame: np.ndarray, labels: np.ndarray, colors: Sequence[Sequence[int]]) -> Image.Image:
    """A grey frame, scaled to 0-255, with segment k tinted in ``colors[k - 1]``."""
    low, high = float(frame.min()), float(frame.max())
    grey = (frame - low) / (high - low) * 255 if high > low else np.zeros_like(frame, dtype=np.float32)
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    for value, color in enumerate(colors, start=1):
        where = labels == value
        rgb[where] = 0.55 * rgb[where] + 0.45 * np.asarray(color, dtype=np.float32)
    return Image.fromarray(rgb.astype(np.uint8))


def write_overlay(
    frames: np.ndarray, labels: np.ndarray, path: str | Path, colors: Sequence[Sequence[int]] = ((255, 40, 40),)
) -> Path:
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
