"""The one definition of pre- and post-processing.

Training, the bundle's inference config, the Deploy app and the PACS listener all call :class:`Preprocessing` and
:class:`Postprocessing`, built from the items of the same names in a bundle's ``configs/inference.json``, so what
the network sees at serving time is exactly what it saw in training.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from monai.data import MetaTensor
from monai.inferers import Inferer, SimpleInferer, SlidingWindowInferer
from monai.transforms import (
    Compose,
    NormalizeIntensityd,
    Orientationd,
    Resize,
    ScaleIntensityd,
    ScaleIntensityRanged,
    Spacingd,
)
from monai.utils import convert_to_tensor
from scipy import ndimage

__all__ = [
    "INTENSITY_SCHEMES",
    "ACTIVATIONS",
    "to_grey",
    "bounding_box",
    "FlipAveragingInferer",
    "Preprocessing",
    "VolumePreprocessing",
    "Postprocessing",
    "PRESENCE_FEATURES",
    "component_evidence",
    "resize_mask",
]

INTENSITY_SCHEMES = ("minmax", "window", "zscore")
ACTIVATIONS = ("sigmoid", "softmax")
_SLAB = 8  # slices resampled at a time on the way back to the input grid
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R BT.601, as PIL's "L" conversion
PRESENCE_FEATURES = ("mean_probability", "max_probability", "area_fraction", "ellipse_iou")


def to_grey(image: np.ndarray) -> np.ndarray:
    """Colour (channel-last RGB or RGBA) to grey luminance; grey input is returned as float32 unchanged."""
    image = np.asarray(image)
    if image.ndim >= 3 and image.shape[-1] in (3, 4):
        return image[..., :3].astype(np.float32) @ _LUMA
    return image.astype(np.float32)


def _check_intensity(intensity: str, window: Sequence[float] | None) -> tuple[float, float] | None:
    if intensity not in INTENSITY_SCHEMES:
        raise ValueError(f"unknown intensity scheme {intensity!r}; known: {', '.join(INTENSITY_SCHEMES)}")
    if (intensity == "window") != (window is not None):
        raise ValueError("window = [low, high] goes with the 'window' intensity scheme, and only with it")
    if window is not None and (len(window) != 2 or not window[0] < window[1]):
        raise ValueError(f"window must be [low, high] with low < high, got {list(window)}")
    return None if window is None else (float(window[0]), float(window[1]))


class FlipAveragingInferer(Inferer):
    """Test-time flip augmentation (a MONAI inferer): the network's output for the input, averaged with its output
    for the input mirrored along each of ``spatial_axes`` (flipped back). Logits are averaged, so it suits either
    activation. Use only flips the training augmented with (a net never shown mirrored images has not learned them),
    and measure: it helped most nets here, not all (docs/benchmarks.md).

    Args:
        spatial_axes: axes of the spatial grid (0 = rows, 1 = columns of a 2D input), one extra pass each.
        inferer: how each pass runs the network (e.g. a sliding window over a volume); default: one forward pass.
    """

    def __init__(self, spatial_axes: Sequence[int], inferer: Inferer | None = None):
        super().__init__()
        self.spatial_axes = tuple(int(axis) for axis in spatial_axes)
        if not self.spatial_axes or len(set(self.spatial_axes)) != len(self.spatial_axes) or min(self.spatial_axes) < 0:
            raise ValueError(f"spatial_axes must be distinct non-negative axes, got {list(spatial_axes)}")
        self.inferer = inferer or SimpleInferer()

    def __call__(self, inputs: torch.Tensor, network, *args, **kwargs) -> torch.Tensor:
        total = self.inferer(inputs, network, *args, **kwargs)
        for axis in self.spatial_axes:
            dims = (axis + 2,)  # after batch and channel
            total = total + torch.flip(self.inferer(torch.flip(inputs, dims), network, *args, **kwargs), dims)
        return total / (1 + len(self.spatial_axes))


class Preprocessing:
    """Grey frames ``(H, W)`` or ``(N, H, W)`` of any dtype -> network input ``(N, 1, *spatial_size)`` float32,
    and how the network is run on it (:attr:`inferer`).

    Each frame is scaled on its own by the bundle's intensity scheme, then resized bilinearly to the grid the
    model was trained on:

    * ``minmax``: to [0, 1] (a constant frame to 0), MONAI's ``ScaleIntensity(0, 1)`` (ultrasound);
    * ``window``: clipped to ``window = [low, high]`` (e.g. Hounsfield units) and scaled to [0, 1] (CT);
    * ``zscore``: zero mean, unit standard deviation (a constant frame to 0), as ``NormalizeIntensity`` (MR).

    The arithmetic is done for the whole batch at once: per frame, MONAI's transforms cost more than the network
    on a long cine. :attr:`inferer` runs the network once (MONAI's ``SimpleInferer``) or, with ``flip_axes``, also
    on mirrored frames (:class:`FlipAveragingInferer`), at one more pass per axis.

    Args:
        spatial_size: the network's input grid, (H, W).
        intensity: one of :data:`INTENSITY_SCHEMES`.
        window: ``[low, high]`` for the ``window`` scheme only.
        flip_axes: axes (0 rows, 1 columns) along which the mirrored frame's prediction is averaged in at
            inference; training ignores them.
    """

    def __init__(
        self,
        spatial_size: Sequence[int],
        intensity: str = "minmax",
        window: Sequence[float] | None = None,
        flip_axes: Sequence[int] = (),
    ):
        spatial_size = tuple(int(s) for s in spatial_size)
        if len(spatial_size) != 2 or min(spatial_size) < 1:
            raise ValueError(f"spatial_size must be two positive sizes (H, W), got {spatial_size}")
        self.window = _check_intensity(intensity, window)
        self.spatial_size, self.intensity = spatial_size, intensity
        self.flip_axes = tuple(int(axis) for axis in flip_axes)
        if not set(self.flip_axes) <= {0, 1}:
            raise ValueError(f"flip_axes of a 2D frame are 0 (rows) and 1 (columns), got {list(flip_axes)}")
        self.inferer = FlipAveragingInferer(self.flip_axes) if self.flip_axes else SimpleInferer()

    def __repr__(self) -> str:
        window = f", window={list(self.window)}" if self.window else ""
        flips = f", flip_axes={list(self.flip_axes)}" if self.flip_axes else ""
        return f"Preprocessing(spatial_size={list(self.spatial_size)}, intensity={self.intensity!r}{window}{flips})"

    def _scale(self, batch: torch.Tensor) -> torch.Tensor:
        """In place (a long cine's batch is not copied again); a constant frame becomes 0."""
        if self.intensity == "window":
            low, high = self.window
            return batch.clamp_(low, high).sub_(low).div_(high - low)
        if self.intensity == "zscore":
            mean = batch.mean(dim=(2, 3), keepdim=True)
            std = batch.std(dim=(2, 3), keepdim=True, correction=0)
            return batch.sub_(mean).div_(torch.where(std > 0, std, 1.0))
        low = batch.amin(dim=(2, 3), keepdim=True)
        span = batch.amax(dim=(2, 3), keepdim=True) - low
        return batch.sub_(low).div_(torch.where(span > 0, span, 1.0))

    def __call__(self, frames: np.ndarray) -> torch.Tensor:
        frames = np.array(frames, dtype=np.float32)  # a copy of its own: the scaling works in place on it
        if frames.ndim == 2:
            frames = frames[None]
        if frames.ndim != 3:
            raise ValueError(f"preprocessing expects (H, W) or (N, H, W) grey frames, got shape {frames.shape}")
        scaled = self._scale(torch.from_numpy(frames)[:, None])
        return torch.nn.functional.interpolate(scaled, size=self.spatial_size, mode="bilinear", align_corners=False)


class VolumePreprocessing:
    """A 3D volume (channel first, with its affine, as a MONAI ``MetaTensor``) -> network input on the model's
    orientation and spacing, and the way back to the volume's own grid.

    MONAI dictionary transforms, the same for training (``transforms(("image", "label"))``, labels resampled
    nearest-neighbour) and inference: ``Orientationd`` to ``axcodes``, ``Spacingd`` to ``spacing_mm`` (left as is
    where None), then the intensity scheme on the whole volume (``zscore``: MONAI ``NormalizeIntensityd``, MR;
    ``window``: clipped to ``[low, high]`` and scaled to [0, 1], CT; ``minmax``: to [0, 1]). A volume larger than
    ``patch_size`` is segmented by MONAI's sliding-window inferer (``overlap`` of the patch, Gaussian blending),
    with ``flip_axes`` also on the mirrored volume (:class:`FlipAveragingInferer`, one more sliding window per axis);
    :meth:`invert` samples the probabilities back on the input grid, through the affines of both grids.

    Args:
        patch_size: the network's input patch (each a multiple of the net's size rule); training crops this too.
        spacing_mm: the model's voxel spacing (mm), or None to keep the input's.
        intensity: one of :data:`INTENSITY_SCHEMES`.
        window: ``[low, high]`` for the ``window`` scheme only.
        axcodes: the orientation the model works in (MONAI axis codes).
        overlap: sliding-window overlap (fraction of the patch).
        windows_per_batch: sliding-window patches per forward pass.
        flip_axes: axes of the model's grid (0, 1, 2 after ``axcodes``) along which the mirrored volume's prediction
            is averaged in at inference and validation.
    """

    def __init__(
        self,
        patch_size: Sequence[int],
        spacing_mm: Sequence[float] | None = None,
        intensity: str = "zscore",
        window: Sequence[float] | None = None,
        axcodes: str = "RAS",
        overlap: float = 0.5,
        windows_per_batch: int = 4,
        flip_axes: Sequence[int] = (),
    ):
        patch_size = tuple(int(s) for s in patch_size)
        if len(patch_size) != 3 or min(patch_size) < 1:
            raise ValueError(f"patch_size must be three positive sizes, got {patch_size}")
        if spacing_mm is not None and (len(spacing_mm) != 3 or min(spacing_mm) <= 0):
            raise ValueError(f"spacing_mm must be three positive spacings (mm) or null, got {spacing_mm}")
        if not 0 <= overlap < 1:
            raise ValueError(f"overlap must be in [0, 1), got {overlap}")
        self.window = _check_intensity(intensity, window)
        self.spatial_size, self.intensity, self.axcodes = patch_size, intensity, axcodes
        self.spacing_mm = None if spacing_mm is None else tuple(float(s) for s in spacing_mm)
        self.flip_axes = tuple(int(axis) for axis in flip_axes)
        if not set(self.flip_axes) <= {0, 1, 2}:
            raise ValueError(f"flip_axes of a volume are 0, 1 and 2, got {list(flip_axes)}")
        sliding_window = SlidingWindowInferer(
            roi_size=patch_size,
            sw_batch_size=windows_per_batch,
            overlap=overlap,
            mode="gaussian",
            padding_mode="constant",
        )
        self.inferer = FlipAveragingInferer(self.flip_axes, sliding_window) if self.flip_axes else sliding_window
        self._inference = Compose(self.transforms(("image",)))

    def __repr__(self) -> str:
        window = f", window={list(self.window)}" if self.window else ""
        spacing = None if self.spacing_mm is None else list(self.spacing_mm)
        flips = f", flip_axes={list(self.flip_axes)}" if self.flip_axes else ""
        return (
            f"VolumePreprocessing(patch_size={list(self.spatial_size)}, spacing_mm={spacing}, "
            f"intensity={self.intensity!r}{window}, axcodes={self.axcodes!r}{flips})"
        )

    def transforms(self, keys: Sequence[str] = ("image", "label")) -> list:
        """The dictionary transforms, for ``image`` and (optionally) ``label`` in ``keys``."""
        keys = list(keys)
        modes = ["nearest" if key == "label" else "bilinear" for key in keys]
        steps = [Orientationd(keys=keys, axcodes=self.axcodes, labels=None)]  # axis labels from the space
        if self.spacing_mm is not None:
            steps.append(Spacingd(keys=keys, pixdim=self.spacing_mm, mode=modes))
        if self.intensity == "zscore":
            steps.append(NormalizeIntensityd(keys="image"))
        elif self.intensity == "window":
            steps.append(
                ScaleIntensityRanged(
                    keys="image", a_min=self.window[0], a_max=self.window[1], b_min=0.0, b_max=1.0, clip=True
                )
            )
        else:
            steps.append(ScaleIntensityd(keys="image", minv=0.0, maxv=1.0))
        return steps

    def __call__(self, image: MetaTensor) -> MetaTensor:
        """``(1, X, Y, Z)`` with its affine -> ``(1, X', Y', Z')`` float32 on the model's grid."""
        if image.dim() != 4 or image.shape[0] != 1:
            raise ValueError(f"volume preprocessing expects one channel (1, X, Y, Z), got {tuple(image.shape)}")
        return self._inference({"image": image.float()})["image"]

    def invert(self, output: torch.Tensor, prepared: MetaTensor, image: MetaTensor) -> torch.Tensor:
        """Network output ``(C, X', Y', Z')`` on the grid of ``prepared`` -> ``(C, X, Y, Z)`` on the grid of the
        input ``image``, trilinear, 0 outside.

        Each input voxel's centre is mapped through the two affines into the model's grid and sampled there, a few
        slices at a time: the same geometry as inverting the MONAI transforms, without their full-volume float64
        sampling grid (1.4 GB for a 512 x 512 x 100 CT)."""
        to_model = torch.linalg.solve(prepared.affine.to(torch.float64), image.affine.to(torch.float64))
        values = torch.as_tensor(output, dtype=torch.float32)[None]  # (1, C, X', Y', Z')
        sizes = torch.tensor(values.shape[2:], dtype=torch.float64)
        # grid_sample's coordinate of model axis k, in [-1, 1], is affine in the input voxel (x, y, z): a sum of
        # one term per input axis, each a vector per index, broadcast over the slab; its axes in (z, y, x) order
        scale = 2 / (sizes - 1).clamp(min=1)
        linear = (to_model[:3, :3] * scale[:, None]).flip(0)
        offset = (to_model[:3, 3] * scale - 1).flip(0)
        shape = image.shape[1:]
        along = [torch.arange(n, dtype=torch.float64)[:, None] * linear[:, axis] for axis, n in enumerate(shape)]
        in_plane = along[0][:, None, None] + along[1][None, :, None] + offset  # (X, Y, 1, 3)
        result = torch.empty((values.shape[1], *shape), dtype=torch.float32)
        for start in range(0, shape[2], _SLAB):
            grid = (in_plane + along[2][None, None, start : start + _SLAB]).to(torch.float32)
            result[..., start : start + grid.shape[2]] = torch.nn.functional.grid_sample(
                values, grid[None], mode="bilinear", padding_mode="zeros", align_corners=True
            )[0]
        return result


def resize_mask(mask: np.ndarray, spatial_size: Sequence[int]) -> torch.Tensor:
    """Binary mask ``(H, W)`` -> ``(1, *spatial_size)`` float {0, 1}, nearest-neighbour, for training targets."""
    mask = (np.asarray(mask) > 0).astype(np.float32)[None]
    return convert_to_tensor(Resize(spatial_size, mode="nearest")(mask), track_meta=False).float()


def bounding_box(mask: np.ndarray) -> tuple[slice, ...] | None:
    """The smallest box holding every pixel (voxel) of a binary mask; None for an empty mask."""
    box = []
    for axis in range(mask.ndim):
        present = np.flatnonzero(mask.any(axis=tuple(k for k in range(mask.ndim) if k != axis)))
        if not len(present):
            return None
        box.append(slice(int(present[0]), int(present[-1]) + 1))
    return tuple(box)


def _largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 8-connected (2D) or 26-connected (3D) component of a binary mask; empty for an empty mask.
    Labelled within the mask's bounding box (a fraction of a cine frame)."""
    largest = np.zeros(mask.shape, dtype=bool)
    box = bounding_box(mask)
    if box is None:
        return largest
    components, _ = ndimage.label(mask[box], structure=ndimage.generate_binary_structure(mask.ndim, mask.ndim))
    largest[box] = components == np.argmax(np.bincount(components.ravel())[1:]) + 1
    return largest


def _moment_ellipse_iou(mask: np.ndarray) -> float:
    """IoU of a mask with the ellipse (ellipsoid in 3D) of the same centre and second moments: 1 for a filled
    ellipse, lower for thin, branched or ragged shapes. A uniform ellipse with semi-axis a has variance a^2 / 4
    along it (a^2 / 5 in 3D), so its inside is where the Mahalanobis distance squared is at most ndim + 2; it is
    drawn on its bounding box only. The moments are sums over the mask's own bounding box, through its 1D and 2D
    marginals (exact integers), not over a list of its pixels."""
    extent = bounding_box(mask)
    count = 0 if extent is None else int(mask[extent].sum())
    if count < 3:
        return 0.0
    crop = mask[extent].astype(np.float64)
    axes = range(mask.ndim)
    index = [np.arange(n, dtype=np.float64) for n in crop.shape]

    def marginal(*kept: int) -> np.ndarray:  # the crop summed over every other axis, the kept ones in order
        return crop.sum(axis=tuple(a for a in axes if a not in kept))

    sums = np.empty((mask.ndim, mask.ndim))  # over the mask, the sum of x_j * x_k
    for j in axes:
        sums[j, j] = marginal(j) @ index[j] ** 2
        for k in range(j + 1, mask.ndim):
            sums[j, k] = sums[k, j] = index[j] @ marginal(j, k) @ index[k]
    mean = np.array([marginal(j) @ index[j] for j in axes]) / count
    covariance = (sums - count * np.outer(mean, mean)) / (count - 1)  # as np.cov: unbiased
    centre = mean + [part.start for part in extent]
    if np.linalg.matrix_rank(covariance) < mask.ndim:
        return 0.0
    reach = np.sqrt((mask.ndim + 2) * np.diag(covariance))
    low = np.maximum(np.floor(centre - reach), 0).astype(int)
    high = np.minimum(np.ceil(centre + reach) + 1, mask.shape).astype(int)
    box = tuple(slice(a, b) for a, b in zip(low, high))
    offsets = [  # each axis's offsets from the centre, shaped to broadcast over the box
        (np.arange(a, b) - c).reshape([-1 if axis == k else 1 for k in range(mask.ndim)])
        for axis, (a, b, c) in enumerate(zip(low, high, centre))
    ]
    inverse = np.linalg.inv(covariance)
    distance = sum(inverse[j, k] * offsets[j] * offsets[k] for j in range(mask.ndim) for k in range(mask.ndim))
    inside = distance <= mask.ndim + 2
    overlap = (inside & mask[box]).sum()
    return float(overlap / (inside.sum() + mask.sum() - overlap))


def component_evidence(
    component: np.ndarray, probability: np.ndarray, features: Sequence[str] = PRESENCE_FEATURES
) -> dict[str, float]:
    """What says a found component is the structure (:data:`PRESENCE_FEATURES`): the mean and max of the
    foreground probability inside it, its area (volume) as a fraction of the frame, and how elliptical it is
    (IoU with its moment ellipse).

    Args:
        component: one connected binary component ``(*spatial)``, not empty.
        probability: the probability of its label on the same grid.
        features: the features to compute (the ellipse costs most).
    """
    compute = {
        "mean_probability": lambda: float(probability[component].mean()),
        "max_probability": lambda: float(probability[component].max()),
        "area_fraction": lambda: float(component.mean()),
        "ellipse_iou": lambda: _moment_ellipse_iou(component),
    }
    return {name: compute[name]() for name in features}


class Postprocessing:
    """Network logits ``(N, C, h, w)`` -> label maps ``(N, H, W)`` uint8 on the original grid (0 background,
    k for segment k).

    The activation turns logits into probabilities (``sigmoid``: one channel, one segment, foreground where the
    probability exceeds ``threshold``; ``softmax``: background plus one channel per segment, the most probable
    label), after a bilinear resize of the probabilities back to the original grid. With ``keep_largest`` only the
    largest 8-connected component of each label is kept in each frame (one structure per frame, as Li et al. do
    for a single lesion).

    ``presence`` decides, per frame and label, whether the structure is there at all: the largest component's
    :func:`component_evidence` must reach every minimum given (e.g. ``{"mean_probability": 0.85}``), or the label
    is removed from that frame (an empty mask: "not found", no measurement). Without it every found component is
    kept, as before.

    Args:
        activation: one of :data:`ACTIVATIONS`.
        threshold: the sigmoid probability above which a pixel is foreground.
        keep_largest: keep only the largest connected component of each label per frame.
        presence: minimum per feature of :data:`PRESENCE_FEATURES`, or None for no presence decision.
    """

    def __init__(
        self,
        activation: str = "sigmoid",
        threshold: float = 0.5,
        keep_largest: bool = True,
        presence: dict[str, float] | None = None,
    ):
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; known: {', '.join(ACTIVATIONS)}")
        if not 0.0 < float(threshold) < 1.0:
            raise ValueError(f"threshold must lie strictly between 0 and 1, got {threshold}")
        presence = {str(name): float(minimum) for name, minimum in (presence or {}).items()}
        unknown = sorted(set(presence) - set(PRESENCE_FEATURES))
        if unknown:
            raise ValueError(f"unknown presence feature(s) {', '.join(unknown)}; known: {', '.join(PRESENCE_FEATURES)}")
        self.activation, self.threshold, self.keep_largest = activation, float(threshold), bool(keep_largest)
        self.presence = presence

    def __repr__(self) -> str:
        presence = f", presence={self.presence}" if self.presence else ""
        return (
            f"Postprocessing(activation={self.activation!r}, threshold={self.threshold}, "
            f"keep_largest={self.keep_largest}{presence})"
        )

    def output_channels(self, segments: int) -> int:
        """How many output channels a network needs for ``segments`` segments under this activation."""
        return 1 if self.activation == "sigmoid" else segments + 1

    def probabilities(self, logits: torch.Tensor | np.ndarray) -> torch.Tensor:
        """The activation: logits ``(N, C, *spatial)`` -> probabilities of the same shape."""
        logits = torch.as_tensor(logits, dtype=torch.float32)
        sigmoid = self.activation == "sigmoid"
        if logits.dim() < 4 or not (logits.shape[1] == 1 if sigmoid else logits.shape[1] >= 2):
            raise ValueError(
                f"{self.activation} post-processing expects (N, {'1' if sigmoid else 'C >= 2'}, "
                f"*spatial) logits, got {tuple(logits.shape)}"
            )
        return torch.sigmoid(logits) if sigmoid else torch.softmax(logits, dim=1)

    def found_labels(self, probabilities: torch.Tensor) -> np.ndarray:
        """Probabilities ``(N, C, *spatial)`` -> label maps ``(N, *spatial)`` uint8, before the presence decision."""
        if self.activation == "sigmoid":
            labels = (probabilities[:, 0] > self.threshold).to(torch.uint8).numpy()
        else:
            labels = probabilities.argmax(dim=1).to(torch.uint8).numpy()
        return _keep_largest_components(labels) if self.keep_largest else labels

    def evidence(
        self, probabilities: torch.Tensor, labels: np.ndarray, features: Sequence[str] = PRESENCE_FEATURES
    ) -> list[dict[int, dict[str, float]]]:
        """Per item, per label found in ``labels``: the :func:`component_evidence` ``features`` of its largest
        component."""
        probabilities = torch.as_tensor(probabilities).numpy()
        result = []
        for label_map, item in zip(labels, probabilities):
            found = {}
            for value in np.unique(label_map[label_map > 0]):
                channel = 0 if self.activation == "sigmoid" else int(value)
                component = label_map == value if self.keep_largest else _largest_component(label_map == value)
                found[int(value)] = component_evidence(component, item[channel], features)
            result.append(found)
        return result

    def labels(self, probabilities: torch.Tensor) -> np.ndarray:
        """Probabilities ``(N, C, *spatial)`` -> label maps ``(N, *spatial)`` uint8 on the same grid, a label
        removed from an item where ``presence`` says its structure is not there."""
        labels = self.found_labels(probabilities)
        if self.presence:
            for label_map, found in zip(labels, self.evidence(probabilities, labels, list(self.presence))):
                for value, features in found.items():
                    if any(features[name] < minimum for name, minimum in self.presence.items()):
                        label_map[label_map == value] = 0
        return labels

    def frame_probabilities(self, logits: torch.Tensor | np.ndarray, original_size: Sequence[int]) -> torch.Tensor:
        """2D frames: logits ``(N, C, h, w)`` -> probabilities ``(N, C, H, W)`` resized bilinearly to the original
        grid."""
        probabilities = self.probabilities(logits)
        if probabilities.dim() != 4:
            raise ValueError(f"frame post-processing expects (N, C, h, w) logits, got {tuple(probabilities.shape)}")
        return torch.nn.functional.interpolate(
            probabilities, size=tuple(original_size), mode="bilinear", align_corners=False
        )

    def __call__(self, logits: torch.Tensor | np.ndarray, original_size: Sequence[int]) -> np.ndarray:
        """2D frames: logits ``(N, C, h, w)`` -> label maps ``(N, H, W)`` on the original grid (the probabilities
        are resized bilinearly before the labels are taken)."""
        return self.labels(self.frame_probabilities(logits, original_size))


def _keep_largest_components(labels: np.ndarray) -> np.ndarray:
    """Label maps ``(N, *spatial)`` -> the largest connected component (8-connected in 2D, 26 in 3D) of each label
    in each item.

    scipy does the labelling. MONAI's ``KeepLargestConnectedComponent`` gives the same masks, but its overhead
    per frame (MetaTensor conversions around a 1 ms labelling) dominates on a cine (docs/benchmarks.md).
    """
    out = np.zeros_like(labels)
    for frame, label_map in zip(out, labels):
        for value in np.unique(label_map[label_map > 0]):
            frame[_largest_component(label_map == value)] = value
    return out
