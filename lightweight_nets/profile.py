"""Size and CPU cost of every network in the zoo: ``python -m lightweight_nets.profile [--markdown docs/zoo.md]``.

For each net and input size: parameters, FLOPs (``torch.utils.flop_counter.FlopCounterMode``; a multiply-add
counts as 2), weight file size (the state dict as ``torch.save`` writes it), eager CPU latency (median after
warm-up, fixed thread count) and peak memory. Peak memory is the peak resident set size (VmHWM) of a fresh Python
process that builds the net and runs it once, its peak reset after the imports; "inference RSS" is that peak minus
the RSS just before building the net, i.e. what the weights, activations and kernel workspaces add.
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from lightweight_nets.io.files import atomic_path
from lightweight_nets.registry import create_net, list_nets

__all__ = [
    "NetProfile",
    "build_net",
    "count_parameters",
    "count_flops",
    "weight_bytes",
    "latencies_ms",
    "peak_rss_mib",
    "memory_kib",
    "profile_net",
    "markdown_table",
    "main",
]

MIB = 1024 * 1024


@dataclass
class NetProfile:
    """One row of the zoo table."""

    name: str
    input_shape: tuple[int, ...]
    threads: int
    parameters: int
    gflops: float
    weight_mib: float
    latency_ms: float
    peak_rss_mib: float
    inference_rss_mib: float

    @property
    def fps(self) -> float:
        return 1000.0 * self.input_shape[0] / self.latency_ms


def build_net(name: str, input_shape: Sequence[int], out_channels: int = 1) -> nn.Module:
    """The registered net ``name`` for inputs of ``input_shape`` (N, C, *spatial), in eval mode."""
    return create_net(
        name, spatial_dims=len(input_shape) - 2, in_channels=input_shape[1], out_channels=out_channels
    ).eval()


def count_parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def count_flops(net: nn.Module, batch: torch.Tensor) -> int:
    """Floating-point operations of one forward pass, as FlopCounterMode counts them (convs, matmuls)."""
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        net(batch)
    return counter.get_total_flops()


def weight_bytes(net: nn.Module) -> int:
    """Size of the state dict as ``torch.save`` writes it (what ships as model.pt)."""
    buffer = io.BytesIO()
    torch.save(net.state_dict(), buffer)
    return buffer.getbuffer().nbytes


def latencies_ms(run: Callable[[], object], runs: int, warmup: int) -> np.ndarray:
    """Wall-clock milliseconds of ``runs`` calls of ``run`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        run()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return 1000.0 * np.array(times)


def peak_rss_mib(
    name: str, input_shape: Sequence[int], threads: int, model_path: str | Path | None = None, out_channels: int = 1
) -> tuple[float, float]:
    """(peak RSS, peak RSS minus the RSS before loading) in MiB of a fresh process that, after its imports, builds
    net ``name``, loads ``model_path`` through :func:`~lightweight_nets.inference.predictors.load_predictor` when
    given (eager otherwise) and predicts one ``input_shape`` batch on ``threads`` threads. Linux only: the child
    resets its peak (VmHWM) through /proc/self/clear_refs once its imports are done, so import-time peaks do not
    count."""
    request = json.dumps([name, list(input_shape), threads, str(model_path) if model_path else None, out_channels])
    code = "import json, sys; import lightweight_nets.profile as p; p._report_peak_rss(*json.loads(sys.argv[1]))"
    result = subprocess.run([sys.executable, "-c", code, request], capture_output=True, text=True, check=False)
    if result.returncode:
        raise RuntimeError(f"peak-RSS child for {name} failed: {(result.stderr.strip().splitlines() or ['?'])[-1]}")
    peak, before = json.loads(result.stdout.strip().splitlines()[-1])
    return peak, peak - before


def memory_kib(field: str) -> int:
    """A Vm* field of /proc/self/status, in KiB (VmHWM: this process's peak resident set, which, unlike
    getrusage's ru_maxrss, does not carry the parent's peak over an exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status: no {field} field")


def _report_peak_rss(
    name: str, input_shape: list[int], threads: int, model_path: str | None, out_channels: int
) -> None:
    """Child side of :func:`peak_rss_mib`: prints ``[peak, before]`` in MiB."""
    from lightweight_nets.inference.predictors import TorchPredictor, load_predictor

    torch.set_num_threads(threads)
    batch = torch.rand(*input_shape)
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    before = memory_kib("VmRSS")
    net = build_net(name, input_shape, out_channels)
    predictor = load_predictor(model_path, net, threads) if model_path else TorchPredictor(net, "torch")
    predictor.predict(batch)
    print(json.dumps([memory_kib("VmHWM") / 1024, before / 1024]))


def profile_net(
    name: str,
    input_shape: Sequence[int] = (1, 1, 256, 256),
    threads: int = 2,
    runs: int = 20,
    warmup: int = 5,
    out_channels: int = 1,
) -> NetProfile:
    """Profile one registered net (eager PyTorch, random weights) on ``input_shape``."""
    torch.set_num_threads(threads)
    net = build_net(name, input_shape, out_channels)
    batch = torch.rand(*input_shape)
    with torch.no_grad():
        latency = float(np.median(latencies_ms(lambda: net(batch), runs, warmup)))
    peak, inference = peak_rss_mib(name, input_shape, threads, out_channels=out_channels)
    return NetProfile(
        name=name,
        input_shape=tuple(input_shape),
        threads=threads,
        parameters=count_parameters(net),
        gflops=count_flops(net, batch) / 1e9,
        weight_mib=weight_bytes(net) / MIB,
        latency_ms=latency,
        peak_rss_mib=peak,
        inference_rss_mib=inference,
    )


_COLUMNS = [
    "net",
    "parameters",
    "GFLOPs",
    "weights (MiB)",
    "latency (ms)",
    "fps",
    "peak RSS (MiB)",
    "inference RSS (MiB)",
]


def _row(p: NetProfile) -> list[str]:
    return [
        p.name,
        f"{p.parameters:,}",
        f"{p.gflops:.3f}",
        f"{p.weight_mib:.2f}",
        f"{p.latency_ms:.1f}",
        f"{p.fps:.1f}",
        f"{p.peak_rss_mib:.0f}",
        f"{p.inference_rss_mib:.0f}",
    ]


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub Markdown table, numbers right-aligned."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join([" --- "] + [" ---: "] * (len(header) - 1)) + "|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows]) + "\n"


def _text_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows)]
    return "\n".join("  ".join(cell.rjust(w) for cell, w in zip(row, widths)) for row in [header, *rows])


def _zoo_markdown(profiles: list[NetProfile], args: argparse.Namespace) -> str:
    shape = "x".join(map(str, profiles[0].input_shape))
    return (
        "# Network zoo: size and CPU cost\n\n"
        f"Generated by `python -m lightweight_nets.profile --markdown {args.markdown}` on {date.today()} "
        f"({platform.processor() or platform.machine()}, torch {torch.__version__}). Input {shape}, "
        f"in_channels={args.in_channels}, out_channels={args.out_channels}, random weights, PyTorch eager, "
        f"{args.threads} thread(s), latency = median of {args.runs} runs after {args.warmup} warm-up runs.\n\n"
        "- GFLOPs: `torch.utils.flop_counter.FlopCounterMode`, one forward pass, a multiply-add counted as 2 FLOPs.\n"
        "- weights: the state dict as `torch.save` writes it (model.pt).\n"
        "- peak RSS: peak resident set (VmHWM, reset after the imports) of a fresh Python process that builds the net "
        "and predicts once; inference RSS: that peak minus the RSS just before building the net (weights, "
        "activations, kernel workspaces).\n"
        "- The machine's cores may be shared with other work, so latencies are indicative; "
        "`python -m benchmarks` compares backends side by side in one run (docs/benchmarks.md).\n\n"
        + markdown_table(_COLUMNS, [_row(p) for p in profiles])
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="lightweight-nets-profile", description=__doc__.splitlines()[0])
    parser.add_argument("--nets", nargs="+", default=None, help="registered net names (default: all)")
    parser.add_argument(
        "--size",
        nargs="+",
        type=int,
        default=[256, 256],
        help="spatial size, 2 (H W) or 3 (D H W) numbers (default: 256 256)",
    )
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--in-channels", type=int, default=1)
    parser.add_argument("--out-channels", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads for the latency (default: 2)")
    parser.add_argument("--runs", type=int, default=20, help="timed runs per net (default: 20)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed runs first (default: 5)")
    parser.add_argument("--markdown", type=Path, default=None, help="also write the table as Markdown here")
    args = parser.parse_args(argv)
    if len(args.size) not in (2, 3):
        parser.error(f"--size takes 2 or 3 numbers, got {len(args.size)}")
    names = args.nets or list_nets()
    unknown = sorted(set(names) - set(list_nets()))
    if unknown:
        parser.error(f"unknown net(s) {', '.join(unknown)}; known: {', '.join(list_nets())}")
    shape = (args.batch, args.in_channels, *args.size)
    profiles = []
    for name in names:
        print(f"profiling {name} on {'x'.join(map(str, shape))} ...", file=sys.stderr, flush=True)
        profiles.append(profile_net(name, shape, args.threads, args.runs, args.warmup, args.out_channels))
    print(_text_table(_COLUMNS, [_row(p) for p in profiles]))
    if args.markdown:
        with atomic_path(args.markdown) as tmp:
            tmp.write_text(_zoo_markdown(profiles, args))
        print(f"wrote {args.markdown}", file=sys.stderr)


if __name__ == "__main__":
    main()
