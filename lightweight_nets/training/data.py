"""LightningDataModules built on MONAI datasets and transforms: 2D image/mask folders (``images/`` and ``masks/``
with the same file names) with the bundle's :class:`~lightweight_nets.transforms.Preprocessing`, and 3D NIfTI
volumes (``images/`` and ``labels/``) with its :class:`~lightweight_nets.transforms.VolumePreprocessing`."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import lightning.pytorch as pl
from monai.data import CacheDataset, DataLoader
from monai.transforms import (
    CastToTyped,
    Compose,
    EnsureChannelFirstd,
    LoadImaged,
    MapTransform,
    RandAffined,
    RandCropByPosNegLabeld,
    RandFlipd,
    RandScaleIntensityd,
    RandShiftIntensityd,
    SpatialPadd,
)

from lightweight_nets.io.images import read_image
from lightweight_nets.training.split import read_split
from lightweight_nets.transforms import Preprocessing, VolumePreprocessing, resize_mask

__all__ = [
    "LoadPreprocessd",
    "augmentation",
    "SegmentationDataModule",
    "VolumeDataModule",
    "image_mask_items",
    "volume_augmentation",
]


class LoadPreprocessd(MapTransform):
    """Read ``image`` and ``label`` files and apply the bundle's preprocessing: the image becomes
    ``(1, *spatial_size)`` as the served model sees it, the mask ``(1, *spatial_size)`` in {0, 1}."""

    def __init__(self, preprocessing: Preprocessing):
        super().__init__(keys=["image", "label"])
        self.preprocessing = preprocessing

    def __call__(self, item: dict) -> dict:
        image = read_image(item["image"]).pixels
        mask = read_image(item["label"]).pixels
        if mask.shape != image.shape:
            raise ValueError(f"{item['label']}: mask shape {mask.shape} differs from image shape {image.shape}")
        return {
            **item,
            "image": self.preprocessing(image)[0],
            "label": resize_mask(mask, self.preprocessing.spatial_size),
        }


def augmentation(prob: float = 0.5) -> list:
    """Li et al.'s augmentation: random flip, rotation, scaling, translation and shearing."""
    return [
        RandFlipd(keys=["image", "label"], prob=prob, spatial_axis=1),
        RandAffined(
            keys=["image", "label"],
            prob=prob,
            rotate_range=math.radians(15),
            scale_range=0.1,
            translate_range=(16, 16),
            shear_range=0.1,
            mode=("bilinear", "nearest"),
            padding_mode="zeros",
        ),
    ]


def volume_augmentation(prob: float = 0.5) -> list:
    """3D augmentation on image and label patches: flips along each axis, a small rotation and scaling (up to 10
    deg and 10%), and intensity scaling and shifting (10%) of the image."""
    keys = ["image", "label"]
    return [
        *(RandFlipd(keys=keys, prob=prob, spatial_axis=axis) for axis in range(3)),
        RandAffined(
            keys=keys,
            prob=prob,
            rotate_range=(math.radians(10),) * 3,
            scale_range=(0.1,) * 3,
            mode=("bilinear", "nearest"),
            padding_mode="zeros",
        ),
        RandScaleIntensityd(keys="image", factors=0.1, prob=prob),
        RandShiftIntensityd(keys="image", offsets=0.1, prob=prob),
    ]


def image_mask_items(dataset_dir: str | Path, names: Sequence[str], masks: str = "masks") -> list[dict]:
    """``[{"image": dataset_dir/images/n, "label": dataset_dir/<masks>/n, "name": n}, ...]``; missing files raise."""
    root = Path(dataset_dir)
    items = [{"image": str(root / "images" / n), "label": str(root / masks / n), "name": n} for n in names]
    missing = [p for it in items for p in (it["image"], it["label"]) if not Path(p).is_file()]
    if missing:
        raise FileNotFoundError(f"{missing[0]}: missing ({len(missing)} files of the split are missing in {root})")
    return items


