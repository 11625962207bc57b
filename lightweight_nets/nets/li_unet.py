"""U-Net, Light U-Net and Lighter U-Net@C of Li et al. 2021: one U-Net whose two convs per level are swapped for
cheaper kinds (depthwise + pointwise, grouped + pointwise)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn

from lightweight_nets.blocks import (
    CONV_KINDS,
    DoubleConv,
    check_arg,
    check_int,
    check_probability,
    check_widths,
    conv,
    effective_group_size,
    upsample,
)
from lightweight_nets.nets.base import UShapedNet
from lightweight_nets.registry import register_net

__all__ = ["LiUNet"]


class LiUNet(UShapedNet):
    """U-Net with replaceable conv kinds (Li et al., "Lightweight U-Nets with group convolution",
    ISBI 2021, on the bilinear U-Net of their code base).

    Every level is ``conv set 1 -> BN -> ReLU -> conv set 2 -> BN -> ReLU`` (:class:`DoubleConv`, convs with
    bias, affine BN). With bilinear up-sampling the bottom level has as many channels as the deepest encoder level
    (512, not 1024) and each decoder level takes the up-sampled map concatenated with the skip (2 x ``c`` channels),
    goes through ``c`` mid channels and outputs the next shallower width (the shallowest keeps ``c``). Dropout sits
    after the bottom level; a 1x1 conv gives the logits. With ``in_channels=3, out_channels=1`` in 2D this
    structure reproduces the paper's counts to the unit: U-Net 17,267,393; Light U-Net 11,000,257; Lighter
    U-Net@C 7,944,661 / 4,995,541 / 3,465,685 / 2,700,757 / 2,318,293 / 2,127,061 / 2,031,445 / 1,983,583 for
    C = 128 / 64 / 32 / 16 / 8 / 4 / 2 / 1 (group sizes as in :class:`~lightweight_nets.blocks.GroupedPointwiseConv`).

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels (logits).
        channels: encoder widths from the top; the bottom repeats the last. Input sizes must be multiples of
            ``2 ** len(channels)``.
        conv_kinds: :func:`~lightweight_nets.blocks.make_conv` kinds of conv set 1 and 2: ``("regular",
            "regular")`` is U-Net, ``("regular", "separable")`` Light U-Net, ``("grouped", "grouped")``
            Lighter U-Net@C.
        group_size: ``C`` of the grouped convs (ignored by the other kinds).
        dropout: dropout probability after the bottom level.
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        out_channels: int = 1,
        channels: Sequence[int] = (64, 128, 256, 512),
        conv_kinds: Sequence[str] = ("regular", "regular"),
        group_size: int = 128,
        dropout: float = 0.5,
    ):
        name = type(self).__name__
        check_widths(name, "channels", channels)
        check_arg(
            isinstance(conv_kinds, Sequence)
            and not isinstance(conv_kinds, str)
            and len(conv_kinds) == 2
            and all(kind in CONV_KINDS for kind in conv_kinds),
            name,
            "conv_kinds",
            conv_kinds,
            f"two conv kinds, each one of {', '.join(CONV_KINDS)}",
        )
        check_int(name, "group_size", group_size)
        check_probability(name, "dropout", dropout)
        super().__init__(spatial_dims, in_channels, out_channels, depth=len(channels))
        if "grouped" in conv_kinds:  # conv set 1 sees in_channels, the widths and twice them; conv set 2 the widths
            seen = {*channels} | ({in_channels, *(2 * c for c in channels)} if conv_kinds[0] == "grouped" else set())
            bad = sorted(c for c in seen if c % effective_group_size(c, group_size))
            check_arg(
                not bad,
                name,
                "group_size",
                group_size,
                f"a group size that divides every grouped conv's input width (not {', '.join(map(str, bad))})",
            )

        def level(cin: int, cout: int, mid: int | None = None) -> nn.Module:
            return DoubleConv(spatial_dims, cin, cout, mid, conv_kinds, group_size=group_size)

        widths = [in_channels, *channels]
        self.encoder = nn.ModuleList(level(widths[i], widths[i + 1]) for i in range(len(channels)))
        self.bottom = level(channels[-1], channels[-1])
        self.dropout = nn.Dropout(dropout)
        outs = [channels[0], *channels[:-1]]
        self.decoder = nn.ModuleList(level(2 * c, o, c) for c, o in zip(reversed(channels), reversed(outs)))
        self.head = conv(spatial_dims, channels[0], out_channels, 1)

    def _bottom(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.bottom(x))

    def _join(self, x: torch.Tensor, skip: torch.Tensor, level: int) -> torch.Tensor:
        """The skip, then the bilinearly up-sampled map, as in the code base of the paper."""
        return torch.cat([skip, upsample(x, "linear")], dim=1)


register_net("unet", fixed={"conv_kinds": ("regular", "regular")})(LiUNet)
register_net("light_unet", fixed={"conv_kinds": ("regular", "separable")})(LiUNet)
register_net("lighter_unet", fixed={"conv_kinds": ("grouped", "grouped")}, group_size=128)(LiUNet)
