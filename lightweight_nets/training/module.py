"""LightningModules: supervised segmentation and feature-map knowledge distillation (Vaze et al. 2020)."""

from __future__ import annotations

from collections.abc import Sequence

import lightning.pytorch as pl
import torch
import torch.nn as nn
from monai.data import MetaTensor
from monai.inferers import Inferer, SimpleInferer
from monai.losses import DiceCELoss, DiceLoss
from monai.metrics import DiceMetric, HausdorffDistanceMetric
from monai.networks.layers.factories import Conv
from monai.networks.utils import one_hot

from lightweight_nets.inference.predictors import load_weights
from lightweight_nets.transforms import Postprocessing

__all__ = ["SegmentationModule", "DistillationModule", "make_loss", "feature_weights"]


LOSSES = {
    "dice": lambda: DiceLoss(sigmoid=True),  # one foreground channel
    "dice_bce": lambda: DiceCELoss(sigmoid=True),  # one foreground channel, Dice + binary cross-entropy
    # the same with one Dice over the whole batch: for 2D slices of a volume, many of which hold no foreground (a
    # per-slice Dice of an empty slice stays near 1 whatever the net does)
    "dice_bce_batch": lambda: DiceCELoss(sigmoid=True, batch=True),
    "dice_ce": lambda: DiceCELoss(softmax=True, to_onehot_y=True),  # background + one channel per label
}


def make_loss(name: str) -> nn.Module:
    """A loss of :data:`LOSSES` by name."""
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; known: {', '.join(LOSSES)}")
    return LOSSES[name]()


class SegmentationModule(pl.LightningModule):
    """Trains any zoo network, 2D or 3D, one label (sigmoid) or several (softmax), with Li et al.'s recipe by
    default: Adam (lr 1e-4, weight decay 1e-4), ReduceLROnPlateau on the validation loss (factor 0.5, patience 5).

    Validation runs the network through ``inferer`` (the bundle's sliding window for volumes) and reports
    ``val_loss``, ``val_dice`` (mean over labels), ``val_dice_<k>`` per label where there are several, and
    ``val_hd95`` (voxels, on the network's grid), after the bundle's post-processing (activation, threshold or
    argmax, largest connected components).

    Args:
        net: the network (logits out: one channel, or background plus one per label).
        postprocessing: the bundle's post-processing, applied before the validation metrics.
        inferer: how validation runs the network on a whole item (default: one forward pass).
        channels_last: train in the channels-last memory layout (on a CPU, faster for 3D depthwise convs:
            docs/benchmarks.md).
        loss: a key of :data:`LOSSES`.
        lr: Adam learning rate.
        weight_decay: Adam weight decay.
        lr_factor: ReduceLROnPlateau factor.
        lr_patience: ReduceLROnPlateau patience (epochs).
        init_weights: optional state dict file to start from (fine-tuning, resuming a distillation).
    """

    def __init__(
        self,
        net: nn.Module,
        postprocessing: Postprocessing,
        inferer: Inferer | None = None,
        channels_last: bool = False,
        loss: str = "dice",
        lr: float = 1e-4,
        weight_decay: float = 1e-4,
        lr_factor: float = 0.5,
        lr_patience: int = 5,
        init_weights: str | None = None,
    ):
        super().__init__()
        self.save_hyperparameters(ignore=["net", "postprocessing", "inferer"])
        self.postprocessing = postprocessing
        self.inferer = inferer or SimpleInferer()
        self.net = load_weights(net, init_weights) if init_weights else net
        self.loss_fn = make_loss(loss)
        self.dice = DiceMetric(include_background=False, reduction="mean_batch")
        self.hd95 = HausdorffDistanceMetric(include_background=False, percentile=95, reduction="mean")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def _layout(self, x: torch.Tensor) -> torch.Tensor:
        """A batch as a plain tensor (MONAI's MetaTensor bookkeeping costs a third of a 3D step here) in the memory
        layout the network trains in."""
        x = x.as_tensor() if isinstance(x, MetaTensor) else x
        return x.contiguous(memory_format=_channels_last(x.dim() - 2)) if self.hparams.channels_last else x

    def on_fit_start(self) -> None:
        if self.hparams.channels_last:
            for net in self.layout_modules():
                net.to(memory_format=_channels_last(_spatial_dims(net)))

    def layout_modules(self) -> list[nn.Module]:
        """The networks that run on the batches (the teacher too, when distilling)."""
        return [self.net]

    def training_loss(self, batch: dict) -> torch.Tensor:
        loss = self.loss_fn(self.net(self._layout(batch["image"])), batch["label"])
        self.log("train_loss", loss, prog_bar=True, on_step=False, on_epoch=True, batch_size=len(batch["image"]))
        return loss

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return self.training_loss(batch)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        logits = self.inferer(self._layout(batch["image"]), self.net).float()
        n = len(logits)
        self.log("val_loss", self.loss_fn(logits, batch["label"]), prog_bar=True, batch_size=n, sync_dist=True)
        labels = self.postprocessing.labels(self.postprocessing.probabilities(logits.cpu()))
        classes = max(logits.shape[1], 2)  # a sigmoid output is background and one label
        pred = one_hot(torch.as_tensor(labels, dtype=torch.long)[:, None], classes)
        truth = one_hot(batch["label"].cpu().long(), classes)
        self.dice(pred, truth)
        if pred[:, 1:].sum() > 0:
            self.hd95(pred, truth)

    def on_validation_epoch_end(self) -> None:
        per_label = self.dice.aggregate()
        self.log("val_dice", per_label.nanmean().item(), prog_bar=True, sync_dist=True)
        if len(per_label) > 1:
            for label, value in enumerate(per_label.tolist(), start=1):
                self.log(f"val_dice_{label}", value, sync_dist=True)
        self.dice.reset()
        hd = self.hd95.aggregate().item() if self.hd95.get_buffer() is not None else float("nan")
        self.log("val_hd95", hd, sync_dist=True)
        self.hd95.reset()

    def configure_optimizers(self):
        optimizer = torch.optim.Adam(
            self.trainable_parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay
        )
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min", factor=self.hparams.lr_factor, patience=self.hparams.lr_patience
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "monitor": "val_loss"}}

    def trainable_parameters(self):
        return self.net.parameters()


