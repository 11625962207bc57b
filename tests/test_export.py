"""TorchScript and ONNX export of every registered net, the backends behind Predictor, int8 quantisation, bundles."""

import json
import re
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn as nn

from lightweight_nets import create_net, list_nets
from lightweight_nets.bundle import BundleError, BundleSpec, load_bundle_predictor, served_backend
from lightweight_nets.export import export_onnx, export_torchscript, quantize_int8
from lightweight_nets.inference.predictors import BACKENDS, TorchPredictor, load_predictor, load_weights

STUDENT = "thin_separable_student"
# An ONNX export takes ~10 s, so by default only the student and the weight-standardised, GroupNorm SD-UNet (the one
# net with parametrised weights) run; the rest of the zoo is marked slow (CI runs it).
ONNX_NETS = [pytest.param(name, marks=() if name in (STUDENT, "sd_unet") else pytest.mark.slow) for name in list_nets()]


def smallest_input(net: torch.nn.Module, spatial_dims: int = 2) -> torch.Tensor:
    """A 1x1 batch of side 64, or of the net's size multiple where that is larger (read from the error a size-1
    input raises), so the test follows whatever nets are registered."""
    try:
        net(torch.zeros(1, 1, *(1,) * spatial_dims))
        side = 64
    except ValueError as error:
        side = max(64, int(re.search(r"multiple of (\d+)", str(error)).group(1)))
    torch.manual_seed(0)
    return torch.rand(1, 1, *(side,) * spatial_dims)


def eval_net(name: str, **kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_net(name, in_channels=1, out_channels=1, **kwargs).eval()


FETAL = Path(__file__).resolve().parents[1] / "bundle" / "fetal_head_us"


def student() -> torch.nn.Module:
    """The distillation student at the width the fetal bundle serves (its inference.json network_def)."""
    network_def = json.loads((FETAL / "configs" / "inference.json").read_text())["network_def"]
    return eval_net(STUDENT, channels=network_def["channels"])


def onnx_logits(path, batch: torch.Tensor) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: batch.numpy()})[0]


@pytest.mark.parametrize("name", ONNX_NETS)
def test_onnx_export_matches_pytorch(name, tmp_path):
    net = eval_net(name)
    example = smallest_input(net)
    path = export_onnx(net, tmp_path / f"{name}.onnx", example)
    assert [p.name for p in tmp_path.iterdir()] == [f"{name}.onnx"]  # one file, no temporary left over
    larger = torch.rand(2, 1, example.shape[2], 2 * example.shape[3])  # dynamic batch and spatial axes
    for batch in (example, larger):
        with torch.no_grad():
            expected = net(batch).numpy()
        assert np.abs(onnx_logits(path, batch) - expected).max() <= 1e-4


@pytest.mark.parametrize("name", list_nets())
def test_torchscript_round_trip(name, tmp_path):
    net = eval_net(name)
    example = smallest_input(net)
    path = export_torchscript(net, tmp_path / f"{name}.ts", example)
    loaded = torch.jit.load(str(path))
    batch = torch.rand(2, 1, example.shape[2], 2 * example.shape[3])
    with torch.no_grad():
        assert torch.allclose(loaded(batch), net(batch), atol=1e-5)


def test_3d_onnx_and_torchscript_match_pytorch(tmp_path):
    net = eval_net("thin_separable_unet", spatial_dims=3, depth=3, channels=8)
    example = smallest_input(net, spatial_dims=3)[:, :, :8, :8, :8]  # the smallest valid size: a 1-voxel bottom
    with torch.no_grad():
        expected = net(example)
    onnx_path = export_onnx(net, tmp_path / "net.onnx", example)
    assert np.abs(onnx_logits(onnx_path, example) - expected.numpy()).max() <= 1e-4
    scripted = torch.jit.load(str(export_torchscript(net, tmp_path / "net.ts", example)))
    assert torch.allclose(scripted(example), expected, atol=1e-5)


def test_3d_in_plane_only_pooling_exports_with_the_same_logits(tmp_path):
    """The sarcoma experiments' pooling (the slice axis kept at the first level) in ONNX: same logits, also at a
    larger input than the export's (the Resize factors are constants, not sizes)."""
    net = eval_net("thin_unet", spatial_dims=3, depth=3, channels=8, pool_factors=[[2, 2, 1], [2, 2, 2], [2, 2, 2]])
    torch.manual_seed(0)
    example, larger = torch.rand(1, 1, 16, 16, 8), torch.rand(2, 1, 32, 16, 16)
    path = export_onnx(net, tmp_path / "net.onnx", example)
    for batch in (example, larger):
        with torch.no_grad():
            expected = net(batch).numpy()
        assert np.abs(onnx_logits(path, batch) - expected).max() <= 1e-4


