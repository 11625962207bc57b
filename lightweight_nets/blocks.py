"""Reusable building blocks shared by every network in the zoo; each works in 2D and 3D.

The convolution kinds the papers compare are here once: regular, grouped + pointwise (Li et al. 2021),
depthwise-separable (Vaze et al. 2020, SD-UNet), axial depthwise (U-Lite) and weight-standardised
(SD-UNet). Networks pick a kind by name through :func:`make_conv`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.layers.factories import Conv, Norm, Pool
from torch.nn.utils import parametrize

__all__ = [
    "check_arg",
    "check_int",
    "check_odd_kernel",
    "check_probability",
    "check_spatial_dims",
    "check_widths",
    "conv",
    "SeparableConv",
    "GroupedPointwiseConv",
    "effective_group_size",
    "AxialDepthwiseConv",
    "WeightStandardization",
    "weight_standardize",
    "CONV_KINDS",
    "make_conv",
    "ConvNormAct",
    "batch_norm",
    "DoubleConv",
    "max_pool",
    "downsample",
    "upsample",
]


def check_arg(ok: bool, owner: str, name: str, value: object, allowed: str) -> None:
    """Raise a one-line ``ValueError`` naming ``owner``'s argument ``name``, its ``value`` and what is ``allowed``
    unless ``ok``, so a bad config fails where it is read rather than deep inside a layer."""
    if not ok:
        raise ValueError(f"{owner}: {name}={value!r} is not allowed; expected {allowed}")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_int(owner: str, name: str, value: object, minimum: int = 1) -> None:
    """``value`` must be an integer of at least ``minimum``."""
    check_arg(_is_int(value) and value >= minimum, owner, name, value, f"an integer >= {minimum}")


def check_odd_kernel(owner: str, name: str, value: object) -> None:
    """``value`` must be an odd kernel length: a 'same'-padded conv keeps the map's size only then."""
    check_arg(_is_int(value) and value >= 1 and value % 2 == 1, owner, name, value, "an odd integer >= 1")


def check_probability(owner: str, name: str, value: object) -> None:
    """``value`` must be a number in [0, 1] (a dropout probability)."""
    ok = isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value <= 1
    check_arg(ok, owner, name, value, "a number in [0, 1]")


def check_spatial_dims(owner: str, spatial_dims: object) -> None:
    """``spatial_dims`` must be 2 or 3, the two the blocks support."""
    check_arg(_is_int(spatial_dims) and spatial_dims in (2, 3), owner, "spatial_dims", spatial_dims, "2 or 3")


def check_widths(owner: str, name: str, value: object, min_len: int = 1) -> None:
    """``value`` must be a sequence of at least ``min_len`` positive integers (channel widths, dilations)."""
    ok = (
        isinstance(value, Sequence)
        and not isinstance(value, str)
        and len(value) >= min_len
        and all(_is_int(v) and v >= 1 for v in value)
    )
    check_arg(ok, owner, name, value, f"a sequence of {min_len} or more positive integers")