class SegmentationDataModule(pl.LightningDataModule):
    """Train/validation data from ``dataset_dir`` split by a split file (see :mod:`.split`).

    Args:
        dataset_dir: folder with ``images/`` and ``masks/``.
        split_file: JSON with ``train`` and ``validation`` file-name lists.
        preprocessing: the bundle's preprocessing (network input grid and intensity scheme).
        batch_size: training batch size (Li et al.: 8).
        num_workers: data loader workers.
        augment: apply :func:`augmentation` to training items.
        cache_rate: fraction of the preprocessed items kept in memory (MONAI CacheDataset).
        limit: use at most this many items of each part (quick runs and tests).
    """

    def __init__(
        self,
        dataset_dir: str,
        split_file: str,
        preprocessing: Preprocessing,
        batch_size: int = 8,
        num_workers: int = 2,
        augment: bool = True,
        cache_rate: float = 1.0,
        limit: int | None = None,
    ):
        super().__init__()
        self.dataset_dir, self.split_file = dataset_dir, split_file
        self.preprocessing, self.batch_size, self.num_workers = preprocessing, batch_size, num_workers
        self.augment, self.cache_rate, self.limit = augment, cache_rate, limit
        self.val_batch_size = batch_size

    def _dataset(self, part: str, train: bool) -> CacheDataset:
        names = read_split(self.split_file, part)[: self.limit]
        transforms = [LoadPreprocessd(self.preprocessing)] + (augmentation() if train and self.augment else [])
        return CacheDataset(
            image_mask_items(self.dataset_dir, names),
            Compose(transforms),
            cache_rate=self.cache_rate,
            num_workers=self.num_workers or None,
            progress=False,
        )

    def setup(self, stage: str | None = None) -> None:
        self.train_set = self._dataset("train", train=True)
        self.val_set = self._dataset("validation", train=False)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(
            self.train_set,
            batch_size=self.batch_size,
            shuffle=True,
            num_workers=self.num_workers,
            drop_last=len(self.train_set) > self.batch_size,
            persistent_workers=self.num_workers > 0,
        )

    def val_dataloader(self) -> DataLoader:
        return DataLoader(
            self.val_set,
            batch_size=self.val_batch_size,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )


class VolumeDataModule(SegmentationDataModule):
    """Train/validation 3D volumes from ``dataset_dir`` (``images/`` and ``labels/``, NIfTI, the same file names)
    split by a split file (see :mod:`.split`).

    Training items are whole volumes through the bundle's preprocessing (cached), padded to at least the patch,
    then ``samples_per_volume`` random patches each, centred on a labelled voxel or on background with equal odds
    (MONAI ``RandCropByPosNegLabeld``), and :func:`volume_augmentation`. Validation items are whole volumes, which
    the module segments with the bundle's sliding-window inferer, as at inference.

    Args:
        dataset_dir: folder with ``images/`` and ``labels/``.
        split_file: JSON with ``train`` and ``validation`` file-name lists.
        preprocessing: the bundle's volume preprocessing (orientation, spacing, intensity, patch size).
        batch_size: training volumes per step (a step trains on ``batch_size * samples_per_volume`` patches).
        samples_per_volume: patches drawn from each training volume per epoch.
        num_workers: data loader workers.
        augment: apply :func:`volume_augmentation` to training patches.
        cache_rate: fraction of the preprocessed volumes kept in memory (MONAI CacheDataset).
        limit: use at most this many volumes of each part (quick runs and tests).
    """

    def __init__(
        self,
        dataset_dir: str,
        split_file: str,
        preprocessing: VolumePreprocessing,
        batch_size: int = 4,
        samples_per_volume: int = 2,
        num_workers: int = 2,
        augment: bool = True,
        cache_rate: float = 1.0,
        limit: int | None = None,
    ):
        super().__init__(dataset_dir, split_file, preprocessing, batch_size, num_workers, augment, cache_rate, limit)
        self.samples_per_volume = samples_per_volume
        self.val_batch_size = 1  # whole volumes, of different sizes

    def _dataset(self, part: str, train: bool) -> CacheDataset:
        keys = ["image", "label"]
        names = read_split(self.split_file, part)[: self.limit]
        steps = [
            LoadImaged(keys=keys, image_only=True),
            EnsureChannelFirstd(keys=keys),
            CastToTyped(keys=keys, dtype=("float32", "uint8")),
            *self.preprocessing.transforms(keys),
        ]
        if train:
            patch = self.preprocessing.spatial_size
            steps += [
                SpatialPadd(keys=keys, spatial_size=patch),
                RandCropByPosNegLabeld(
                    keys=keys, label_key="label", spatial_size=patch, pos=1, neg=1, num_samples=self.samples_per_volume
                ),
            ]
            steps += volume_augmentation() if self.augment else []
        return CacheDataset(
            image_mask_items(self.dataset_dir, names, masks="labels"),
            Compose(steps),
            cache_rate=self.cache_rate,
            num_workers=self.num_workers or None,
            progress=False,
        )
