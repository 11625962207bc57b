"""The network zoo: parameter counts against the papers and model cards, output shapes in 2D and 3D, input-size and
constructor-argument errors, the registry, and instantiation from MONAI bundle configs."""

from __future__ import annotations

import re

import pytest
import torch
from monai.bundle import ConfigParser

from lightweight_nets import create_net, list_nets, register_net, registry
from lightweight_nets.blocks import AxialDepthwiseConv, DoubleConv, GroupedPointwiseConv, make_conv
from lightweight_nets.nets import FlatUNet, LiUNet, SDUNet, ThinUNet, ULite
from lightweight_nets.nets.base import UShapedNet


def num_params(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


# (name, kwargs, count) with spatial_dims=2, in_channels=3, out_channels=1; figures from the papers.
PAPER_COUNTS = [
    ("unet", {}, 17_267_393),
    ("light_unet", {}, 11_000_257),
    *(
        ("lighter_unet", {"group_size": c}, n)
        for c, n in [
            (128, 7_944_661),
            (64, 4_995_541),
            (32, 3_465_685),
            (16, 2_700_757),
            (8, 2_318_293),
            (4, 2_127_061),
            (2, 2_031_445),
            (1, 1_983_583),
        ]
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
# Counts the bundles' model cards (bundle/*/docs/README.md) give for the shipped thin U-Nets.
MODEL_CARD_COUNTS = [
    ("thin_unet", {"in_channels": 1}, 287_681),  # fetal_head_us / breast_lesion_us teacher
    ("thin_separable_student", {"in_channels": 1}, 44_779),  # fetal_head_us / breast_lesion_us served model
    ("thin_unet", {"spatial_dims": 3, "in_channels": 1, "out_channels": 3, "channels": 12, "depth": 4}, 82_443),
    ("thin_unet", {"spatial_dims": 3, "in_channels": 1, "out_channels": 3, "depth": 4}, 582_723),  # "583k"
    ("thin_separable_student", {"spatial_dims": 3, "in_channels": 1, "out_channels": 3, "depth": 4}, 43_583),
    ("thin_unet", {"spatial_dims": 3, "in_channels": 1, "out_channels": 1, "channels": 16, "depth": 4}, 146_177),
]
THIN_NETS = ["thin_unet", "thin_separable_unet", "thin_separable_student"]
SIZE_MULTIPLES = {
    "unet": 16,
    "light_unet": 16,
    "lighter_unet": 16,
    "ulite": 32,
    "flat_unet": 16,
    "doubling_unet": 16,
    "sd_unet": 16,
    "thin_unet": 64,
    "thin_separable_unet": 64,
    "thin_separable_student": 64,
}


def size_multiple(net: torch.nn.Module, spatial_dims: int, in_channels: int) -> int:
    """The multiple a net's input sizes must have, read from the error it raises for a size-1 input."""
    with pytest.raises(ValueError, match=r"multiple of \d+") as err:
        net(torch.zeros((1, in_channels) + (1,) * spatial_dims))
    return int(re.search(r"multiple of (\d+)", str(err.value)).group(1))


@pytest.mark.parametrize("name, kwargs, expected", PAPER_COUNTS + DOCUMENTED_COUNTS + MODEL_CARD_COUNTS)
def test_parameter_count(name, kwargs, expected):
    net = create_net(name, **{"spatial_dims": 2, "in_channels": 3, "out_channels": 1, **kwargs})
    assert num_params(net) == expected


def separable_conv_params(channels: int, spatial_dims: int) -> int:
    """Depthwise 3^d conv and pointwise 1x1 conv at one width, both with bias."""
    return (channels * 3**spatial_dims + channels) + (channels * channels + channels)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_thin_variants_differ_as_the_paper_says(spatial_dims):
    """The separable thin U-Net has only depthwise k x k kernels (every other conv is 1x1), the student adds exactly
    one separable conv to the deepest encoder block, and all three expose the same distillation feature maps."""
    kwargs = {"spatial_dims": spatial_dims, "in_channels": 1, "out_channels": 1, "channels": 16, "depth": 3}
    regular, separable, student = (create_net(n, **kwargs) for n in THIN_NETS)
    convs = [m for m in separable.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.Conv3d)]
    assert all(m.groups == m.in_channels or set(m.kernel_size) == {1} for m in convs)
    assert not any(m.groups > 1 for m in regular.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.Conv3d))
    assert num_params(student) - num_params(separable) == separable_conv_params(16, spatial_dims)
    assert [len(b) for b in student.encoder] == [3, 3, 4] and [len(b) for b in separable.encoder] == [3, 3, 3]
    assert num_params(separable) < num_params(regular) / 5
    assert regular.feature_layers == separable.feature_layers == student.feature_layers
    assert student.feature_layers == [
        "encoder.0",
        "encoder.1",
        "encoder.2",
        "bottom",
        "decoder.0",
        "decoder.1",
        "decoder.2",
    ]


def test_every_registered_net_has_a_size_multiple():
    """A new net must be added to SIZE_MULTIPLES, so the size tests below cover it instead of skipping it."""
    assert sorted(SIZE_MULTIPLES) == list_nets()


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
    assert isinstance(net, UShapedNet)
    multiple = size_multiple(net, spatial_dims, 2)
    assert net.size_multiple == (multiple,) * spatial_dims and multiple == SIZE_MULTIPLES[name]
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
    config = {
        "network_def": {
            "_target_": f"lightweight_nets.nets.{cls.__name__}",
            "spatial_dims": spatial_dims,
            "in_channels": 1,
            "out_channels": 2,
            **kwargs,
        }
    }
    net = ConfigParser(config).get_parsed_content("network_def")
    assert type(net) is cls
    spatial = (multiple,) * (spatial_dims - 1) + (2 * multiple,)
    with torch.no_grad():
        assert net.eval()(torch.zeros(1, 1, *spatial)).shape == (1, 2, *spatial)


# (constructor, bad keyword arguments, the argument the error must name)
NET_CLASSES = (FlatUNet, LiUNet, SDUNet, ThinUNet, ULite)
BAD_ARGUMENTS = [
    *((cls, {"spatial_dims": sd}, "spatial_dims") for cls in NET_CLASSES for sd in (1, 4)),
    *((cls, {"in_channels": 0}, "in_channels") for cls in NET_CLASSES),
    *((cls, {"out_channels": 0}, "out_channels") for cls in NET_CLASSES),
    (FlatUNet, {"channels": 0}, "channels"),
    (FlatUNet, {"channels": (32, 64)}, "channels"),
    (FlatUNet, {"depth": 0}, "depth"),
    (FlatUNet, {"channel_multiplier": 0}, "channel_multiplier"),
    (FlatUNet, {"upsample_mode": "cubic"}, "upsample_mode"),
    (ThinUNet, {"channels": -8}, "channels"),
    (ThinUNet, {"channels": 32.0}, "channels"),
    (ThinUNet, {"depth": 0}, "depth"),
    (ThinUNet, {"conv_kind": "grouped"}, "conv_kind"),
    (ThinUNet, {"conv_kind": "dilated"}, "conv_kind"),
    (LiUNet, {"channels": ()}, "channels"),
    (LiUNet, {"channels": (64, 0)}, "channels"),
    (LiUNet, {"channels": 64}, "channels"),
    (LiUNet, {"conv_kinds": ("regular",)}, "conv_kinds"),
    (LiUNet, {"conv_kinds": ("regular", "dilated")}, "conv_kinds"),
    (LiUNet, {"conv_kinds": "regular"}, "conv_kinds"),
    (LiUNet, {"conv_kinds": ("grouped", "grouped"), "group_size": 0}, "group_size"),
    (LiUNet, {"conv_kinds": ("grouped", "grouped"), "group_size": 3}, "group_size"),
    (LiUNet, {"conv_kinds": ("grouped", "regular"), "group_size": 4, "in_channels": 5}, "group_size"),
    (LiUNet, {"dropout": 1.5}, "dropout"),
    (SDUNet, {"channels": (64,)}, "channels"),
    (SDUNet, {"channels": (64, "128")}, "channels"),
    (SDUNet, {"num_groups": 0}, "num_groups"),
    (SDUNet, {"dropout": -0.1}, "dropout"),
    (ULite, {"channels": (16,)}, "channels"),
    (ULite, {"channels": (4, 2)}, "channels"),
    (ULite, {"kernel_size": 4}, "kernel_size"),
    (ULite, {"bottleneck_kernel_size": 0}, "bottleneck_kernel_size"),
    (ULite, {"dilations": ()}, "dilations"),
    (GroupedPointwiseConv, {"spatial_dims": 2, "in_channels": 64, "out_channels": 8, "group_size": 3}, "group_size"),
    (GroupedPointwiseConv, {"spatial_dims": 2, "in_channels": 64, "out_channels": 8, "group_size": 0}, "group_size"),
    (AxialDepthwiseConv, {"spatial_dims": 2, "channels": 8, "kernel_size": 6}, "kernel_size"),
    (AxialDepthwiseConv, {"spatial_dims": 2, "channels": 8, "dilation": 0}, "dilation"),
    (DoubleConv, {"spatial_dims": 2, "in_channels": 1, "out_channels": 8, "conv_kinds": ("regular",)}, "conv_kinds"),
    (lambda **kw: make_conv(**kw), {"kind": "dilated", "spatial_dims": 2, "in_channels": 1, "out_channels": 8}, "kind"),
    (
        lambda **kw: make_conv(**kw),
        {"kind": "grouped", "spatial_dims": 2, "in_channels": 1, "out_channels": 8},
        "group_size",
    ),
]


@pytest.mark.parametrize("cls, kwargs, argument", BAD_ARGUMENTS)
def test_bad_constructor_argument(cls, kwargs, argument):
    """A bad argument fails at construction with one line naming it and its value, not as an IndexError deep in."""
    with pytest.raises(ValueError, match=rf"\b{argument}=") as err:
        cls(**kwargs)
    assert "\n" not in str(err.value)
    if argument in kwargs:
        assert f"{argument}={kwargs[argument]!r}" in str(err.value)


def test_bad_argument_through_a_bundle_config():
    """MONAI wraps the error; the cause still names the argument."""
    config = {"network_def": {"_target_": "lightweight_nets.create_net", "name": "sd_unet", "channels": [64]}}
    with pytest.raises(RuntimeError) as err:
        ConfigParser(config).get_parsed_content("network_def")
    assert isinstance(err.value.__cause__, ValueError)
    assert str(err.value.__cause__).startswith("SDUNet: channels=[64] is not allowed")


FIXED_ARGUMENTS = [
    ("unet", "conv_kinds", ("grouped", "grouped")),
    ("light_unet", "conv_kinds", ("regular", "regular")),
    ("lighter_unet", "conv_kinds", ("regular", "regular")),
    ("flat_unet", "channel_multiplier", 2),
    ("doubling_unet", "channel_multiplier", 1),
    ("thin_unet", "conv_kind", "separable"),
    ("thin_unet", "deep_extra_conv", True),
    ("thin_separable_unet", "conv_kind", "regular"),
    ("thin_separable_student", "deep_extra_conv", False),
    ("thin_separable_student", "conv_kind", "separable"),  # even the same value: the name already says it
]


@pytest.mark.parametrize("name, argument, value", FIXED_ARGUMENTS)
def test_registry_keeps_the_fixed_arguments(name, argument, value):
    with pytest.raises(ValueError, match=rf"'{name}' is defined by {argument}=.*cannot be overridden"):
        create_net(name, **{argument: value})


def test_registry_defaults_can_be_overridden():
    assert num_params(create_net("lighter_unet", group_size=8, in_channels=3)) == 2_318_293
    assert create_net("thin_unet", channels=8, depth=2).depth == 2


def test_registry_unknown_name_lists_the_known_ones():
    with pytest.raises(KeyError, match="unknown network 'thin_student'; known: .*thin_separable_student"):
        create_net("thin_student")


def test_registry_refuses_bad_registrations(monkeypatch):
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    with pytest.raises(ValueError, match="'unet' is already registered"):
        register_net("unet")(LiUNet)
    with pytest.raises(ValueError, match="depth given both as fixed and as default"):
        register_net("tiny_thin", fixed={"depth": 2}, depth=3)
    with pytest.raises(ValueError, match="ThinUNet takes no argument.* conv_kinds"):
        register_net("tiny_thin", fixed={"conv_kinds": ("regular", "regular")})(ThinUNet)
    assert "tiny_thin" not in list_nets()
    register_net("tiny_thin", fixed={"depth": 2}, channels=4)(ThinUNet)
    net = create_net("tiny_thin", channels=6)
    assert (net.depth, net.head.in_channels) == (2, 6)
    with pytest.raises(ValueError, match="'tiny_thin' is defined by depth=2"):
        create_net("tiny_thin", depth=3)


@pytest.mark.parametrize(
    "pattern, expected",
    [
        ("", None),
        ("thin_*", THIN_NETS),
        (
            "*unet",
            [
                "doubling_unet",
                "flat_unet",
                "light_unet",
                "lighter_unet",
                "sd_unet",
                "thin_separable_unet",
                "thin_unet",
                "unet",
            ],
        ),
        ("unet", ["unet"]),
        ("*light*_unet", ["light_unet", "lighter_unet"]),
        ("u?ite", ["ulite"]),
        ("no_such_*", []),
    ],
)
def test_list_nets_filter(pattern, expected):
    names = list_nets(pattern)
    assert names == (sorted(SIZE_MULTIPLES) if expected is None else sorted(expected))


IN_PLANE_FIRST = [[2, 2, 1], [2, 2, 2], [2, 2, 2]]


@pytest.mark.parametrize("name", ["thin_unet", "flat_unet"])
def test_in_plane_only_pooling_keeps_the_slice_axis_at_the_first_level(name):
    """pool_factors [2, 2, 1] first: the size rule is 8 x 8 x 4, the output has the input's size, the weights are
    the default net's (pooling has none), and the first decoder-side skip is joined at full slice resolution."""
    kwargs = {"spatial_dims": 3, "in_channels": 1, "out_channels": 2, "channels": 4, "depth": 3}
    torch.manual_seed(0)
    default = create_net(name, **kwargs).eval()
    aniso = create_net(name, **kwargs, pool_factors=IN_PLANE_FIRST).eval()
    assert aniso.size_multiple == (8, 8, 4) and default.size_multiple == (8, 8, 8)
    assert default.pool_factors == ((2, 2, 2),) * 3
    assert aniso.load_state_dict(default.state_dict(), strict=True)  # same keys and shapes
    shapes = []
    aniso.encoder[1].register_forward_hook(lambda module, args, out: shapes.append(tuple(out.shape[2:])))
    with torch.no_grad():
        out = aniso(torch.randn(1, 1, 16, 24, 4))
    assert out.shape == (1, 2, 16, 24, 4)
    assert shapes == [(8, 12, 4)]  # level 1 sees the slice axis unpooled
    with pytest.raises(ValueError, match=r"multiple of \(8, 8, 4\) per axis"):
        aniso(torch.zeros(1, 1, 16, 16, 6))
    with pytest.raises(ValueError, match="multiple of 8"):
        default(torch.zeros(1, 1, 16, 16, 4))


@pytest.mark.parametrize(
    "pool_factors",
    [[[2, 2, 1], [2, 2, 2]], [[2, 2], [2, 2], [2, 2]], [[2, 2, 0], [2, 2, 2], [2, 2, 2]], [[2, 2, True]] * 3, "222"],
)
def test_bad_pool_factors_are_one_line_errors(pool_factors):
    with pytest.raises(ValueError, match=r"^ThinUNet: pool_factors=.* 3 levels of 3 integers >= 1 \(one per axis\)$"):
        create_net("thin_unet", spatial_dims=3, depth=3, pool_factors=pool_factors)
