"""The network zoo: parameter counts against the papers, output shapes in 2D and 3D, input-size errors, and
instantiation from MONAI bundle configs."""

from __future__ import annotations

import re

import pytest
import torch
from monai.bundle import ConfigParser

from lightweight_nets import create_net, list_nets
from lightweight_nets.nets import FlatUNet, LiUNet, SDUNet, ThinUNet, ULite


def num_params(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


# (name, kwargs, count) with spatial_dims=2, in_channels=3, out_channels=1; figures from the papers.
PAPER_COUNTS = [
    ("unet", {}, 17_267_393),
    ("light_unet", {}, 11_000_257),
    *(
        ("lighter_unet", {"group_size": c}, n)
        for c, n in [(128, 7_944_661), (64, 4_995_541), (32, 3_465_685), (16, 2_700_757), (8, 2_318_293),
                     (4, 2_127_061), (2, 2_031_445), (1, 1_983_583)]
    ),
    ("ulite", {}, 878_417),
]
# Counts stated in the module docstrings (SD-UNet: the paper's "about 3.9M"; Lean vs doubling U-Net table).
DOCUMENTED_COUNTS = [
    ("sd_unet", {}, 3_921_025),
    ("sd_unet", {"in_channels": 1}, 3_919_873),
    ("flat_unet", {"channels": 32, "depth": 4}, 195_585),
    ("doubling_unet", {"channels": 32, "depth": 4}, 7_849_601),
    ("flat_unet", {"channels": 32, "depth": 5}, 241_921),
    ("doubling_unet", {"channels": 32, "depth": 5}, 31_448_705),
    ("flat_unet", {"channels": 64, "depth": 4}, 778_241),
    ("doubling_unet", {"channels": 64, "depth": 4}, 31_384_833),
]
SIZE_MULTIPLES = {
    "unet": 16, "light_unet": 16, "lighter_unet": 16, "ulite": 32, "flat_unet": 16, "doubling_unet": 16,
    "sd_unet": 16, "thin_unet": 64, "thin_separable_unet": 64, "thin_separable_student": 64,
}


def size_multiple(net: torch.nn.Module, spatial_dims: int, in_channels: int) -> int:
    """The multiple a net's input sizes must have, read from the error it raises for a size-1 input."""
    with pytest.raises(ValueError, match=r"multiple of \d+") as err:
        net(torch.zeros((1, in_channels) + (1,) * spatial_dims))
    return int(re.search(r"multiple of (\d+)", str(err.value)).group(1))


@pytest.mark.parametrize("name, kwargs, expected", PAPER_COUNTS + DOCUMENTED_COUNTS)
def test_parameter_count(name, kwargs, expected):
    net = create_net(name, **{"spatial_dims": 2, "in_channels": 3, "out_channels": 1, **kwargs})
    assert num_params(net) == expected


@pytest.mark.parametrize("name", ["thin_unet", "thin_separable_unet", "thin_separable_student"])
def test_thin_family_builds(name):
    assert num_params(create_net(name, spatial_dims=2, in_channels=3, out_channels=1)) > 0


@pytest.mark.parametrize("name, multiple", sorted(SIZE_MULTIPLES.items()))
def test_invalid_size_error(name, multiple):
    net = create_net(name, spatial_dims=2, in_channels=1).eval()
    with pytest.raises(ValueError, match=f"multiple of {multiple}"):
        net(torch.zeros(1, 1, multiple, multiple + 2))
    with pytest.raises(ValueError, match="4-D input"):
        net(torch.zeros(1, 1, multiple, multiple, multiple))


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("name", list_nets())
def test_output_shape(name, spatial_dims):
    """Every registered net, eval mode, non-square input: logits of the input's spatial size."""
    net = create_net(name, spatial_dims=spatial_dims, in_channels=2, out_channels=3).eval()
    multiple = size_multiple(net, spatial_dims, 2)
    if name in SIZE_MULTIPLES:
        assert multiple == SIZE_MULTIPLES[name]
    spatial = (multiple, 3 * multiple) if spatial_dims == 2 else (multiple, multiple, 2 * multiple)
    with torch.no_grad():
        out = net(torch.randn(1, 2, *spatial))
    assert out.shape == (1, 3, *spatial)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", ["unet", "light_unet", "lighter_unet", "ulite", "flat_unet", "sd_unet"])
def test_train_step(name):
    """A training-mode forward/backward reaches every parameter (weight standardisation included)."""
    net = create_net(name, spatial_dims=2, in_channels=1, out_channels=2).train()
    multiple = SIZE_MULTIPLES[name]
    net(torch.randn(2, 1, multiple, 2 * multiple)).square().mean().backward()
    assert all(p.grad is not None for p in net.parameters())


BUNDLE_CASES = [
    (LiUNet, {"conv_kinds": ["grouped", "grouped"], "group_size": 8, "channels": [8, 16, 32]}, 8),
    (ULite, {"channels": [4, 8, 16, 32]}, 8),
    (FlatUNet, {"channels": 8, "depth": 3, "channel_multiplier": 2}, 8),
    (SDUNet, {"channels": [8, 16, 32, 64], "num_groups": 4}, 8),
    (ThinUNet, {"channels": 8, "depth": 3, "conv_kind": "separable"}, 8),
]


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("cls, kwargs, multiple", BUNDLE_CASES)
def test_bundle_config(cls, kwargs, multiple, spatial_dims):
    config = {"network_def": {"_target_": f"lightweight_nets.nets.{cls.__name__}", "spatial_dims": spatial_dims,
                              "in_channels": 1, "out_channels": 2, **kwargs}}
    net = ConfigParser(config).get_parsed_content("network_def")
    assert type(net) is cls
    spatial = (multiple,) * (spatial_dims - 1) + (2 * multiple,)
    with torch.no_grad():
        assert net.eval()(torch.zeros(1, 1, *spatial)).shape == (1, 2, *spatial)
