"""A 2D data module for an accelerator: the images are decoded once, through the bundle's own preprocessing, at the
training resolution, kept as tensors on the training device, and augmented there, batch by batch.

On a GPU the CPU-side MONAI pipeline of :class:`~lightweight_nets.training.data.SegmentationDataModule` (one
``RandAffined`` per image, in worker processes) starves a small network; here a training batch is an index into
tensors already on the device, and the augmentation is one ``affine_grid`` / ``grid_sample`` for the whole batch,
with the ranges of :func:`~lightweight_nets.training.data.augmentation`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler

from lightweight_nets.training.data import SegmentationDataModule, image_mask_items
from lightweight_nets.training.split import read_split

__all__ = ["PREPROCESSED", "DeviceTensors", "DeviceSegmentationDataModule", "augment_batch"]

PREPROCESSED = "preprocessed.json"  # marks a training-grid copy (device_pack) and names the preprocessing it used

FLIP_PROB = 0.5
AFFINE_PROB = 0.5
ROTATION = math.radians(15)
SCALE = 0.1
TRANSLATION_PX = 16
SHEAR = 0.1


class DeviceTensors(Dataset):
    """Preprocessed images ``(N, 1, H, W)`` and masks on one device; an index or a list of indices gives a batch
    dictionary (``image`` float, ``label`` float {0, 1}) without copying anything to or from the host."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        if images.shape[0] != labels.shape[0]:
            raise ValueError(f"{images.shape[0]} images but {labels.shape[0]} masks")
        self.images, self.labels = images, labels.to(torch.uint8)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int | list[int]) -> dict:
        index = torch.as_tensor(index, device=self.images.device)
        return {"image": self.images[index], "label": self.labels[index].float()}


def augment_batch(batch: dict) -> dict:
    """Random horizontal flip and random affine (rotation, scaling, translation in pixels, shear), each with
    probability 0.5 per item, on the batch's device: bilinear for the image, nearest for the mask, zeros outside."""
    image, label = batch["image"], batch["label"]
    n, (h, w) = len(image), image.shape[-2:]
    flip = torch.rand(n, device=image.device) < FLIP_PROB
    image = torch.where(flip[:, None, None, None], image.flip(-1), image)
    label = torch.where(flip[:, None, None, None], label.flip(-1), label)

    def uniform(bound: float, *shape: int) -> torch.Tensor:
        return (torch.rand(n, *shape, device=image.device) * 2 - 1) * bound

    angle, scale, shear, shift = uniform(ROTATION), 1 + uniform(SCALE, 2), uniform(SHEAR, 2), uniform(TRANSLATION_PX, 2)
    cos, sin = torch.cos(angle), torch.sin(angle)
    rotation = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)
    one = torch.ones_like(angle)
    shearing = torch.stack([torch.stack([one, shear[:, 0]], -1), torch.stack([shear[:, 1], one], -1)], -2)
    linear = rotation @ shearing @ torch.diag_embed(scale)  # on pixel offsets from the centre, (x, y)
    half = torch.tensor([w / 2, h / 2], device=image.device)
    linear = linear * half[None, None, :] / half[None, :, None]  # the same map on affine_grid's [-1, 1] coordinates
    theta = torch.cat([linear, (shift / half)[..., None]], -1)
    identity = torch.eye(2, 3, device=image.device).expand(n, -1, -1)
    theta = torch.where((torch.rand(n, device=image.device) < AFFINE_PROB)[:, None, None], theta, identity)
    grid = F.affine_grid(theta.to(image.dtype), list(image.shape), align_corners=False)
    return {
        **batch,
        "image": F.grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=False),
        "label": F.grid_sample(label, grid, mode="nearest", padding_mode="zeros", align_corners=False),
    }


class DeviceSegmentationDataModule(SegmentationDataModule):
    """:class:`~lightweight_nets.training.data.SegmentationDataModule` with the data on the training device.

    The same arguments, so a bundle's ``datamodule`` swaps its ``_target_`` and nothing else. Setup decodes every
    item once through the bundle's preprocessing (``num_workers`` processes; ``augment`` and ``cache_rate`` as
    there), stacks them and moves them to the trainer's device; training batches are augmented there by
    :func:`augment_batch` after the (empty) transfer. A ``dataset_dir`` that holds :data:`PREPROCESSED` is a
    training-grid copy that :mod:`~lightweight_nets.training.device_pack` made with this same preprocessing
    (checked): its 8-bit PNGs are the network's input already, read as they are.
    """

    def _tensors(self, part: str, device: torch.device) -> DeviceTensors:
        marker = Path(self.dataset_dir) / PREPROCESSED
        if marker.is_file():
            images, labels = self._read_copy(part, marker)
        else:
            items = self._dataset(part, train=False)  # decoded once, without augmentation
            images = torch.stack([item["image"] for item in items])
            labels = torch.stack([item["label"] for item in items])
        return DeviceTensors(images.to(device), labels.to(device))

    def _read_copy(self, part: str, marker: Path) -> tuple[torch.Tensor, torch.Tensor]:
        from PIL import Image

        made_by = json.loads(marker.read_text())["preprocessing"]
        if made_by != repr(self.preprocessing):
            raise ValueError(f"{marker}: a copy made by {made_by}, but the bundle's is {self.preprocessing!r}")
        items = image_mask_items(self.dataset_dir, read_split(self.split_file, part)[: self.limit])
        images = np.stack([np.asarray(Image.open(item["image"])) for item in items])
        masks = np.stack([np.asarray(Image.open(item["label"])) for item in items])
        if images.shape[1:] != self.preprocessing.spatial_size:
            raise ValueError(
                f"{self.dataset_dir}: images of {images.shape[1:]}, not the training grid "
                f"{self.preprocessing.spatial_size}"
            )
        return torch.from_numpy(images)[:, None].float() / 255, torch.from_numpy(masks > 0)[:, None]

    def setup(self, stage: str | None = None) -> None:
        device = self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")
        self.train_set = self._tensors("train", device)
        self.val_set = self._tensors("validation", device)

    def train_dataloader(self) -> DataLoader:
        batches = BatchSampler(
            RandomSampler(self.train_set), self.batch_size, drop_last=len(self.train_set) > self.batch_size
        )
        return DataLoader(self.train_set, sampler=batches, batch_size=None)

    def val_dataloader(self) -> DataLoader:
        batches = BatchSampler(SequentialSampler(self.val_set), self.val_batch_size, drop_last=False)
        return DataLoader(self.val_set, sampler=batches, batch_size=None)

    def on_after_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        training = self.trainer is not None and self.trainer.training
        return augment_batch(batch) if training and self.augment else batch
