"""One inference interface, ``predict(batch) -> logits``, over three CPU backends.

PyTorch eager (a ``.pt`` state dict plus the network), TorchScript (``.ts``: traced, frozen, optimised for
inference) and ONNX Runtime (``.onnx``, optionally int8-quantised) all sit behind :class:`Predictor`, so callers
pick a backend by file or by config and never change code. The activation that turns logits into labels is the
bundle's, in :class:`lightweight_nets.transforms.Postprocessing`; which file of a bundle is loaded is decided by
:meth:`lightweight_nets.bundle.BundleSpec.load_predictor`.
"""

from __future__ import annotations

import copy
import os
import warnings
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Protocol

import numpy as np
import onnxruntime as ort
import torch
import torch.nn as nn
from torch.nn.utils import parametrize

from lightweight_nets.io import atomic_path

__all__ = [
    "BACKENDS",
    "MODEL_SUFFIXES",
    "Predictor",
    "TorchPredictor",
    "OnnxRuntimePredictor",
    "export_torchscript",
    "export_onnx",
    "quantize_int8",
    "load_predictor",
]

# Fastest first, as measured by `python -m benchmarks` on 2 CPU cores (docs/benchmarks.md): a bundle's "auto" backend
# is the first one it ships, and the eager state dict is the fallback that always works.
BACKENDS = ("onnx", "torchscript", "torch")
MODEL_SUFFIXES = {"onnx": ".onnx", "torchscript": ".ts", "torch": ".pt"}
# 21: GroupNorm exports as GroupNormalization; as Reshape + InstanceNormalization (older opsets) ONNX Runtime
# is ~1e-4 off PyTorch on SD-UNet.
ONNX_OPSET = 21
_SUFFIX_BACKENDS = {suffix: backend for backend, suffix in MODEL_SUFFIXES.items()}


class Predictor(Protocol):
    """``predict`` maps a float batch ``(N, C, *spatial)`` to the network's logits ``(N, out, *spatial)`` (float32
    CPU tensor); ``backend`` names what runs it ("onnx", "torchscript" or "torch")."""

    backend: str

    def predict(self, batch: torch.Tensor | np.ndarray) -> torch.Tensor: ...


class TorchPredictor:
    """A PyTorch module (eager or TorchScript) in eval mode, run without autograd."""

    def __init__(self, module: nn.Module | torch.jit.ScriptModule, backend: str):
        self.module = module.eval()
        self.backend = backend

    def predict(self, batch: torch.Tensor | np.ndarray) -> torch.Tensor:
        with torch.no_grad():
            return self.module(torch.as_tensor(batch, dtype=torch.float32)).float()


class OnnxRuntimePredictor:
    """An ONNX Runtime CPU session with all graph optimisations on.

    A batch of several frames is split over ``threads`` concurrent single-threaded runs (one session serves
    them all): the small nets here gain little from one run's intra-op threads, and a 16-frame batch of the
    student ran at 56 frames/s this way against 45 with 2 intra-op threads (2 cores). One frame runs on all
    ``threads``; the single-threaded session is made on the first batch of several frames."""

    backend = "onnx"

    def __init__(self, model_path: str | Path, threads: int | None = None):
        self.model_path = Path(model_path)
        self.threads = threads or len(os.sched_getaffinity(0))
        self.session = self._session(self.threads)
        model_input = self.session.get_inputs()[0]
        self.input_name, self.input_rank = model_input.name, len(model_input.shape)
        self._frame_session: ort.InferenceSession | None = None
        self._pool: ThreadPoolExecutor | None = None

    def _session(self, threads: int) -> ort.InferenceSession:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads
        try:
            return ort.InferenceSession(str(self.model_path), options, providers=["CPUExecutionProvider"])
        except Exception as error:  # ORT raises its own exception types, with multi-line messages
            raise ValueError(f"{self.model_path}: not a loadable ONNX model ({_first_line(error)})") from error

    def _run_frames_in_parallel(self, array: np.ndarray) -> np.ndarray:
        if self._frame_session is None:
            self._frame_session = self._session(1)
            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="ort-frames")
        chunks = np.array_split(array, min(self.threads, len(array)))
        return np.concatenate(list(self._pool.map(
            lambda chunk: self._frame_session.run(None, {self.input_name: chunk})[0], chunks)))

    def predict(self, batch: torch.Tensor | np.ndarray) -> torch.Tensor:
        array = batch.detach().cpu().numpy() if isinstance(batch, torch.Tensor) else np.asarray(batch)
        if array.ndim != self.input_rank:
            raise ValueError(f"{self.model_path}: expects a {self.input_rank}-D batch (N, C, spatial...), "
                             f"got shape {array.shape}")
        array = np.ascontiguousarray(array, dtype=np.float32)
        if len(array) > 1 and self.threads > 1:
            logits = self._run_frames_in_parallel(array)
        else:
            logits = self.session.run(None, {self.input_name: array})[0]
        return torch.from_numpy(logits)


