"""One inference interface, ``predict(batch) -> logits``, over three CPU backends, and the one loader of weights.

PyTorch eager (a ``.pt`` state dict plus the network), TorchScript (``.ts``: traced, frozen, optimised for
inference) and ONNX Runtime (``.onnx``, optionally int8-quantised) all sit behind :class:`Predictor`, so callers
pick a backend by file or by config and never change code. The activation that turns logits into labels is the
bundle's, in :class:`lightweight_nets.transforms.Postprocessing`; which file of a bundle is loaded is decided by
:meth:`lightweight_nets.bundle.BundleSpec.load_predictor`. The files are written by :mod:`lightweight_nets.export`.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Protocol

import numpy as np
import onnxruntime as ort
import torch
import torch.nn as nn

from lightweight_nets.errors import first_line

__all__ = [
    "BACKENDS",
    "MODEL_SUFFIXES",
    "Predictor",
    "TorchPredictor",
    "OnnxRuntimePredictor",
    "flush_subnormals",
    "load_weights",
    "load_predictor",
]

# The one order of the backends: fastest first, as measured by `python -m benchmarks` on 2 CPU cores
# (docs/benchmarks.md). A bundle's "auto" backend is the first one it ships, and the eager state dict is the
# fallback that always works; the benchmark tables read it the other way round, from eager up.
BACKENDS = ("onnx", "torchscript", "torch")
MODEL_SUFFIXES = {"onnx": ".onnx", "torchscript": ".ts", "torch": ".pt"}
_SUFFIX_BACKENDS = {suffix: backend for backend, suffix in MODEL_SUFFIXES.items()}


class Predictor(Protocol):
    """``predict`` maps a float batch ``(N, C, *spatial)`` to the network's logits ``(N, out, *spatial)`` (float32
    CPU tensor); ``backend`` names what runs it ("onnx", "torchscript" or "torch")."""

    backend: str

    def predict(self, batch: torch.Tensor | np.ndarray) -> torch.Tensor: ...


def flush_subnormals() -> None:
    """Compute subnormal floats as zero on the calling thread (threads it starts later inherit it): trained weights
    hold subnormal values and their products make more, which the CPU computes many times slower
    (docs/benchmarks.md). Every ``predict`` calls it: the thread that predicts need not be the one that loaded."""
    torch.set_flush_denormal(True)


class TorchPredictor:
    """A PyTorch module (eager or TorchScript) in eval mode, run without autograd, subnormals flushed."""

    def __init__(self, module: nn.Module | torch.jit.ScriptModule, backend: str):
        self.module = module.eval()
        self.backend = backend

    def predict(self, batch: torch.Tensor | np.ndarray) -> torch.Tensor:
        flush_subnormals()
        with torch.no_grad():
            return self.module(torch.as_tensor(batch, dtype=torch.float32)).float()


class OnnxRuntimePredictor:
    """An ONNX Runtime CPU session with all graph optimisations on and subnormal floats computed as zero
    (``session.set_denormal_as_zero``: 5.6 -> 0.9 ms a frame for the fetal-head net, masks unchanged,
    docs/benchmarks.md).

    A batch of several frames runs frame by frame, ``threads`` single-threaded runs at a time (one session serves
    them all): the small nets here gain little from one run's intra-op threads, so a cine runs faster this way
    than through intra-op threads, and each run's buffers hold one frame, not a share of the batch (less memory
    and faster than halves on a cine: docs/benchmarks.md). One frame alone runs on all ``threads``; the
    single-threaded session is made on the first batch of several frames."""

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
        options.add_session_config_entry("session.set_denormal_as_zero", "1")
        try:
            return ort.InferenceSession(str(self.model_path), options, providers=["CPUExecutionProvider"])
        except Exception as error:  # ORT raises its own exception types, with multi-line messages
            raise ValueError(f"{self.model_path}: not a loadable ONNX model ({first_line(error)})") from error

    def _run_frames_in_parallel(self, array: np.ndarray) -> np.ndarray:
        if self._frame_session is None:
            self._frame_session = self._session(1)
            # a single-threaded session runs on the calling thread, whose subnormal flag ONNX Runtime does not set
            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="ort-frames", initializer=flush_subnormals)
        frames = (array[i : i + 1] for i in range(len(array)))
        return np.concatenate(
            list(self._pool.map(lambda frame: self._frame_session.run(None, {self.input_name: frame})[0], frames))
        )

    def predict(self, batch: torch.Tensor | np.ndarray) -> torch.Tensor:
        array = batch.detach().cpu().numpy() if isinstance(batch, torch.Tensor) else np.asarray(batch)
        if array.ndim != self.input_rank:
            raise ValueError(
                f"{self.model_path}: expects a {self.input_rank}-D batch (N, C, spatial...), got shape {array.shape}"
            )
        array = np.ascontiguousarray(array, dtype=np.float32)
        flush_subnormals()  # ONNX Runtime's option covers its own threads, not the caller's
        if len(array) > 1 and self.threads > 1:
            logits = self._run_frames_in_parallel(array)
        else:
            logits = self.session.run(None, {self.input_name: array})[0]
        return torch.from_numpy(logits)


def load_weights(net: nn.Module, model_file: str | Path) -> nn.Module:
    """Load a state dict (``models/*.pt``, weights only) into ``net`` and return it: the one ``.pt`` loader of
    training, export, serving and the benchmarks. ``FileNotFoundError`` or ``ValueError`` naming the file and
    the problem."""
    model_file = Path(model_file)
    if not model_file.is_file():
        raise FileNotFoundError(f"{model_file}: no such model file")
    try:
        net.load_state_dict(torch.load(model_file, map_location="cpu", weights_only=True))
    except Exception as error:  # unpickling and key/shape mismatches raise several types
        raise ValueError(f"{model_file}: not a state dict of {type(net).__name__} ({first_line(error)})") from error
    return net


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
            raise ValueError(f"{model_path}: not a loadable TorchScript module ({first_line(error)})") from error
        return TorchPredictor(torch.jit.optimize_for_inference(module.eval()), backend)
    if net is None:
        raise ValueError(f"{model_path}: a .pt state dict needs `net`, the network to load it into")
    return TorchPredictor(load_weights(net, model_path), backend)