@pytest.fixture(scope="module")
def student_files(tmp_path_factory):
    """The distillation student at the fetal bundle's width exported to all three formats, with its eager net and a
    test batch."""
    folder = tmp_path_factory.mktemp("student")
    net = student()
    example = smallest_input(net)
    torch.save(net.state_dict(), folder / "model.pt")
    export_torchscript(net, folder / "model.ts", example)
    export_onnx(net, folder / "model.onnx", example)
    return net, folder, torch.rand(2, 1, 64, 128)


def test_load_predictor_every_suffix_gives_the_same_logits(student_files):
    net, folder, batch = student_files
    with torch.no_grad():
        expected = net(batch)
    for suffix, backend in [(".pt", "torch"), (".ts", "torchscript"), (".onnx", "onnx")]:
        predictor = load_predictor(folder / f"model{suffix}", student(), threads=1)
        assert predictor.backend == backend
        for given in (batch, batch.numpy()):
            logits = predictor.predict(given)
            assert logits.dtype == torch.float32 and logits.shape == (2, 1, 64, 128)
            assert torch.allclose(logits, expected, atol=1e-4)


def test_onnx_batches_run_frames_in_parallel_with_the_same_result(student_files):
    net, folder, _ = student_files
    frames = torch.rand(5, 1, 64, 128)
    with torch.no_grad():
        expected = net(frames)
    predictor = load_predictor(folder / "model.onnx", threads=2)
    for batch in (frames, frames[:2], frames[:1]):  # odd split, one frame per thread, one frame on both threads
        assert torch.allclose(predictor.predict(batch), expected[: len(batch)], atol=1e-4)
    assert predictor._frame_session is not None


def test_load_predictor_bad_paths_are_one_line_errors(student_files, tmp_path):
    _, folder, _ = student_files
    cases = [
        (tmp_path / "missing.onnx", None, FileNotFoundError, "no such model file"),
        (folder / "model.pt", None, ValueError, "needs `net`"),
        (tmp_path / "model.h5", None, ValueError, "unknown model suffix '.h5'"),
    ]
    (tmp_path / "model.h5").write_bytes(b"")
    (tmp_path / "garbage.onnx").write_bytes(b"not a model")
    (tmp_path / "garbage.ts").write_bytes(b"not a model")
    cases += [
        (tmp_path / "garbage.onnx", None, ValueError, "not a loadable ONNX model"),
        (tmp_path / "garbage.ts", None, ValueError, "not a loadable TorchScript module"),
        (folder / "model.pt", eval_net("thin_unet"), ValueError, "not a state dict of ThinUNet"),
    ]
    for path, net, error, message in cases:
        with pytest.raises(error, match=re.escape(message)) as raised:
            load_predictor(path, net)
        assert str(path) in str(raised.value) and "\n" not in str(raised.value)
    with pytest.raises(ValueError, match="expects a 4-D batch"):
        load_predictor(folder / "model.onnx").predict(torch.rand(1, 64, 64))


def test_load_weights_is_the_one_pt_loader_with_one_message(student_files, tmp_path):
    """Training, export, serving and the benchmarks load ``.pt`` weights through load_weights: same errors as
    load_predictor's torch backend, and the weights that load are the ones saved."""
    net, folder, batch = student_files
    for path, message in (
        (tmp_path / "missing.pt", "no such model file"),
        (folder / "model.pt", "not a state dict of ThinUNet"),
    ):
        with pytest.raises((FileNotFoundError, ValueError), match=re.escape(f"{path}: {message}")):
            load_weights(eval_net("thin_unet"), path)
        with pytest.raises((FileNotFoundError, ValueError), match=re.escape(f"{path}: {message}")):
            load_predictor(path, eval_net("thin_unet"))
    torch.manual_seed(1)
    other = create_net(STUDENT, in_channels=1, out_channels=1, channels=net.head.in_channels).eval()
    with torch.no_grad():
        assert not torch.equal(other(batch), net(batch))
        assert torch.equal(load_weights(other, folder / "model.pt")(batch), net(batch))


def test_int8_quantisation_keeps_the_masks(student_files, tmp_path):
    _, folder, batch = student_files
    calibration = [torch.rand(1, 1, 64, 64) for _ in range(4)]
    quantized = quantize_int8(folder / "model.onnx", tmp_path / "int8.onnx", calibration)
    assert {"QuantizeLinear", "DequantizeLinear"} <= {node.op_type for node in onnx.load(str(quantized)).graph.node}
    fp32 = torch.sigmoid(load_predictor(folder / "model.onnx").predict(batch))
    int8 = torch.sigmoid(load_predictor(quantized).predict(batch))
    assert (fp32 - int8).abs().mean() < 0.02
    assert ((fp32 > 0.5) == (int8 > 0.5)).float().mean() > 0.95
    dynamic = quantize_int8(folder / "model.onnx", tmp_path / "dynamic.onnx")
    assert load_predictor(dynamic).predict(batch).shape == fp32.shape
    with pytest.raises(FileNotFoundError, match="no such ONNX model"):
        quantize_int8(tmp_path / "missing.onnx", tmp_path / "out.onnx")