def conv(
    spatial_dims: int,
    in_channels: int,
    out_channels: int,
    kernel_size: int | Sequence[int] = 3,
    groups: int = 1,
    dilation: int | Sequence[int] = 1,
    bias: bool = True,
) -> nn.Module:
    """A 'same'-padded convolution of any kernel shape for ``spatial_dims`` 2 or 3."""
    ks = (kernel_size,) * spatial_dims if isinstance(kernel_size, int) else tuple(kernel_size)
    dil = (dilation,) * spatial_dims if isinstance(dilation, int) else tuple(dilation)
    padding = tuple(d * (k - 1) // 2 for k, d in zip(ks, dil))
    return Conv[Conv.CONV, spatial_dims](
        in_channels, out_channels, ks, padding=padding, groups=groups, dilation=dil, bias=bias
    )


def max_pool(spatial_dims: int, factor: int = 2) -> nn.Module:
    return Pool[Pool.MAX, spatial_dims](factor)


def downsample(x: torch.Tensor, factors: Sequence[int]) -> torch.Tensor:
    """Max-pool ``x`` by ``factors`` (one per spatial axis; kernel = stride), the U-Nets' down-sampling."""
    pool = F.max_pool2d if x.dim() == 4 else F.max_pool3d
    return pool(x, tuple(factors))


class WeightStandardization(nn.Module):
    """Parametrisation that standardises each output filter to zero mean and unit variance (Qiao et al. 2019),
    as SD-UNet applies to its depthwise kernels. Used through ``torch.nn.utils.parametrize`` so any conv
    (2D or 3D) gets it without a subclass."""

    def __init__(self, eps: float = 1e-5):
        super().__init__()
        self.eps = eps

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        dims = tuple(range(1, weight.dim()))
        mean = weight.mean(dim=dims, keepdim=True)
        var = weight.var(dim=dims, keepdim=True, unbiased=False)
        return (weight - mean) / torch.sqrt(var + self.eps)


def weight_standardize(module: nn.Module) -> nn.Module:
    """Register :class:`WeightStandardization` on ``module.weight`` and return the module."""
    parametrize.register_parametrization(module, "weight", WeightStandardization())
    return module


class SeparableConv(nn.Sequential):
    """Depthwise k x k conv (one filter per channel) followed by a pointwise 1 x 1 conv.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: depthwise kernel size.
        bias: whether both convs carry a bias.
        standardize_depthwise: apply weight standardisation to the depthwise kernels (SD-UNet).
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        bias: bool = True,
        standardize_depthwise: bool = False,
    ):
        depthwise = conv(spatial_dims, in_channels, in_channels, kernel_size, groups=in_channels, bias=bias)
        if standardize_depthwise:
            weight_standardize(depthwise)
        super().__init__()
        self.depthwise = depthwise
        self.pointwise = conv(spatial_dims, in_channels, out_channels, 1, bias=bias)


def effective_group_size(in_channels: int, group_size: int) -> int:
    """Channels per group a :class:`GroupedPointwiseConv` uses on ``in_channels``: ``min(in_channels, group_size)``,
    but all 3 of an RGB input whenever ``group_size != 1``, as in the counts of Li et al. 2021."""
    return 3 if (in_channels == 3 and group_size != 1) else min(in_channels, group_size)


class GroupedPointwiseConv(nn.Sequential):
    """Grouped k x k conv (in -> in, ``group_size`` channels per group) followed by a pointwise 1 x 1 conv,
    the 'Lighter U-net@C' convolution of Li et al. 2021.

    The effective group size is ``min(in_channels, group_size)``, except that a 3-channel input (RGB) keeps all
    3 channels in one group whenever ``group_size != 1``, as in the paper's counts.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels.
        group_size: channels per group (``C`` in the paper); 1 gives a depthwise conv.
        kernel_size: kernel size of the grouped conv.
        bias: whether both convs carry a bias.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        group_size: int,
        kernel_size: int = 3,
        bias: bool = True,
    ):
        check_int(type(self).__name__, "group_size", group_size)
        effective = effective_group_size(in_channels, group_size)
        check_arg(
            in_channels % effective == 0,
            type(self).__name__,
            "group_size",
            group_size,
            f"a group size that divides the conv's {in_channels} input channels",
        )
        super().__init__()
        self.grouped = conv(
            spatial_dims, in_channels, in_channels, kernel_size, groups=in_channels // effective, bias=bias
        )
        self.pointwise = conv(spatial_dims, in_channels, out_channels, 1, bias=bias)


class AxialDepthwiseConv(nn.Module):
    """``x + sum_axis DW_axis(x)``: one depthwise conv per spatial axis with a k-long kernel along that axis
    (U-Lite's axial depthwise convolution; in 3D there are three axes).

    Args:
        spatial_dims: 2 or 3.
        channels: channels in and out.
        kernel_size: length of each axial kernel.
        dilation: dilation along the kernel's axis.
    """

    def __init__(self, spatial_dims: int, channels: int, kernel_size: int = 7, dilation: int = 1):
        check_odd_kernel(type(self).__name__, "kernel_size", kernel_size)
        check_int(type(self).__name__, "dilation", dilation)
        super().__init__()
        self.axial = nn.ModuleList()
        for axis in range(spatial_dims):
            ks = [1] * spatial_dims
            dil = [1] * spatial_dims
            ks[axis], dil[axis] = kernel_size, dilation
            self.axial.append(conv(spatial_dims, channels, channels, ks, groups=channels, dilation=dil))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        for layer in self.axial:
            out = out + layer(x)
        return out


