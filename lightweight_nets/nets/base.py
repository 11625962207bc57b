"""The base every U-shaped net of the zoo shares: argument and input-size checks and the U-Net data flow."""

from __future__ import annotations

import torch
import torch.nn as nn

from lightweight_nets.blocks import check_int, check_spatial_dims, upsample

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
        depth: number of 2x down-samplings; input sizes must be multiples of ``2 ** depth``.
    """

    upsample_mode = "nearest"
    """How the default :meth:`_join` up-samples (see :func:`~lightweight_nets.blocks.upsample`)."""

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, depth: int):
        name = type(self).__name__
        check_spatial_dims(name, spatial_dims)
        check_int(name, "in_channels", in_channels)
        check_int(name, "out_channels", out_channels)
        check_int(name, "depth", depth)
        super().__init__()
        self.spatial_dims, self.depth = spatial_dims, depth

    @property
    def size_multiple(self) -> int:
        """What every spatial size of the input must be a multiple of (the total down-sampling factor)."""
        return 2**self.depth

    def check_input(self, x: torch.Tensor) -> None:
        """Raise a clear error unless ``x`` is ``(N, C, *spatial)`` with every spatial size a multiple of
        :attr:`size_multiple`; otherwise a skip and its up-sampled partner would not line up deep in the net."""
        name, multiple = type(self).__name__, self.size_multiple
        if x.dim() != self.spatial_dims + 2:
            raise ValueError(
                f"{name} expects a {self.spatial_dims + 2}-D input (N, C, spatial...), got {tuple(x.shape)}"
            )
        if any(s % multiple for s in x.shape[2:]):
            raise ValueError(
                f"{name} needs every spatial size to be a multiple of {multiple} "
                f"(it down-samples {multiple}x), got {tuple(x.shape[2:])}"
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
        return self.pool(skip), skip

    def _bottom(self, x: torch.Tensor) -> torch.Tensor:
        """The deepest level; ``bottom`` by default."""
        return self.bottom(x)

    def _join(self, x: torch.Tensor, skip: torch.Tensor, level: int) -> torch.Tensor:
        """The decoder block's input at ``level`` (0 is the deepest): by default ``x`` up-sampled with
        :attr:`upsample_mode`, then the skip, concatenated along the channels."""
        return torch.cat([upsample(x, self.upsample_mode), skip], dim=1)
