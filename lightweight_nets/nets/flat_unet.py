"""Lean U-Net (Hassler et al. 2025): a U-Net whose width stays constant across levels; with
``channel_multiplier=2`` the same class is the standard doubling U-Net it is compared with.

Parameters (2D, ``in_channels=3``, ``out_channels=1``):

========  =====  ============================  ================================
channels  depth  ``flat_unet`` (multiplier 1)  ``doubling_unet`` (multiplier 2)
========  =====  ============================  ================================
32        4      195,585                       7,849,601
32        5      241,921                       31,448,705
64        4      778,241                       31,384,833
========  =====  ============================  ================================
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn as nn

from lightweight_nets.blocks import DoubleConv, check_arg, check_int, conv
from lightweight_nets.nets.base import UShapedNet
from lightweight_nets.registry import register_net

__all__ = ["FlatUNet"]


class FlatUNet(UShapedNet):
    """Lean U-Net, LUnet (Hassler, Åkerholm, Nordström, Balletti, Goksel, "Lean Unet: A Compact Model for Image
    Segmentation", arXiv:2512.03834, 2025).

    Every level, the bottom included, is a :class:`~lightweight_nets.blocks.DoubleConv` (conv -> BN -> ReLU,
    twice, bias-free convs); level ``i`` has ``channels * channel_multiplier ** i`` channels, so the default
    multiplier 1 keeps the width flat and 2 gives the conventional doubling U-Net. Decoder levels take the
    up-sampled deeper map concatenated with the skip; a 1x1 conv gives the logits.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels (logits).
        channels: width of the top level (of every level when flat).
        depth: number of down-samplings; input sizes must be multiples of ``2 ** depth``.
        channel_multiplier: width factor from one level to the next deeper one.
        upsample_mode: ``"linear"`` (bi/trilinear) or ``"nearest"``.
        pool_factors: per encoder level, its down-sampling factor along each axis (``None``: 2 everywhere); see
            :class:`~lightweight_nets.nets.base.UShapedNet`.
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        out_channels: int = 1,
        channels: int = 32,
        depth: int = 4,
        channel_multiplier: int = 1,
        upsample_mode: str = "linear",
        pool_factors: Sequence[Sequence[int]] | None = None,
    ):
        name = type(self).__name__
        check_int(name, "channels", channels)
        check_int(name, "channel_multiplier", channel_multiplier)
        check_arg(upsample_mode in ("linear", "nearest"), name, "upsample_mode", upsample_mode, "'linear' or 'nearest'")
        super().__init__(spatial_dims, in_channels, out_channels, depth, pool_factors)
        self.upsample_mode = upsample_mode
        widths = [channels * channel_multiplier**i for i in range(depth + 1)]
        self.encoder = nn.ModuleList(
            DoubleConv(spatial_dims, cin, cout, bias=False) for cin, cout in zip([in_channels, *widths], widths[:-1])
        )
        self.bottom = DoubleConv(spatial_dims, widths[-2], widths[-1], bias=False)
        self.decoder = nn.ModuleList(
            DoubleConv(spatial_dims, widths[i + 1] + widths[i], widths[i], bias=False) for i in reversed(range(depth))
        )
        self.head = conv(spatial_dims, channels, out_channels, 1)


register_net("flat_unet", fixed={"channel_multiplier": 1})(FlatUNet)
register_net("doubling_unet", fixed={"channel_multiplier": 2})(FlatUNet)
