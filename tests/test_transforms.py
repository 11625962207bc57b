"""Pre-processing as MONAI's ScaleIntensity / NormalizeIntensity + Resize; post-processing: the activation, the
way back to the original grid, and the largest connected component of each label in each frame, as MONAI's
KeepLargestConnectedComponent."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from monai.transforms import KeepLargestConnectedComponent, NormalizeIntensity, Resize, ScaleIntensity
from scipy import ndimage

from lightweight_nets.io.images import read_image
from lightweight_nets.transforms import FlipAveragingInferer, Postprocessing, Preprocessing, component_evidence

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
    masks = Postprocessing()(torch.logit(probabilities), (96, 120))
    assert masks.shape == (6, 96, 120) and masks.dtype == np.uint8 and masks.max() == 1
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
    masks = Postprocessing()(torch.logit(probabilities), (10, 10)) > 0
    np.testing.assert_array_equal(masks[0], frames[0] > 0)
    assert masks[1].sum() == 4 and masks[1, 3:5, 3:5].all()
    assert masks[2].sum() == 4 and masks[2, [0, 1, 2, 3], [0, 1, 2, 3]].all()
    np.testing.assert_array_equal(masks, _monai_postprocess(probabilities, (10, 10)))


def test_keep_largest_off_is_the_thresholded_resize():
    probabilities = torch.tensor([[[[0.2, 0.7], [0.9, 0.4]]]])
    masks = Postprocessing(keep_largest=False)(torch.logit(probabilities), (2, 2))
    np.testing.assert_array_equal(masks, [[[0, 1], [1, 0]]])
    masks = Postprocessing(threshold=0.8, keep_largest=False)(torch.logit(probabilities), (2, 2))
    np.testing.assert_array_equal(masks, [[[0, 0], [1, 0]]])


def test_softmax_gives_the_most_probable_label_and_keeps_the_largest_component_of_each():
    """Two segments and background: each pixel gets its most probable label; keep_largest drops a stray
    one-pixel island of label 2 and keeps the block of each label."""
    logits = torch.zeros(1, 3, 6, 6)
    logits[0, 1, 0:3, 0:3] = 5.0  # label 1: a 3x3 block
    logits[0, 2, 3:6, 3:6] = 5.0  # label 2: a 3x3 block
    logits[0, 2, 0, 5] = 5.0  # label 2: a stray pixel
    labels = Postprocessing("softmax", keep_largest=False)(logits, (6, 6))
    assert labels.dtype == np.uint8 and labels[0, 0, 5] == 2 and (labels == 1).sum() == 9
    kept = Postprocessing("softmax", keep_largest=True)(logits, (6, 6))
    assert kept[0, 0, 5] == 0 and (kept == 2).sum() == 9 and (kept == 1).sum() == 9


@pytest.mark.parametrize(
    "arguments, problem",
    [
        ({"activation": "relu"}, "unknown activation"),
        ({"threshold": 1.0}, "strictly between 0 and 1"),
        ({"presence": {"roundness": 0.5}}, "unknown presence feature.* roundness; known: mean_probability"),
    ],
)
def test_postprocessing_refuses_bad_arguments(arguments, problem):
    with pytest.raises(ValueError, match=problem):
        Postprocessing(**arguments)


def _ellipse(shape=(40, 40), centre=(20, 20), semi_axes=(14, 7)) -> np.ndarray:
    rows, cols = np.indices(shape)
    return ((rows - centre[0]) / semi_axes[0]) ** 2 + ((cols - centre[1]) / semi_axes[1]) ** 2 <= 1


def test_presence_empties_a_frame_whose_component_is_unsure_and_keeps_a_sure_one():
    """The same disc found at probability 0.9997 and at 0.62: without a rule both are found; a minimum mean
    probability of 0.9 empties only the unsure frame."""
    logits = torch.full((2, 1, 40, 40), -8.0)
    logits[0, 0][torch.from_numpy(_ellipse())] = 8.0
    logits[1, 0][torch.from_numpy(_ellipse())] = 0.5
    found = Postprocessing()(logits, (40, 40))
    assert (found[0] == found[1]).all() and found[0].sum() == _ellipse().sum()
    ruled = Postprocessing(presence={"mean_probability": 0.9})(logits, (40, 40))
    np.testing.assert_array_equal(ruled[0], found[0])
    assert not ruled[1].any()


def test_ellipse_iou_and_area_fraction_tell_a_head_from_a_streak_and_a_speck():
    """A filled ellipse scores IoU ~1 with its moment ellipse, a thin cross far less; a speck is a tiny fraction
    of the frame. Each rule empties only the frame that fails it."""
    cross = np.zeros((40, 40), dtype=bool)
    cross[19:21, 4:36] = cross[4:36, 19:21] = True
    speck = _ellipse(semi_axes=(2, 2))
    assert component_evidence(_ellipse(), np.ones((40, 40)))["ellipse_iou"] > 0.95
    assert component_evidence(cross, np.ones((40, 40)))["ellipse_iou"] < 0.5
    assert component_evidence(speck, np.ones((40, 40)))["area_fraction"] == pytest.approx(speck.sum() / 1600)
    logits = torch.full((3, 1, 40, 40), -8.0)
    for frame, mask in enumerate((_ellipse(), cross, speck)):
        logits[frame, 0][torch.from_numpy(mask)] = 8.0
    by_shape = Postprocessing(presence={"ellipse_iou": 0.8})(logits, (40, 40))
    assert [bool(frame.any()) for frame in by_shape] == [True, False, True]
    by_size = Postprocessing(presence={"area_fraction": 0.01})(logits, (40, 40))
    assert [bool(frame.any()) for frame in by_size] == [True, True, False]


def _ellipse_iou_from_pixels(mask: np.ndarray) -> float:
    """The moment-ellipse IoU the plain way: the pixels' mean and covariance, the Mahalanobis distance everywhere."""
    points = np.argwhere(mask).astype(float)
    inverse = np.linalg.inv(np.cov(points, rowvar=False))
    grid = np.stack(np.indices(mask.shape), axis=-1) - points.mean(axis=0)
    inside = np.einsum("...j,jk,...k->...", grid, inverse, grid) <= mask.ndim + 2
    return (inside & mask).sum() / (inside | mask).sum()


