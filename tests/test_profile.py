"""The zoo profiler: counts checked against hand-computed values and the model cards, the command's table and
Markdown."""

import pytest
import torch

from lightweight_nets import create_net
from lightweight_nets.profile import count_flops, count_parameters, main, profile_net, weight_bytes

STUDENT_PARAMETERS = 44_779  # the fetal_head_us / breast_lesion_us model cards


def separable_flops(cin: int, cout: int, pixels: int) -> int:
    """FLOPs of a 3x3 depthwise + 1x1 pointwise conv on ``pixels`` output pixels (a multiply-add counts as 2; the
    counter leaves biases out)."""
    return 2 * 9 * cin * pixels + 2 * cin * cout * pixels


def student_flops(side: int, channels: int = 32, depth: int = 6) -> int:
    """FLOPs of thin_separable_student (1 input, 1 output channel) on a ``side`` x ``side`` image, by hand: two
    separable convs per encoder level (three in the deepest), two in the bottom, two per decoder level on the skip
    concatenated with the up-sampled map, and the 1x1 head."""
    pixels = [(side // 2**level) ** 2 for level in range(depth + 1)]
    flops = separable_flops(1, channels, pixels[0]) + separable_flops(channels, channels, pixels[0])
    flops += sum(2 * separable_flops(channels, channels, pixels[level]) for level in range(1, depth))
    flops += separable_flops(channels, channels, pixels[depth - 1])  # the student's extra conv
    flops += 2 * separable_flops(channels, channels, pixels[depth])
    flops += sum(
        separable_flops(2 * channels, channels, p) + separable_flops(channels, channels, p) for p in pixels[:depth]
    )
    return flops + 2 * channels * pixels[0]


def test_counts_of_one_convolution():
    conv = torch.nn.Conv2d(1, 2, 3, padding=1)
    assert count_parameters(conv) == 1 * 2 * 9 + 2
    # 2 FLOPs (multiply + add) per kernel tap, per output channel, per output pixel
    assert count_flops(conv, torch.rand(1, 1, 8, 8)) == 2 * 9 * 2 * 8 * 8
    assert weight_bytes(conv) > (1 * 2 * 9 + 2) * 4  # float32 values plus the pickle around them


def test_profile_of_a_real_net_is_sane():
    profile = profile_net("thin_separable_student", (1, 1, 64, 64), threads=1, runs=2, warmup=1)
    assert profile.parameters == STUDENT_PARAMETERS
    assert round(profile.gflops * 1e9) == student_flops(64) == 61_501_056
    # float32 weights plus BatchNorm statistics and the pickle around them, well under twice the weights
    assert 4 * STUDENT_PARAMETERS <= profile.weight_mib * 1024 * 1024 < 8 * STUDENT_PARAMETERS
    assert profile.latency_ms > 0 and profile.fps == pytest.approx(1000 / profile.latency_ms)
    assert profile.peak_rss_mib > profile.inference_rss_mib > 0


def test_command_prints_and_writes_the_table(tmp_path, capsys):
    markdown = tmp_path / "docs" / "zoo.md"
    main(
        [
            "--nets",
            "thin_separable_student",
            "--size",
            "64",
            "64",
            "--runs",
            "2",
            "--warmup",
            "1",
            "--threads",
            "1",
            "--markdown",
            str(markdown),
        ]
    )
    assert "thin_separable_student" in capsys.readouterr().out
    text = markdown.read_text()
    assert "| net | parameters | GFLOPs |" in text and "| thin_separable_student | 44,779 | 0.062 |" in text
    assert [p.name for p in markdown.parent.iterdir()] == ["zoo.md"]
    with pytest.raises(SystemExit):
        main(["--nets", "no_such_net"])


def thin_unet_3d_flops(shape: tuple[int, int, int], pool_factors: list[list[int]], channels: int) -> int:
    """FLOPs of a 3D thin_unet (regular 3x3x3 convs, 1 input and 1 output channel) by hand, from the voxels each
    level has after its pooling: two convs per encoder level, two in the bottom, two per decoder level (the first on
    the skip concatenated with the up-sampled map) and the 1x1x1 head."""
    voxels = [shape[0] * shape[1] * shape[2]]
    for factors in pool_factors:
        voxels.append(voxels[-1] // (factors[0] * factors[1] * factors[2]))

    def conv(cin: int, voxel_count: int) -> int:
        return 2 * 27 * cin * channels * voxel_count

    flops = conv(1, voxels[0]) + conv(channels, voxels[0])
    flops += sum(2 * conv(channels, v) for v in voxels[1:])  # deeper encoder levels and the bottom
    flops += sum(conv(2 * channels, v) + conv(channels, v) for v in voxels[:-1])
    return flops + 2 * channels * voxels[0]


@pytest.mark.parametrize("pool_factors", [[[2, 2, 2]] * 3, [[2, 2, 1], [2, 2, 2], [2, 2, 2]]])
def test_flops_count_the_levels_that_in_plane_only_pooling_keeps_larger(pool_factors):
    shape = (32, 32, 16)
    net = create_net(
        "thin_unet", spatial_dims=3, in_channels=1, out_channels=1, channels=4, depth=3, pool_factors=pool_factors
    ).eval()
    assert count_flops(net, torch.rand(1, 1, *shape)) == thin_unet_3d_flops(shape, pool_factors, 4)