def test_a_bundle_serves_its_fastest_shipped_backend(student_files, tmp_path):
    """``models/model.*`` of a bundle: "auto" takes the first shipped of BACKENDS (fastest measured first), the
    state dict loads into the bundle's network_def, and every backend gives the same logits."""
    net, folder, batch = student_files
    shutil.copytree(FETAL / "configs", tmp_path / "configs")
    (tmp_path / "models").mkdir()
    spec = BundleSpec.load(tmp_path)
    with pytest.raises(FileNotFoundError, match="no model file"):
        spec.load_predictor()
    with torch.no_grad():
        expected = net(batch)

    (tmp_path / "models" / "model.pt").write_bytes((folder / "model.pt").read_bytes())
    predictor = spec.load_predictor(threads=1)
    assert predictor.backend == "torch"  # the only file shipped: the fallback
    assert torch.allclose(predictor.predict(batch), expected, atol=1e-5)

    for suffix in ("ts", "onnx"):
        (tmp_path / "models" / f"model.{suffix}").write_bytes((folder / f"model.{suffix}").read_bytes())
    assert served_backend(tmp_path) == BACKENDS[0] == spec.load_predictor().backend
    for backend in BACKENDS:
        predictor = spec.load_predictor(backend)
        assert predictor.backend == backend
        assert torch.allclose(predictor.predict(batch), expected, atol=1e-4)
    # the bundle config's form: the network given by the config, not built by the reader
    predictor = load_bundle_predictor(tmp_path, student(), "torch")
    assert torch.allclose(predictor.predict(batch), expected, atol=1e-5)

    with pytest.raises(ValueError, match="unknown backend 'tensorrt'"):
        spec.load_predictor("tensorrt")
    (tmp_path / "models" / "model.ts").unlink()
    with pytest.raises(FileNotFoundError, match="model.ts: no such model file"):
        spec.load_predictor("torchscript")


def test_a_bundle_may_choose_its_backend(tmp_path):
    """inference.json's "backend" is what "auto" serves (a 3D net runs faster on TorchScript than on ONNX Runtime
    on this CPU); an explicit backend still wins, and an unknown one is a BundleError naming the file."""
    shutil.copytree(FETAL, tmp_path / "bundle", ignore=shutil.ignore_patterns("experiments", "logs", "docs", "data"))
    config = tmp_path / "bundle" / "configs" / "inference.json"
    text = config.read_text()
    config.write_text(text.replace('"backend": "auto"', '"backend": "torchscript"'))
    spec = BundleSpec.load(tmp_path / "bundle")
    assert spec.backend == "torchscript" and spec.load_predictor().backend == "torchscript"
    assert spec.load_predictor("onnx").backend == "onnx"
    config.write_text(text.replace('"backend": "auto"', '"backend": "tensorrt"'))
    with pytest.raises(BundleError, match="inference.json: backend: unknown backend 'tensorrt'; expected auto, onnx"):
        BundleSpec.load(tmp_path / "bundle")


def test_every_backend_computes_subnormal_floats_as_zero(tmp_path):
    """Trained weights hold subnormal floats and their products make more, which this CPU computes many times
    slower; every predictor flushes them (the single-frame session, the frame pool, PyTorch), and the model's
    result is a plain ONNX Runtime session's otherwise."""
    weight = onnx.numpy_helper.from_array(np.full((1, 1, 1, 1), 1e-30, np.float32), "weight")
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Mul", ["image", "weight"], ["logits"])],
        "subnormal",
        [onnx.helper.make_tensor_value_info("image", onnx.TensorProto.FLOAT, ["n", 1, 4, 4])],
        [onnx.helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, ["n", 1, 4, 4])],
        [weight],
    )
    path = tmp_path / "subnormal.onnx"
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)], ir_version=8), path)
    frames = np.full((3, 1, 4, 4), 1e-10, np.float32)  # 1e-10 x 1e-30 = 1e-40: a subnormal float32
    torch.set_flush_denormal(False)  # as in a fresh process (an earlier predictor set it on this thread)
    plain = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"image": frames})[0]
    assert (plain > 0).all()
    predictor = load_predictor(path, threads=2)
    assert (predictor.predict(frames[:1]) == 0).all()
    assert (predictor.predict(frames) == 0).all() and predictor._frame_session is not None
    scale = nn.Conv2d(1, 1, 1, bias=False)
    nn.init.constant_(scale.weight, 1e-30)
    assert (TorchPredictor(scale, "torch").predict(torch.as_tensor(frames)) == 0).all()