def test_ellipse_iou_from_marginals_is_the_pixel_list_computation():
    """The evidence's ellipse IoU (moments from the bounding box's marginals) equals the plain computation, for a
    tilted off-centre ellipse cut by the frame's edge, a ragged blob and a 3D ellipsoid."""
    rows, columns = np.mgrid[:120, :160]
    u, v = (columns - 140) * 0.8 + (rows - 50) * 0.6, -(columns - 140) * 0.6 + (rows - 50) * 0.8
    tilted = (u / 45) ** 2 + (v / 20) ** 2 <= 1
    ragged = tilted & (np.random.default_rng(0).random(tilted.shape) > 0.3)
    x, y, z = np.mgrid[:30, :40, :20]
    ellipsoid = ((x - 14) / 9) ** 2 + ((y - 22) / 14) ** 2 + ((z - 9) / 6) ** 2 <= 1
    for mask in (tilted, ragged, ellipsoid):
        expected = _ellipse_iou_from_pixels(mask)
        assert component_evidence(mask, np.ones(mask.shape), ["ellipse_iou"])["ellipse_iou"] == pytest.approx(expected)


def test_presence_with_softmax_removes_only_the_label_without_evidence():
    """Label 1 sure, label 2 barely above background: the rule removes label 2 and leaves label 1 untouched."""
    logits = torch.zeros(1, 3, 40, 40)
    logits[0, 1][torch.from_numpy(_ellipse(centre=(12, 12), semi_axes=(6, 6)))] = 9.0
    logits[0, 2][torch.from_numpy(_ellipse(centre=(28, 28), semi_axes=(6, 6)))] = 0.8
    found = Postprocessing("softmax")(logits, (40, 40))
    assert (found == 1).any() and (found == 2).any()
    ruled = Postprocessing("softmax", presence={"mean_probability": 0.9})(logits, (40, 40))
    np.testing.assert_array_equal(ruled == 1, found == 1)
    assert not (ruled == 2).any()


def test_postprocessing_refuses_logits_of_the_wrong_shape():
    expected = r"sigmoid post-processing expects \(N, 1, \*spatial\) logits, got \(1, 2, 4, 4\)"
    with pytest.raises(ValueError, match=expected):
        Postprocessing()(torch.zeros(1, 2, 4, 4), (4, 4))
    with pytest.raises(ValueError, match="softmax post-processing expects"):
        Postprocessing("softmax")(torch.zeros(1, 1, 4, 4), (4, 4))


