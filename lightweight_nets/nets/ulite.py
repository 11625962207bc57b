"""U-Lite (Dinh et al. 2023): a U-Net of axial depthwise convolutions with about 0.88M parameters."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn

from lightweight_nets.blocks import (
    AxialDepthwiseConv,
    batch_norm,
    check_arg,
    check_odd_kernel,
    check_widths,
    conv,
    max_pool,
)
from lightweight_nets.nets.base import UShapedNet
from lightweight_nets.registry import register_net

__all__ = ["ULite"]


class ULiteEncoderBlock(nn.Module):
    """``skip = BN(axial DW(x))``, then ``GELU(pool(pointwise(skip)))`` widens and halves the map."""

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, kernel_size: int):
        super().__init__()
        self.mix = nn.Sequential(
            AxialDepthwiseConv(spatial_dims, in_channels, kernel_size), batch_norm(spatial_dims, in_channels)
        )
        self.down = nn.Sequential(conv(spatial_dims, in_channels, out_channels, 1), max_pool(spatial_dims), nn.GELU())

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        skip = self.mix(x)
        return self.down(skip), skip


class ULiteDecoderBlock(nn.Sequential):
    """On ``cat(up(x), skip)``: pointwise -> BN -> axial DW -> pointwise -> GELU."""

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, kernel_size: int):
        super().__init__(
            conv(spatial_dims, in_channels + out_channels, out_channels, 1),
            batch_norm(spatial_dims, out_channels),
            AxialDepthwiseConv(spatial_dims, out_channels, kernel_size),
            conv(spatial_dims, out_channels, out_channels, 1),
            nn.GELU(),
        )


class ULiteBottleneck(nn.Module):
    """Pointwise squeeze to ``channels / (len(dilations) + 1)``, concatenation of the squeezed map with one dilated
    axial DW conv of it per dilation, then BN -> pointwise back to ``channels`` -> GELU."""

    def __init__(self, spatial_dims: int, channels: int, kernel_size: int, dilations: Sequence[int]):
        super().__init__()
        branch = channels // (len(dilations) + 1)
        self.squeeze = conv(spatial_dims, channels, branch, 1)
        self.branches = nn.ModuleList(AxialDepthwiseConv(spatial_dims, branch, kernel_size, d) for d in dilations)
        self.fuse = nn.Sequential(
            batch_norm(spatial_dims, branch * (len(dilations) + 1)),
            conv(spatial_dims, branch * (len(dilations) + 1), channels, 1),
            nn.GELU(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.squeeze(x)
        return self.fuse(torch.cat([x, *(branch(x) for branch in self.branches)], dim=1))


class ULite(UShapedNet):
    """U-Lite (Dinh, Nguyen, Tran et al., "1M parameters are enough? A lightweight CNN-based model for medical
    image segmentation", APSIPA ASC 2023).

    A 7x7 stem, five encoder blocks (axial depthwise conv ``x + DW(k x 1)(x) + DW(1 x k)(x)``, BN, pointwise
    widening, max-pool, GELU), a bottleneck of axial convs with dilations 1, 2, 3 (kernel 3), five decoder blocks
    on nearest-up-sampled maps concatenated with the skips, and a 1x1 conv to logits. In 3D every axial conv has a
    third, depth-wise axis. ``in_channels=3, out_channels=1`` in 2D gives the paper's 878,417 parameters.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels (logits).
        channels: stem width followed by the width after each encoder block; input sizes must be multiples of
            ``2 ** (len(channels) - 1)``.
        kernel_size: length of the axial kernels in the encoder and decoder.
        bottleneck_kernel_size: length of the dilated axial kernels in the bottleneck.
        dilations: dilations of the bottleneck's axial convs.
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        out_channels: int = 1,
        channels: Sequence[int] = (16, 32, 64, 128, 256, 512),
        kernel_size: int = 7,
        bottleneck_kernel_size: int = 3,
        dilations: Sequence[int] = (1, 2, 3),
    ):
        name = type(self).__name__
        check_widths(name, "channels", channels, min_len=2)
        check_odd_kernel(name, "kernel_size", kernel_size)
        check_odd_kernel(name, "bottleneck_kernel_size", bottleneck_kernel_size)
        check_widths(name, "dilations", dilations)
        check_arg(
            channels[-1] >= len(dilations) + 1,
            name,
            "channels",
            channels,
            f"a last width of at least len(dilations) + 1 = {len(dilations) + 1} (the bottleneck's branches)",
        )
        super().__init__(spatial_dims, in_channels, out_channels, depth=len(channels) - 1)
        self.stem = conv(spatial_dims, in_channels, channels[0], 7)
        pairs = list(zip(channels[:-1], channels[1:]))
        self.encoder = nn.ModuleList(ULiteEncoderBlock(spatial_dims, i, o, kernel_size) for i, o in pairs)
        self.bottleneck = ULiteBottleneck(spatial_dims, channels[-1], bottleneck_kernel_size, dilations)
        self.decoder = nn.ModuleList(ULiteDecoderBlock(spatial_dims, o, i, kernel_size) for i, o in reversed(pairs))
        self.head = conv(spatial_dims, channels[0], out_channels, 1)

    def _stem(self, x: torch.Tensor) -> torch.Tensor:
        return self.stem(x)

    def _down(self, x: torch.Tensor, block: nn.Module, level: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The encoder block pools itself and hands back its skip."""
        return block(x)

    def _bottom(self, x: torch.Tensor) -> torch.Tensor:
        return self.bottleneck(x)


register_net("ulite")(ULite)
