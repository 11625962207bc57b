"""The base every U-shaped net of the zoo shares: argument and input-size checks and the U-Net data flow."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn as nn

from lightweight_nets.blocks import check_arg, check_int, check_spatial_dims, downsample, upsample

__all__ = ["UShapedNet"]


class UShapedNet(nn.Module):
    """Encoder -> bottom -> decoder with skips -> head, written once for the whole zoo.

    Each encoder level's output is kept as a skip and down-sampled, the bottom runs at the deepest level, then each
    decoder level runs on the up-sampled map joined with its skip (deepest first), and ``head`` gives the logits.
    A subclass builds ``encoder`` and ``decoder`` (module lists, the decoder ordered from the deepest level
    up), ``head`` and, for the default hooks, ``pool`` and ``bottom``; it overrides a hook only where its paper
    differs. The hooks are methods, not modules, so a subclass keeps whatever module names its weights were saved
    with.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels (logits).
        depth: number of down-samplings; input sizes must be multiples of ``2 ** depth`` (by default).
        pool_factors: the down-sampling factor of each encoder level (first level first) along each spatial axis,
            like the strides of MONAI's DynUNet; ``None`` halves every axis at every level. For anisotropic
            volumes, e.g. ``[[2, 2, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2]]`` keeps the thick-slice axis (last) at
            the first level until the voxels are about as deep as they are wide. The decoder up-samples each level
            by the same factors; pooling has no weights, so the state dict does not depend on this.
    """

    upsample_mode = "nearest"
    """How the default :meth:`_join` up-samples (see :func:`~lightweight_nets.blocks.upsample`)."""

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        depth: int,
        pool_factors: Sequence[Sequence[int]] | None = None,
    ):
        name = type(self).__name__
        check_spatial_dims(name, spatial_dims)
        check_int(name, "in_channels", in_channels)
        check_int(name, "out_channels", out_channels)
        check_int(name, "depth", depth)
        if pool_factors is not None:
            check_pool_factors(name, pool_factors, depth, spatial_dims)
        super().__init__()
        self.spatial_dims, self.depth = spatial_dims, depth
        self.pool_factors = tuple(
            tuple(level) for level in (pool_factors or [[2] * spatial_dims for _ in range(depth)])
        )

    @property
    def size_multiple(self) -> tuple[int, ...]:
        """What the input's size along each spatial axis must be a multiple of (the axis' total down-sampling)."""
        return tuple(math.prod(axis) for axis in zip(*self.pool_factors))

    def check_input(self, x: torch.Tensor) -> None:
        """Raise a clear error unless ``x`` is ``(N, C, *spatial)`` with every spatial size a multiple of its axis'
        :attr:`size_multiple`; otherwise a skip and its up-sampled partner would not line up deep in the net."""
        name, multiples = type(self).__name__, self.size_multiple
        if x.dim() != self.spatial_dims + 2:
            raise ValueError(
                f"{name} expects a {self.spatial_dims + 2}-D input (N, C, spatial...), got {tuple(x.shape)}"
            )
        if any(s % m for s, m in zip(x.shape[2:], multiples)):
            rule = f"{multiples[0]}" if len(set(multiples)) == 1 else f"{multiples} per axis"
            raise ValueError(
                f"{name} needs every spatial size to be a multiple of {rule} (its total down-sampling), "
                f"got {tuple(x.shape[2:])}"
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        x = self._stem(x)
        skips = []
        for level, block in enumerate(self.encoder):
            x, skip = self._down(x, block, level)
            skips.append(skip)
        x = self._bottom(x)
        for level, (block, skip) in enumerate(zip(self.decoder, reversed(skips))):
            x = block(self._join(x, skip, level))
        return self.head(x)

    def _stem(self, x: torch.Tensor) -> torch.Tensor:
        """What runs before the first encoder level; none by default."""
        return x

    def _down(self, x: torch.Tensor, block: nn.Module, level: int) -> tuple[torch.Tensor, torch.Tensor]:
        """One encoder level: ``(input of the next level, skip)``; by default the block's output is the skip and
        ``pool`` down-samples it."""
        skip = block(x)
        return downsample(skip, self.pool_factors[level]), skip

    def _bottom(self, x: torch.Tensor) -> torch.Tensor:
        """The deepest level; ``bottom`` by default."""
        return self.bottom(x)

    def _join(self, x: torch.Tensor, skip: torch.Tensor, level: int) -> torch.Tensor:
        """The decoder block's input at ``level`` (0 is the deepest): by default ``x`` up-sampled with
        :attr:`upsample_mode`, then the skip, concatenated along the channels."""
        return torch.cat([upsample(x, self.upsample_mode, self.up_factors(level)), skip], dim=1)

    def up_factors(self, level: int) -> tuple[int, ...]:
        """The up-sampling factors of decoder ``level`` (0 is the deepest): its encoder level's pooling factors."""
        return self.pool_factors[self.depth - 1 - level]


def check_pool_factors(owner: str, pool_factors: object, depth: int, spatial_dims: int) -> None:
    """``pool_factors`` must give ``depth`` levels of ``spatial_dims`` positive integers each."""
    ok = (
        isinstance(pool_factors, Sequence)
        and len(pool_factors) == depth
        and all(
            isinstance(level, Sequence)
            and len(level) == spatial_dims
            and all(isinstance(f, int) and not isinstance(f, bool) and f >= 1 for f in level)
            for level in pool_factors
        )
    )
    check_arg(ok, owner, "pool_factors", pool_factors, f"{depth} levels of {spatial_dims} integers >= 1 (one per axis)")