def test_preprocess_matches_monai_scale_intensity_and_resize():
    """Real frames of different sizes and dtypes, a constant frame among them, to 256x256 and to 128x128."""
    frames = np.stack([read_image(p).pixels for p in sorted(SAMPLES.glob("*.png"))[:3]])
    frames = np.concatenate([frames, np.full_like(frames[:1], 7)])
    for spatial_size in ((256, 256), (128, 128)):
        scale, resize = ScaleIntensity(minv=0.0, maxv=1.0), Resize(spatial_size, mode="bilinear", anti_aliasing=False)
        expected = torch.stack([torch.as_tensor(np.asarray(resize(scale(f[None].astype(np.float32))))) for f in frames])
        batch = Preprocessing(spatial_size)(frames)
        assert batch.shape == (4, 1, *spatial_size) and batch.dtype == torch.float32
        torch.testing.assert_close(batch, expected.float(), atol=1e-6, rtol=0)
        assert batch[3].abs().max() == 0
        torch.testing.assert_close(Preprocessing(spatial_size)(frames[0]), expected[:1].float(), atol=1e-6, rtol=0)


def test_zscore_matches_monai_normalize_intensity():
    frames = np.stack([read_image(p).pixels for p in sorted(SAMPLES.glob("*.png"))[:2]])
    frames = np.concatenate([frames, np.full_like(frames[:1], 7)])
    resize = Resize((64, 64), mode="bilinear", anti_aliasing=False)
    expected = torch.stack(
        [torch.as_tensor(np.asarray(resize(NormalizeIntensity()(f[None].astype(np.float32))))) for f in frames]
    )
    torch.testing.assert_close(Preprocessing((64, 64), "zscore")(frames), expected.float(), atol=1e-4, rtol=0)


def test_window_clips_and_scales_hounsfield_units():
    frame = np.array([[-2000.0, -160.0], [40.0, 3000.0]])
    batch = Preprocessing((2, 2), "window", window=[-160, 240])(frame)
    torch.testing.assert_close(batch[0, 0], torch.tensor([[0.0, 0.0], [0.5, 1.0]]))


@pytest.mark.parametrize(
    "arguments, problem",
    [
        ({"spatial_size": [256]}, "two positive sizes"),
        ({"spatial_size": [256, 256], "intensity": "gamma"}, "unknown intensity scheme"),
        ({"spatial_size": [256, 256], "intensity": "window"}, "goes with the 'window' intensity scheme"),
        ({"spatial_size": [256, 256], "intensity": "window", "window": [100, -100]}, "low < high"),
        ({"spatial_size": [256, 256], "flip_axes": [2]}, "flip_axes of a 2D frame"),
    ],
)
def test_preprocessing_refuses_bad_arguments(arguments, problem):
    with pytest.raises(ValueError, match=problem):
        Preprocessing(**arguments)


def test_flip_averaging_averages_the_mirrored_outputs_flipped_back():
    """A network that is not mirror-symmetric (its output depends on the column): the average of its output and
    the flipped-back output of the mirrored input, worked out by hand; a symmetric network is left unchanged."""
    batch = torch.arange(2 * 1 * 3 * 4, dtype=torch.float32).reshape(2, 1, 3, 4)
    ramp = torch.tensor([1.0, 2.0, 3.0, 4.0])

    def network(x):
        return x * ramp

    columns = FlipAveragingInferer([1])(batch, network)
    torch.testing.assert_close(columns, (batch * ramp + batch * ramp.flip(0)) / 2)
    both = FlipAveragingInferer([0, 1])(batch, network)
    torch.testing.assert_close(both, (2 * batch * ramp + batch * ramp.flip(0)) / 3)
    torch.testing.assert_close(FlipAveragingInferer([0, 1])(batch, torch.sigmoid), torch.sigmoid(batch))
    with pytest.raises(ValueError, match="distinct"):
        FlipAveragingInferer([1, 1])


def test_preprocessing_runs_the_network_through_its_inferer():
    frames = np.random.default_rng(0).integers(0, 255, (3, 40, 50)).astype(np.uint8)
    plain, flipped = Preprocessing((32, 32)), Preprocessing((32, 32), flip_axes=[1])
    assert "flip_axes=[1]" in repr(flipped) and "flip" not in repr(plain)
    batch = plain(frames)
    torch.testing.assert_close(flipped(frames), batch)  # the input itself is not mirrored

    def network(x):
        return x[..., :1].expand_as(x)  # every column copies the first: flipping changes the output

    torch.testing.assert_close(plain.inferer(batch, network), network(batch))
    torch.testing.assert_close(flipped.inferer(batch, network), (network(batch) + network(batch.flip(-1)).flip(-1)) / 2)
