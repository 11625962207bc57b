"""SD-UNet (Gadosey et al. 2020): U-Net with depthwise-separable, weight-standardised convs and GroupNorm."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn as nn

from lightweight_nets.blocks import (
    ConvNormAct,
    check_int,
    check_probability,
    check_widths,
    conv,
    make_conv,
    upsample,
)
from lightweight_nets.nets.base import UShapedNet
from lightweight_nets.registry import register_net

__all__ = ["SDUNet"]


def _separable(spatial_dims: int, in_channels: int, out_channels: int) -> ConvNormAct:
    """Depthwise-separable 3x3 conv with weight-standardised depthwise kernels, then ReLU."""
    return ConvNormAct(make_conv("separable_ws", spatial_dims, in_channels, out_channels), act=nn.ReLU(inplace=True))


class SDUNetBlock(nn.Sequential):
    """The SD-UNet block: separable conv + ReLU, separable conv + ReLU, GroupNorm."""

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, num_groups: int):
        super().__init__(
            _separable(spatial_dims, in_channels, out_channels),
            _separable(spatial_dims, out_channels, out_channels),
            nn.GroupNorm(math.gcd(num_groups, out_channels), out_channels),
        )


class SDUNet(UShapedNet):
    """SD-UNet (Gadosey, Li, Agyekum et al., "SD-UNet: Stripping down U-Net for segmentation of biomedical images
    on platforms with low computational budgets", Diagnostics 10(2):110, 2020).

    Encoder: a standard conv -> ReLU -> GroupNorm at the top width, then one SD-UNet block per deeper level; every
    level but the bottom is followed by max-pooling, and dropout follows the deepest skip and the bottom. Decoder
    (the U-Net of Ronneberger et al. with separable convs): up-sample (nearest), a separable "up-conv" halving the
    width, concatenation with the skip, an SD-UNet block; a 1x1 conv gives the logits. Every depthwise kernel is
    weight-standardised (through ``torch.nn.utils.parametrize``, so the nets trace and export).

    ``in_channels=3, out_channels=1`` in 2D gives 3,921,025 parameters (``in_channels=1``, as for the paper's
    grey-scale data: 3,919,873), the paper's "about 3.9M" (it gives no exact count and no per-layer table). This
    structure follows the paper's block description (the top level keeps a single standard conv, hence "stripped
    down") on its Keras U-Net base; the details the paper leaves open, and that move the count by a few thousand,
    are chosen as: separable convs with bias, affine GroupNorm, 3x3 separable up-convs (the base uses 2x2), and no
    extra 3x3 conv to 2 channels before the 1x1 output (the base has one).

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels (logits).
        channels: width of each level from the top to the bottom; input sizes must be multiples of
            ``2 ** (len(channels) - 1)``.
        num_groups: GroupNorm groups (``gcd(num_groups, width)`` for widths it does not divide).
        dropout: dropout probability after the deepest skip and the bottom.
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        out_channels: int = 1,
        channels: Sequence[int] = (64, 128, 256, 512, 1024),
        num_groups: int = 32,
        dropout: float = 0.5,
    ):
        name = type(self).__name__
        check_widths(name, "channels", channels, min_len=2)
        check_int(name, "num_groups", num_groups)
        check_probability(name, "dropout", dropout)
        super().__init__(spatial_dims, in_channels, out_channels, depth=len(channels) - 1)
        stem = nn.Sequential(
            conv(spatial_dims, in_channels, channels[0]),
            nn.ReLU(inplace=True),
            nn.GroupNorm(math.gcd(num_groups, channels[0]), channels[0]),
        )
        blocks = [stem, *(SDUNetBlock(spatial_dims, i, o, num_groups) for i, o in zip(channels[:-2], channels[1:-1]))]
        blocks[-1].add_module("dropout", nn.Dropout(dropout))
        self.encoder = nn.ModuleList(blocks)
        self.bottom = SDUNetBlock(spatial_dims, channels[-2], channels[-1], num_groups)
        self.bottom.add_module("dropout", nn.Dropout(dropout))
        pairs = list(reversed(list(zip(channels[:-1], channels[1:]))))
        self.up_convs = nn.ModuleList(_separable(spatial_dims, deep, skip) for skip, deep in pairs)
        self.decoder = nn.ModuleList(SDUNetBlock(spatial_dims, 2 * skip, skip, num_groups) for skip, _ in pairs)
        self.head = conv(spatial_dims, channels[0], out_channels, 1)

    def _join(self, x: torch.Tensor, skip: torch.Tensor, level: int) -> torch.Tensor:
        """Nearest up-sampling, the level's separable up-conv, then the skip in front."""
        return torch.cat([skip, self.up_convs[level](upsample(x, "nearest"))], dim=1)


register_net("sd_unet")(SDUNet)
