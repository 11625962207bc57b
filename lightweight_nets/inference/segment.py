"""The one path from an image to its label map with any backend: :func:`segment_frames` for 2D models (frames,
cines, stacks of slices), :func:`segment_volume` for 3D models. The bundle's folder workflows, the evaluation,
the Deploy app and the benchmarks all call these with the bundle's pre- and post-processing."""

from __future__ import annotations

import numpy as np
import torch

from lightweight_nets.transforms import Postprocessing, Preprocessing, VolumePreprocessing

__all__ = ["BATCH_FRAMES", "segment_frames", "segment_volume"]

BATCH_FRAMES = 8  # frames per forward pass: bounds memory for long cines without slowing small inputs


def segment_frames(
    frames: np.ndarray, predictor, preprocessing: Preprocessing, postprocessing: Postprocessing
) -> np.ndarray:
    """Grey frames ``(N, H, W)`` -> label maps ``(N, H, W)`` uint8 on the same grid (0 background, k segment k),
    through the bundle's pre/post-processing and ``predictor.predict`` (run by the preprocessing's inferer),
    :data:`BATCH_FRAMES` frames at a time."""
    frames = np.asarray(frames)
    if frames.ndim == 2:
        frames = frames[None]
    labels = np.empty(frames.shape, dtype=np.uint8)  # filled batch by batch: a long cine is never held twice
    for start in range(0, len(frames), BATCH_FRAMES):
        chunk = frames[start : start + BATCH_FRAMES]
        with torch.inference_mode():
            logits = preprocessing.inferer(preprocessing(chunk), predictor.predict)
        labels[start : start + len(chunk)] = postprocessing(logits, chunk.shape[1:])
    return labels


def segment_volume(
    volume: np.ndarray,
    affine: np.ndarray,
    predictor,
    preprocessing: VolumePreprocessing,
    postprocessing: Postprocessing,
) -> np.ndarray:
    """A 3D volume ``(X, Y, Z)`` with its voxel-to-RAS ``affine`` (mm) -> label map ``(X, Y, Z)`` uint8 on the same
    grid: the bundle's orientation, spacing and intensity, sliding-window inference over patches, the
    probabilities back on the input grid, then the bundle's labels (argmax or threshold, largest components)."""
    from monai.data import MetaTensor

    image = MetaTensor(
        torch.as_tensor(np.asarray(volume), dtype=torch.float32)[None],
        affine=torch.as_tensor(np.asarray(affine), dtype=torch.float64),
    )
    prepared = preprocessing(image)
    with torch.inference_mode():
        logits = preprocessing.inferer(prepared.as_tensor()[None], predictor.predict)
    probabilities = postprocessing.probabilities(logits)[0]
    return postprocessing.labels(preprocessing.invert(probabilities, prepared, image)[None])[0]
