"""Thin U-Nets of Vaze et al. 2020: every level has the same narrow width."""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn as nn

from lightweight_nets.blocks import ConvNormAct, batch_norm, check_arg, check_int, conv, make_conv
from lightweight_nets.nets.base import UShapedNet
from lightweight_nets.registry import register_net

__all__ = ["ThinUNet"]

THIN_CONV_KINDS = ("regular", "separable")


class ThinBlock(nn.Sequential):
    """conv + ReLU -> conv + ReLU [-> extra conv + ReLU] -> BatchNorm, all at one width."""

    def __init__(self, conv_kind: str, spatial_dims: int, in_channels: int, channels: int, num_convs: int):
        layers = []
        for i in range(num_convs):
            layers.append(
                ConvNormAct(
                    make_conv(conv_kind, spatial_dims, in_channels if i == 0 else channels, channels),
                    act=nn.ReLU(inplace=True),
                )
            )
        layers.append(batch_norm(spatial_dims, channels))
        super().__init__(*layers)


class ThinUNet(UShapedNet):
    """Thin U-Net (Vaze, Xie, Namburete, "Low-memory CNNs enabling real-time ultrasound segmentation towards
    mobile deployment", IEEE JBHI 24(4), 2020).

    Every block (conv + ReLU, conv + ReLU, BatchNorm) has the same ``channels``; decoder blocks take the
    nearest-upsampled map concatenated with the skip. Blocks are named ``encoder.<i>``, ``bottom`` and
    ``decoder.<i>`` in every variant, so a teacher and a student of the same depth expose the same feature
    maps for feature distillation (:attr:`feature_layers`).

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels (the paper uses one grey channel).
        out_channels: output channels (logits).
        channels: width of every layer.
        depth: number of down-sampling blocks; input sizes must be multiples of ``2 ** depth`` (by default).
        conv_kind: ``"regular"`` or ``"separable"`` (depthwise-separable) 3x3 convolutions.
        deep_extra_conv: one extra conv in the deepest encoder block (the paper's distillation student).
        pool_factors: per encoder level, its down-sampling factor along each axis (``None``: 2 everywhere); see
            :class:`~lightweight_nets.nets.base.UShapedNet`.
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        out_channels: int = 1,
        channels: int = 32,
        depth: int = 6,
        conv_kind: str = "regular",
        deep_extra_conv: bool = False,
        pool_factors: Sequence[Sequence[int]] | None = None,
    ):
        name = type(self).__name__
        check_int(name, "channels", channels)
        check_arg(conv_kind in THIN_CONV_KINDS, name, "conv_kind", conv_kind, f"one of {', '.join(THIN_CONV_KINDS)}")
        super().__init__(spatial_dims, in_channels, out_channels, depth, pool_factors)
        self.encoder = nn.ModuleList(
            ThinBlock(
                conv_kind,
                spatial_dims,
                in_channels if i == 0 else channels,
                channels,
                3 if (deep_extra_conv and i == depth - 1) else 2,
            )
            for i in range(depth)
        )
        self.bottom = ThinBlock(conv_kind, spatial_dims, channels, channels, 2)
        self.decoder = nn.ModuleList(
            ThinBlock(conv_kind, spatial_dims, 2 * channels, channels, 2) for _ in range(depth)
        )
        self.head = conv(spatial_dims, channels, out_channels, 1)

    @property
    def feature_layers(self) -> list[str]:
        """Names of the block outputs that feature distillation pairs between teacher and student."""
        return [f"encoder.{i}" for i in range(self.depth)] + ["bottom"] + [f"decoder.{i}" for i in range(self.depth)]


register_net("thin_unet", fixed={"conv_kind": "regular", "deep_extra_conv": False})(ThinUNet)
register_net("thin_separable_unet", fixed={"conv_kind": "separable", "deep_extra_conv": False})(ThinUNet)
register_net("thin_separable_student", fixed={"conv_kind": "separable", "deep_extra_conv": True})(ThinUNet)
