"""The zoo profiler: counts checked against hand-computed values, the command's table and Markdown."""

import pytest
import torch

from lightweight_nets import create_net
from lightweight_nets.profile import count_flops, count_parameters, main, profile_net, weight_bytes


def test_counts_of_one_convolution():
    conv = torch.nn.Conv2d(1, 2, 3, padding=1)
    assert count_parameters(conv) == 1 * 2 * 9 + 2
    # 2 FLOPs (multiply + add) per kernel tap, per output channel, per output pixel
    assert count_flops(conv, torch.rand(1, 1, 8, 8)) == 2 * 9 * 2 * 8 * 8
    assert weight_bytes(conv) > (1 * 2 * 9 + 2) * 4  # float32 values plus the pickle around them


def test_profile_of_a_real_net_is_sane():
    profile = profile_net("thin_separable_student", (1, 1, 64, 64), threads=1, runs=2, warmup=1)
    net = create_net("thin_separable_student")
    assert profile.parameters == sum(p.numel() for p in net.parameters())
    assert profile.gflops > 0
    assert profile.weight_mib * 1024 * 1024 >= 4 * profile.parameters
    assert profile.latency_ms > 0 and profile.fps == pytest.approx(1000 / profile.latency_ms)
    assert profile.peak_rss_mib > profile.inference_rss_mib > 0


def test_command_prints_and_writes_the_table(tmp_path, capsys):
    markdown = tmp_path / "docs" / "zoo.md"
    main(["--nets", "thin_separable_student", "--size", "64", "64", "--runs", "2", "--warmup", "1",
          "--threads", "1", "--markdown", str(markdown)])
    assert "thin_separable_student" in capsys.readouterr().out
    text = markdown.read_text()
    parameters = count_parameters(create_net("thin_separable_student"))
    assert "| net | parameters | GFLOPs |" in text and f"| thin_separable_student | {parameters:,} |" in text
    assert [p.name for p in markdown.parent.iterdir()] == ["zoo.md"]
    with pytest.raises(SystemExit):
        main(["--nets", "no_such_net"])
