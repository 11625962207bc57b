"""Exporting a network for serving: TorchScript (traced, frozen), ONNX (torch.export-based, dynamic axes), and
int8 quantisation of an ONNX model with ONNX Runtime. The files load through
:func:`lightweight_nets.inference.predictors.load_predictor`."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from torch.nn.utils import parametrize

from lightweight_nets.io.files import atomic_path

__all__ = ["ONNX_OPSET", "export_torchscript", "export_onnx", "quantize_int8"]

# 21: GroupNorm exports as GroupNormalization; as Reshape + InstanceNormalization (older opsets) ONNX Runtime
# is ~1e-4 off PyTorch on SD-UNet.
ONNX_OPSET = 21


def _inference_copy(net: nn.Module) -> nn.Module:
    """An eval-mode copy of ``net`` with every parametrisation (weight standardisation) baked into a plain weight,
    so the exported graph holds exactly the weights PyTorch computes instead of recomputing them."""
    net = copy.deepcopy(net).eval()
    for module in [m for m in net.modules() if parametrize.is_parametrized(m)]:
        baked = {name: getattr(module, name).detach().clone() for name in module.parametrizations}
        # The copy shares its generated Parametrized* class with the original, and remove_parametrizations would
        # edit that class (breaking the original); so put this copy back on its plain class instead.
        module.__class__ = module.__class__.__bases__[0]
        del module.parametrizations
        for name, value in baked.items():
            module.register_parameter(name, nn.Parameter(value, requires_grad=False))
    return net


def export_torchscript(net: nn.Module, path: str | Path, example_input: torch.Tensor) -> Path:
    """Trace ``net`` (eval mode, parametrisations baked) on ``example_input``, freeze it and save it atomically.
    The saved module runs any batch and spatial size the net accepts;
    :func:`~lightweight_nets.inference.predictors.load_predictor` applies ``optimize_for_inference`` on load, since
    a module optimised that way cannot be saved and loaded back."""
    path = Path(path)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # the nets' Python-side input checks
        frozen = torch.jit.freeze(torch.jit.trace(_inference_copy(net), example_input))
    with atomic_path(path) as tmp:
        torch.jit.save(frozen, str(tmp))
    return path


def export_onnx(net: nn.Module, path: str | Path, example_input: torch.Tensor) -> Path:
    """Export ``net`` (eval mode, parametrisations baked) with the torch.export-based ONNX exporter, batch and
    spatial axes dynamic (the net's own size rule, e.g. multiples of 2**depth, still applies), weights inside the
    one file, written atomically.

    The trace runs at twice the example's spatial size, which keeps the same size rule: at the smallest valid
    size the deepest map is one voxel, and torch.export cannot then prove that doubling it gives the skip's size
    (the 64^3 input of a 6-level 3D net fails to export)."""
    path = Path(path)
    dynamic = {axis: torch.export.Dim.DYNAMIC for axis in [0, *range(2, example_input.dim())]}
    trace_input = torch.zeros(*example_input.shape[:2], *[2 * size for size in example_input.shape[2:]])
    with atomic_path(path) as tmp:
        torch.onnx.export(
            _inference_copy(net),
            (trace_input,),
            str(tmp),
            dynamo=True,
            external_data=False,
            opset_version=ONNX_OPSET,
            verbose=False,
            input_names=["image"],
            output_names=["logits"],
            dynamic_shapes=(dynamic,),
        )
    return path


class _BatchReader:
    """ONNX Runtime calibration reader over an iterable of ``(N, C, *spatial)`` batches."""

    def __init__(self, input_name: str, batches: Iterable[torch.Tensor | np.ndarray]):
        self._feeds = iter([{input_name: np.asarray(batch, dtype=np.float32)} for batch in batches])

    def get_next(self) -> dict | None:
        return next(self._feeds, None)


def quantize_int8(
    onnx_path: str | Path, out_path: str | Path, calibration_batches: Iterable[torch.Tensor | np.ndarray] | None = None
) -> Path:
    """Quantise an ONNX model to int8 with ONNX Runtime, written atomically to ``out_path``.

    With ``calibration_batches`` (representative inputs): static QDQ quantisation, int8 per-channel weights and
    uint8 activations whose ranges come from the batches. Without: dynamic quantisation (weights only, activation
    ranges computed per run), which needs no data but is usually slower for convolutions.
    """
    import onnxruntime as ort
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    onnx_path, out_path = Path(onnx_path), Path(out_path)
    if not onnx_path.is_file():
        raise FileNotFoundError(f"{onnx_path}: no such ONNX model")
    with atomic_path(out_path) as tmp:
        # ONNX shape inference + graph clean-up, as ORT recommends (symbolic inference cannot follow dynamic sizes)
        quant_pre_process(str(onnx_path), str(tmp), skip_symbolic_shape=True)
        if calibration_batches is None:
            quantize_dynamic(str(tmp), str(tmp), weight_type=QuantType.QUInt8)
        else:
            input_name = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"]).get_inputs()[0].name
            quantize_static(
                str(tmp),
                str(tmp),
                _BatchReader(input_name, calibration_batches),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
            )
    return out_path
