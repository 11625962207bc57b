"""The one definition of pre- and post-processing.

Training, the bundle's inference config, the Deploy app and the PACS listener all call these functions,
so what the network sees at serving time is exactly what it saw in training.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from monai.transforms import Resize
from monai.utils import convert_to_tensor
from scipy import ndimage

__all__ = ["DEFAULT_SPATIAL_SIZE", "to_grey", "preprocess", "resize_mask", "postprocess"]

DEFAULT_SPATIAL_SIZE = (256, 256)
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R BT.601, as PIL's "L" conversion
_EIGHT_CONNECTED = ndimage.generate_binary_structure(2, 2)


def to_grey(image: np.ndarray) -> np.ndarray:
    """Colour (channel-last RGB or RGBA) to grey luminance; grey input is returned as float32 unchanged."""
    image = np.asarray(image)
    if image.ndim >= 3 and image.shape[-1] in (3, 4):
        return image[..., :3].astype(np.float32) @ _LUMA
    return image.astype(np.float32)


def preprocess(frames: np.ndarray, spatial_size: Sequence[int] = DEFAULT_SPATIAL_SIZE) -> torch.Tensor:
    """Grey frames ``(H, W)`` or ``(N, H, W)`` of any dtype -> network input ``(N, 1, *spatial_size)`` float32,
    each frame min-max scaled to [0, 1] (a constant frame to 0) and resized bilinearly.

    The same arithmetic as MONAI's ``ScaleIntensity(0, 1)`` + ``Resize(mode="bilinear")``, done for the whole
    batch at once: per frame, those transforms cost more than the network on a 120-frame cine."""
    frames = np.asarray(frames, dtype=np.float32)
    if frames.ndim == 2:
        frames = frames[None]
    if frames.ndim != 3:
        raise ValueError(f"preprocess expects (H, W) or (N, H, W) grey frames, got shape {frames.shape}")
    batch = torch.from_numpy(frames)[:, None]
    low = batch.amin(dim=(2, 3), keepdim=True)
    span = batch.amax(dim=(2, 3), keepdim=True) - low
    scaled = torch.where(span > 0, (batch - low) / torch.where(span > 0, span, 1.0), 0.0)
    return torch.nn.functional.interpolate(scaled, size=tuple(spatial_size), mode="bilinear", align_corners=False)


def resize_mask(mask: np.ndarray, spatial_size: Sequence[int] = DEFAULT_SPATIAL_SIZE) -> torch.Tensor:
    """Binary mask ``(H, W)`` -> ``(1, *spatial_size)`` float {0, 1}, nearest-neighbour, for training targets."""
    mask = (np.asarray(mask) > 0).astype(np.float32)[None]
    return convert_to_tensor(Resize(spatial_size, mode="nearest")(mask), track_meta=False).float()


def postprocess(
    probabilities: torch.Tensor | np.ndarray,
    original_size: Sequence[int],
    threshold: float = 0.5,
    keep_largest: bool = True,
) -> np.ndarray:
    """Foreground probabilities ``(N, 1, h, w)`` -> boolean masks ``(N, H, W)`` on the original grid:
    bilinear resize back, threshold, then (optionally) keep the largest connected component of each frame,
    as Li et al. do for a single lesion."""
    probabilities = torch.as_tensor(probabilities, dtype=torch.float32)
    if probabilities.dim() != 4 or probabilities.shape[1] != 1:
        raise ValueError(f"postprocess expects (N, 1, h, w) probabilities, got {tuple(probabilities.shape)}")
    resized = torch.nn.functional.interpolate(probabilities, size=tuple(original_size), mode="bilinear",
                                              align_corners=False)
    masks = (resized > threshold)[:, 0].cpu().numpy()
    return _keep_largest_component(masks) if keep_largest else masks


def _keep_largest_component(masks: np.ndarray) -> np.ndarray:
    """Boolean frames ``(N, H, W)`` -> the largest 8-connected component of each; empty frames stay empty.

    scipy does the labelling. MONAI's ``KeepLargestConnectedComponent`` gives the same masks, but its overhead
    per frame (MetaTensor conversions around a 1 ms labelling) made it 10 to 30 times slower on a cine.
    """
    out = np.zeros_like(masks, dtype=bool)
    for frame, mask in zip(out, masks):
        labels, count = ndimage.label(mask, structure=_EIGHT_CONNECTED)
        if count:
            frame[...] = labels == np.argmax(np.bincount(labels.ravel())[1:]) + 1
    return out
