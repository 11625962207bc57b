"""CPU backends the benchmarks measure besides the served ones (:mod:`lightweight_nets.inference.predictors`):
PyTorch eager under bf16 autocast in the channels-last layout (AMX-BF16 CPUs run it several times faster than
fp32), and OpenVINO on the exported ONNX model. Both follow the :class:`~lightweight_nets.inference.predictors.
Predictor` interface, so the benchmarks time them like the served backends; neither is served.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from lightweight_nets.inference.predictors import flush_subnormals

__all__ = ["Bf16ChannelsLastPredictor", "OpenVinoPredictor", "outputs_match"]


class Bf16ChannelsLastPredictor:
    """A copy of ``net`` in the channels-last layout, run under ``torch.autocast('cpu', dtype=torch.bfloat16)``;
    logits come back as float32 in the default layout; subnormals flushed, as in the served predictors."""

    backend = "torch-bf16"

    def __init__(self, net: nn.Module):
        self.module = copy.deepcopy(net).eval().to(memory_format=torch.channels_last)

    def predict(self, batch: torch.Tensor | np.ndarray) -> torch.Tensor:
        batch = torch.as_tensor(batch, dtype=torch.float32).contiguous(memory_format=torch.channels_last)
        flush_subnormals()
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            return self.module(batch).float().contiguous()


class OpenVinoPredictor:
    """An ONNX model compiled by OpenVINO for the CPU at one input shape, fp32 (OpenVINO would otherwise pick bf16
    on an AMX CPU), latency mode, ``threads`` inference threads."""

    backend = "openvino"

    def __init__(self, model_path: str | Path, shape: tuple[int, ...], threads: int):
        import openvino

        core = openvino.Core()
        model = core.read_model(str(model_path))
        model.reshape(list(shape))
        self.compiled = core.compile_model(
            model,
            "CPU",
            {"INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"},
        )

    def predict(self, batch: torch.Tensor | np.ndarray) -> torch.Tensor:
        array = np.ascontiguousarray(torch.as_tensor(batch, dtype=torch.float32).numpy())
        return torch.from_numpy(np.array(self.compiled(array)[0]))


def outputs_match(what: str, reference: torch.Tensor, predicted: torch.Tensor, atol: float = 1e-3) -> None:
    """Raise ``ValueError`` naming ``what`` where ``predicted`` differs from ``reference`` by more than ``atol``
    anywhere (or has another shape)."""
    if predicted.shape != reference.shape:
        raise ValueError(f"{what}: output shape {tuple(predicted.shape)}, PyTorch's is {tuple(reference.shape)}")
    difference = float((predicted - reference).abs().max())
    if not difference <= atol:  # NaN fails too
        raise ValueError(f"{what}: output differs from PyTorch's by up to {difference:.3g} (allowed {atol:g})")