def _first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


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
    The saved module runs any batch and spatial size the net accepts; :func:`load_predictor` applies
    ``optimize_for_inference`` on load, since a module optimised that way cannot be saved and loaded back."""
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
        torch.onnx.export(_inference_copy(net), (trace_input,), str(tmp), dynamo=True, external_data=False,
                          opset_version=ONNX_OPSET, verbose=False, input_names=["image"], output_names=["logits"],
                          dynamic_shapes=(dynamic,))
    return path


class _BatchReader:
    """ONNX Runtime calibration reader over an iterable of ``(N, C, *spatial)`` batches."""

    def __init__(self, input_name: str, batches: Iterable[torch.Tensor | np.ndarray]):
        self._feeds = iter([{input_name: np.asarray(batch, dtype=np.float32)} for batch in batches])

    def get_next(self) -> dict | None:
        return next(self._feeds, None)


def quantize_int8(onnx_path: str | Path, out_path: str | Path,
                  calibration_batches: Iterable[torch.Tensor | np.ndarray] | None = None) -> Path:
    """Quantise an ONNX model to int8 with ONNX Runtime, written atomically to ``out_path``.

    With ``calibration_batches`` (representative inputs): static QDQ quantisation, int8 per-channel weights and
    uint8 activations whose ranges come from the batches. Without: dynamic quantisation (weights only, activation
    ranges computed per run), which needs no data but is usually slower for convolutions.
    """
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
            quantize_static(str(tmp), str(tmp), _BatchReader(input_name, calibration_batches),
                            quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return out_path


def load_predictor(model_path: str | Path, net: nn.Module | None = None, threads: int | None = None) -> Predictor:
    """Predictor for a model file, backend chosen by suffix: ``.onnx`` ONNX Runtime, ``.ts`` TorchScript,
    ``.pt`` a state dict loaded into ``net`` (PyTorch eager). ``threads`` sets ONNX Runtime's threads (default:
    the CPUs this process may use), or torch's process-wide thread count for the torch backends."""
    model_path = Path(model_path)
    backend = _SUFFIX_BACKENDS.get(model_path.suffix)
    if backend is None:
        raise ValueError(f"{model_path}: unknown model suffix {model_path.suffix!r}; expected .onnx, .ts or .pt")
    if not model_path.is_file():
        raise FileNotFoundError(f"{model_path}: no such model file")
    if backend == "onnx":
        return OnnxRuntimePredictor(model_path, threads)
    if threads is not None:
        torch.set_num_threads(threads)
    if backend == "torchscript":
        try:
            module = torch.jit.load(str(model_path), map_location="cpu")
        except RuntimeError as error:
            raise ValueError(f"{model_path}: not a loadable TorchScript module ({_first_line(error)})") from error
        return TorchPredictor(torch.jit.optimize_for_inference(module.eval()), backend)
    if net is None:
        raise ValueError(f"{model_path}: a .pt state dict needs `net`, the network to load it into")
    try:
        state = torch.load(model_path, map_location="cpu", weights_only=True)
        net.load_state_dict(state)
    except Exception as error:  # unpickling and key/shape mismatches raise several types
        raise ValueError(f"{model_path}: not a state dict of {type(net).__name__} ({_first_line(error)})") from error
    return TorchPredictor(net, backend)