def _channels_last(spatial_dims: int) -> torch.memory_format:
    return torch.channels_last if spatial_dims == 2 else torch.channels_last_3d


def _spatial_dims(net: nn.Module) -> int:
    """2 or 3, from the network's first convolution."""
    return next(m for m in net.modules() if isinstance(m, nn.modules.conv._ConvNd)).weight.dim() - 2


def feature_weights(shapes: Sequence[Sequence[int]], total: float) -> list[float]:
    """One weight per feature map proportional to 1 / (spatial size), normalised to sum to ``total``."""
    inverse = [1.0 / float(torch.tensor(s).prod()) for s in shapes]
    return [total * w / sum(inverse) for w in inverse]


class DistillationModule(SegmentationModule):
    """Feature-map knowledge distillation (Vaze et al. 2020): a frozen teacher, a student trained on soft Dice of
    its output plus an L1 loss between paired intermediate feature maps, each map weighted by 1 / (H * W) and
    the weights normalised to sum to ``feature_weight``. Teacher features are computed on the fly, teacher in
    eval mode without gradients. Where channel counts differ, a learned 1x1 adapter maps the student's feature
    to the teacher's width; adapters live here, not in the student, so exporting the student drops them.

    Args:
        net: the student network.
        teacher: the pre-trained teacher network (frozen here).
        layers: module names to pair, the same name in both nets; default: the student's ``feature_layers``.
        feature_weight: sum of the feature-loss weights (the paper uses 10).
        **kwargs: :class:`SegmentationModule` arguments.
    """

    def __init__(
        self,
        net: nn.Module,
        teacher: nn.Module,
        layers: Sequence[str] | None = None,
        feature_weight: float = 10.0,
        **kwargs,
    ):
        super().__init__(net, **kwargs)
        self.teacher = teacher.eval().requires_grad_(False)
        self.layers = list(layers if layers is not None else net.feature_layers)
        self._features: dict[str, dict[str, torch.Tensor]] = {"student": {}, "teacher": {}}
        for role, model in (("student", net), ("teacher", self.teacher)):
            modules = dict(model.named_modules())
            for name in self.layers:
                if name not in modules:
                    raise ValueError(f"distillation layer {name!r} not found in the {role} ({type(model).__name__})")
                modules[name].register_forward_hook(self._hook(role, name))
        self.adapters = nn.ModuleDict()
        self._weights: list[float] | None = None

    def _hook(self, role: str, name: str):
        def store(module, inputs, output):
            self._features[role][name] = output

        return store

    def train(self, mode: bool = True):
        super().train(mode)
        self.teacher.eval()  # the teacher's BatchNorm statistics stay frozen
        return self

    def setup(self, stage: str) -> None:
        """Create the 1x1 adapters before the optimiser is built, from one dummy forward pass."""
        if stage != "fit" or self.adapters:
            return
        datamodule = self.trainer.datamodule
        if datamodule is None or not hasattr(datamodule, "train_set"):
            raise ValueError("DistillationModule needs a datamodule with a train_set to size its feature adapters")
        item = datamodule.train_set[0]
        sample = (item[0] if isinstance(item, list) else item)["image"][None]  # 3D items are lists of patches
        sample = sample.to(self.device)  # a device data module keeps its items on the accelerator already
        with torch.no_grad():
            self.net.eval()
            self.net(sample)
            self.teacher(sample)
            self.net.train()
        spatial_dims = sample.dim() - 2
        for name in self.layers:
            s, t = self._features["student"][name], self._features["teacher"][name]
            if s.shape[2:] != t.shape[2:]:
                raise ValueError(
                    f"distillation layer {name!r}: student map {tuple(s.shape[2:])} and teacher map "
                    f"{tuple(t.shape[2:])} differ in size"
                )
            if s.shape[1] != t.shape[1]:
                self.adapters[name.replace(".", "_")] = Conv[Conv.CONV, spatial_dims](s.shape[1], t.shape[1], 1)
        self._weights = feature_weights(
            [t.shape[2:] for t in (self._features["teacher"][n] for n in self.layers)], self.hparams.feature_weight
        )

    def trainable_parameters(self):
        return list(self.net.parameters()) + list(self.adapters.parameters())

    def layout_modules(self) -> list[nn.Module]:
        return [self.net, self.teacher]

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        output_loss = self.training_loss(batch)
        with torch.no_grad():
            self.teacher(self._layout(batch["image"]))
        feature_loss = 0.0
        for weight, name in zip(self._weights, self.layers):
            student = self._features["student"][name]
            adapter = self.adapters[name.replace(".", "_")] if name.replace(".", "_") in self.adapters else None
            student = adapter(student) if adapter is not None else student
            feature_loss = feature_loss + weight * torch.nn.functional.l1_loss(student, self._features["teacher"][name])
        self.log(
            "feature_loss", feature_loss, prog_bar=True, on_step=False, on_epoch=True, batch_size=len(batch["image"])
        )
        return output_loss + feature_loss
