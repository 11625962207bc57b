"""CPU benchmarks of the network zoo across inference backends: ``python -m benchmarks`` (``make bench``).

Beside it: ``python -m benchmarks.training [--zoo3d]`` (training step per layout and precision, 2D or the 3D
zoo), ``python -m benchmarks.empty_frames`` (the "nothing here" rule), ``python -m benchmarks.peers`` (our
fetal-head nets against the peers users would pick instead) and ``python -m benchmarks.hc_outline`` (where the
sonographer's ellipse lies in the HC18 masks). They are developer tools: they measure the repository
checkout's samples/ and its bundles' training outputs (teacher, ablation weights, validation splits), which an
installed copy does not hold.
"""

import os
import platform
from datetime import UTC, datetime
from pathlib import Path

import onnxruntime
import torch

__all__ = ["NotACheckoutError", "checkout", "machine_line"]

_REPOSITORY = Path(__file__).resolve().parents[1]


class NotACheckoutError(FileNotFoundError):
    """What a benchmark measures is not there: it runs from an installed copy, not from a checkout."""


def checkout(*parts: str) -> Path:
    """The path ``parts`` inside the repository checkout the benchmarks run from; a missing one raises
    :class:`NotACheckoutError` naming it."""
    path = _REPOSITORY.joinpath(*parts)
    if not path.exists():
        raise NotACheckoutError(
            f"{path}: not found; the benchmarks run from a checkout of lightweight-seg "
            "(git clone, then make venv), not from an installed copy"
        )
    return path


def machine_line(started: datetime) -> str:
    """The line that names the machine and the libraries of a run started at ``started`` (and its load now)."""
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    minutes = (datetime.now(UTC) - started).total_seconds() / 60
    return (
        f"{started:%Y-%m-%d %H:%M} UTC ({minutes:.0f} min), {cpu}, {os.cpu_count()} cores, "
        f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}; load average at the end {load} "
        "(a virtual machine: other work on the same host slows every backend alike and adds noise, so compare "
        "ratios within this run)."
    )