_CONV_KINDS: dict[str, Callable[..., nn.Module]] = {
    "regular": lambda sd, i, o, **kw: conv(sd, i, o, 3, bias=kw.get("bias", True)),
    "separable": lambda sd, i, o, **kw: SeparableConv(sd, i, o, 3, bias=kw.get("bias", True)),
    "separable_ws": lambda sd, i, o, **kw: SeparableConv(
        sd, i, o, 3, bias=kw.get("bias", True), standardize_depthwise=True
    ),
    "grouped": lambda sd, i, o, **kw: GroupedPointwiseConv(sd, i, o, kw["group_size"], 3, bias=kw.get("bias", True)),
}
CONV_KINDS = tuple(_CONV_KINDS)
"""The conv kinds :func:`make_conv` knows."""


def make_conv(kind: str, spatial_dims: int, in_channels: int, out_channels: int, **kwargs) -> nn.Module:
    """A 3 x 3 convolution of the named ``kind``: regular, separable, separable_ws or grouped
    (the last needs ``group_size``)."""
    check_arg(kind in _CONV_KINDS, "make_conv", "kind", kind, f"one of {', '.join(CONV_KINDS)}")
    check_arg(
        kind != "grouped" or "group_size" in kwargs,
        "make_conv",
        "group_size",
        None,
        "an integer for the 'grouped' kind",
    )
    return _CONV_KINDS[kind](spatial_dims, in_channels, out_channels, **kwargs)


class ConvNormAct(nn.Sequential):
    """``conv -> norm -> act``, where norm and act are optional modules (``None`` skips them)."""

    def __init__(self, conv_layer: nn.Module, norm: nn.Module | None = None, act: nn.Module | None = None):
        super().__init__()
        self.conv = conv_layer
        if norm is not None:
            self.norm = norm
        if act is not None:
            self.act = act


def batch_norm(spatial_dims: int, channels: int) -> nn.Module:
    """BatchNorm for ``spatial_dims`` 2 or 3."""
    return Norm[Norm.BATCH, spatial_dims](channels)


class DoubleConv(nn.Sequential):
    """``conv -> BatchNorm -> ReLU`` twice: the classic U-Net level (Ronneberger et al. 2015). Each conv is a
    :func:`make_conv` kind, so lightweight variants (Li et al. 2021) differ from the original only in
    ``conv_kinds``.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels.
        mid_channels: channels between the two convs; ``None`` means ``out_channels``.
        conv_kinds: :func:`make_conv` kinds of the first and the second conv.
        bias: whether the convs carry a bias.
        conv_kwargs: further :func:`make_conv` arguments, e.g. ``group_size``.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        mid_channels: int | None = None,
        conv_kinds: Sequence[str] = ("regular", "regular"),
        bias: bool = True,
        **conv_kwargs,
    ):
        check_arg(
            isinstance(conv_kinds, Sequence) and not isinstance(conv_kinds, str) and len(conv_kinds) == 2,
            type(self).__name__,
            "conv_kinds",
            conv_kinds,
            "two make_conv kinds (first and second conv)",
        )
        mid = out_channels if mid_channels is None else mid_channels
        super().__init__(
            *(
                ConvNormAct(
                    make_conv(kind, spatial_dims, cin, cout, bias=bias, **conv_kwargs),
                    batch_norm(spatial_dims, cout),
                    nn.ReLU(inplace=True),
                )
                for kind, cin, cout in zip(conv_kinds, (in_channels, mid), (mid, out_channels), strict=True)
            )
        )


def upsample(x: torch.Tensor, mode: str, factors: Sequence[int] | None = None) -> torch.Tensor:
    """Scale every spatial size of ``x`` by ``factors`` (one per axis; ``None`` doubles all); ``mode`` 'linear'
    picks bilinear/trilinear with align_corners=True.

    A constant factor rather than the skip's size: the nets check that their input is a multiple of their total
    down-sampling, so both give the same map, and an exported ONNX graph then has a constant Resize, which ONNX
    Runtime runs in its blocked (NCHWc) memory layout instead of computing sizes and re-ordering memory at every
    level."""
    scale = 2 if factors is None or set(factors) == {2} else tuple(float(f) for f in factors)
    if mode == "linear":
        mode = "bilinear" if x.dim() == 4 else "trilinear"
        return F.interpolate(x, scale_factor=scale, mode=mode, align_corners=True)
    return F.interpolate(x, scale_factor=scale, mode=mode)
