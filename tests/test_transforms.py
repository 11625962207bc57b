"""Pre-processing as MONAI's ScaleIntensity + Resize; post-processing: the largest connected component of each
frame, as MONAI's KeepLargestConnectedComponent."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from monai.transforms import KeepLargestConnectedComponent, Resize, ScaleIntensity
from scipy import ndimage

from lightweight_nets.io import read_image
from lightweight_nets.transforms import postprocess, preprocess

SAMPLES = Path(__file__).resolve().parents[1] / "samples" / "hc18" / "images"


def _monai_postprocess(probabilities: torch.Tensor, original_size: tuple[int, int]) -> np.ndarray:
    """The previous post-processing: MONAI's largest component, frame by frame."""
    resized = torch.nn.functional.interpolate(probabilities, size=original_size, mode="bilinear", align_corners=False)
    largest = KeepLargestConnectedComponent(applied_labels=[1], is_onehot=False, connectivity=2)
    return np.stack([np.asarray(largest((frame > 0.5).to(torch.uint8))[0]) > 0 for frame in resized])


def test_largest_component_matches_monai_on_random_blobs():
    """Smoothed noise thresholded into about a dozen blobs a frame, an empty frame among them."""
    rng = np.random.default_rng(0)
    noise = ndimage.gaussian_filter(rng.random((6, 1, 64, 80)), sigma=(0, 0, 3, 3))
    probabilities = torch.as_tensor((noise - noise.mean()) / noise.std() * 0.15 + 0.4, dtype=torch.float32)
    probabilities[2] = 0.0
    masks = postprocess(probabilities, (96, 120))
    assert masks.shape == (6, 96, 120) and masks.dtype == bool
    assert not masks[2].any()
    assert all(masks[i].any() for i in (0, 1, 3, 4, 5))
    np.testing.assert_array_equal(masks, _monai_postprocess(probabilities, (96, 120)))


def test_largest_component_is_eight_connected_and_per_frame():
    """A diagonal of 4 pixels is one component (beats a run of 3); a larger blob in frame 0 does not remove the
    overlapping smaller one in frame 1."""
    frames = np.zeros((3, 10, 10), dtype=np.float32)
    frames[0, 2:8, 2:8] = 1  # 36 pixels
    frames[1, 3:5, 3:5] = 1  # 4 pixels, inside frame 0's blob
    frames[1, 8, 0:3] = 1  # 3 pixels
    frames[2, [0, 1, 2, 3], [0, 1, 2, 3]] = 1  # diagonal of 4
    frames[2, 8, 5:8] = 1  # run of 3
    probabilities = torch.from_numpy(frames[:, None])
    masks = postprocess(probabilities, (10, 10))
    np.testing.assert_array_equal(masks[0], frames[0] > 0)
    assert masks[1].sum() == 4 and masks[1, 3:5, 3:5].all()
    assert masks[2].sum() == 4 and masks[2, [0, 1, 2, 3], [0, 1, 2, 3]].all()
    np.testing.assert_array_equal(masks, _monai_postprocess(probabilities, (10, 10)))


def test_keep_largest_off_is_the_thresholded_resize():
    probabilities = torch.tensor([[[[0.2, 0.7], [0.9, 0.4]]]])
    masks = postprocess(probabilities, (2, 2), keep_largest=False)
    np.testing.assert_array_equal(masks, [[[False, True], [True, False]]])


def test_preprocess_matches_monai_scale_intensity_and_resize():
    """Real frames of different sizes and dtypes, a constant frame among them, to 256x256 and to 128x128."""
    frames = np.stack([read_image(p).pixels for p in sorted(SAMPLES.glob("*.png"))[:3]])
    frames = np.concatenate([frames, np.full_like(frames[:1], 7)])
    for spatial_size in ((256, 256), (128, 128)):
        scale, resize = ScaleIntensity(minv=0.0, maxv=1.0), Resize(spatial_size, mode="bilinear", anti_aliasing=False)
        expected = torch.stack([torch.as_tensor(np.asarray(resize(scale(f[None].astype(np.float32))))) for f in frames])
        batch = preprocess(frames, spatial_size)
        assert batch.shape == (4, 1, *spatial_size) and batch.dtype == torch.float32
        torch.testing.assert_close(batch, expected.float(), atol=1e-6, rtol=0)
        assert batch[3].abs().max() == 0
        torch.testing.assert_close(preprocess(frames[0], spatial_size), expected[:1].float(), atol=1e-6, rtol=0)
