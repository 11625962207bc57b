"""``python -m benchmarks.peers`` on a small input: real peers and our nets, real exports checked against PyTorch,
every backend, real evaluations of trained weights, the report, its JSON and its chart."""

import hashlib
import json

import pytest
import torch
from PIL import Image

from benchmarks import checkout
from benchmarks.peers import (
    CONTENDERS,
    SMP_VENV,
    _accuracy_target,
    checked_predictors,
    main,
    measure,
)
from lightweight_nets.export import export_onnx
from lightweight_nets.profile import count_parameters

pytestmark = pytest.mark.slow

NETS = ("monai_basic_unet", "teacher")  # a peer without weights, one of ours with trained weights


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    markdown = tmp_path_factory.mktemp("peers") / "peers.md"
    quick = ["--sizes", "128", "--rounds", "2", "--turn-runs", "2", "--settle-ms", "1", "--warmup", "1", "--limit", "1"]
    main(["--nets", *NETS, *quick, "--markdown", str(markdown)])
    return markdown


def test_every_net_is_timed_on_every_backend_with_its_own_size(report):
    saved = json.loads(report.with_suffix(".json").read_text())
    contenders = {c.name: c for c in CONTENDERS}
    assert [row["net"] for row in saved["rows"]] == list(NETS)
    for row in saved["rows"]:
        assert row["errors"] == {}
        assert {"onnx", "torch", "torch-bf16"} <= set(row["latencies_ms"])  # ORT made it through its check
        assert all(len(times) == 2 * 2 and min(times) > 0 for times in row["latencies_ms"].values())
        assert row["parameters"] == count_parameters(contenders[row["net"]].network())
        assert row["gflops"] > 0


def test_trained_weights_are_evaluated_and_bf16_masks_compared(report):
    accuracy = json.loads(report.with_suffix(".json").read_text())["accuracy"]
    teacher = accuracy["teacher"]
    assert teacher["size"] == 128 and teacher["images"] == 1
    assert teacher["dice"] > 0.8  # trained weights on a real HC18 validation image
    assert teacher["bf16_pixel_agreement"] > 0.99
    assert not any(a["net"] == "monai_basic_unet" for a in accuracy.values())  # untrained: speed only


def test_accuracy_only_evaluates_again_what_changed_and_keeps_the_timings(report, tmp_path, capsys):
    """``--accuracy-only`` on saved results: an evaluation saved under another version of the bundle's configs (a
    changed measurement, say) is evaluated again, one with the same weights and configs is reused, and the timings
    stay as they were."""
    saved = json.loads(report.with_suffix(".json").read_text())
    inference = checkout("bundle", "fetal_head_us", "configs", "inference.json")
    digest = hashlib.sha256(inference.read_bytes()).hexdigest()
    assert digest in saved["accuracy"]["teacher"]["setup"]
    stale = json.loads(json.dumps(saved))
    stale["accuracy"]["teacher"].update(setup=saved["accuracy"]["teacher"]["setup"].replace(digest, "0" * 64), dice=0)
    copy = tmp_path / "peers.md"
    copy.with_suffix(".json").write_text(json.dumps(stale))
    command = ["--accuracy-only", "--nets", *NETS, "--limit", "1", "--markdown", str(copy)]
    main(command)
    again = json.loads(copy.with_suffix(".json").read_text())
    assert again["accuracy"] == saved["accuracy"] and again["rows"] == saved["rows"]
    assert "teacher: evaluating teacher.pt" in capsys.readouterr().err
    main(command)
    assert "evaluating" not in capsys.readouterr().err
    assert copy.read_text() == report.read_text()


def test_report_states_the_targets_and_shows_the_chart(report):
    text = report.read_text()
    assert "| teacher | ours | 128 x 128 |" in text and "| monai_basic_unet | peer | 128 x 128 |" in text
    assert "- target >= 150 fps on 2 threads, `teacher` at 128 x 128: ORT fp32" in text
    assert "- `served` at 128 x 128: not in this run" in text
    assert "](peers.png)" in text
    with Image.open(report.with_suffix(".png")) as image:
        assert image.format == "PNG"


def test_from_json_rewrites_the_same_report_without_measuring(report):
    before = report.read_text()
    report.write_text("")
    main(["--from-json", "--markdown", str(report)])
    assert report.read_text() == before


def test_an_export_that_differs_from_its_net_is_not_timed(tmp_path):
    student = next(c for c in CONTENDERS if c.name == "served")
    torch.manual_seed(1)
    exported, other = student.network(), student.network()  # same architecture, other random weights
    batch = torch.rand(1, 1, 64, 64)
    onnx_path = export_onnx(exported, tmp_path / "served.onnx", batch)
    predictors, errors = checked_predictors(exported, batch, onnx_path, threads=2)
    assert "onnx" in predictors and errors == {}
    predictors, errors = checked_predictors(other, batch, onnx_path, threads=2)
    assert "onnx" not in predictors and "differs from PyTorch's" in errors["onnx"]


def test_the_nnunet_peer_is_nnunets_2d_plan_for_256_by_256():
    """7 stages, 32 to 512 features, stride 1 then 2: six halvings, instance norm with affine parameters."""
    plain = next(c for c in CONTENDERS if c.name == "nnunet_plain_conv_unet").network()
    convs = [m for m in plain.encoder.modules() if isinstance(m, torch.nn.Conv2d)]
    assert sorted({c.out_channels for c in convs}) == [32, 64, 128, 256, 512]
    assert [c.stride for c in convs].count((2, 2)) == 6 and len(convs) == 14
    assert all(n.affine for n in plain.modules() if isinstance(n, torch.nn.InstanceNorm2d))
    assert plain(torch.rand(1, 1, 128, 128)).shape == (1, 1, 128, 128)


def test_an_smp_peer_is_exported_in_its_own_venv_or_skipped_with_the_reason():
    """segmentation-models-pytorch does not import beside this project's torch: with `make venv-smp` its net is
    exported there, checked against that venv's PyTorch and timed on ONNX Runtime; without the venv it is skipped
    with a one-line reason that names the make target."""
    contender = next(c for c in CONTENDERS if c.name == "smp_unet_mobilenet_v2")
    rows, skipped = measure([contender], [64], rounds=1, warmup=0, threads=2, log=lambda line: None, turn_runs=1)
    if not (checkout() / SMP_VENV / "bin" / "python").is_file():
        assert rows == [] and "make venv-smp" in skipped[contender.name]
        return
    (row,) = rows
    assert skipped == {} and row.size == 64 and row.parameters > 1_000_000 and row.gflops > 0
    assert len(row.latencies_ms["onnx"]) == 1 and "onnx" not in row.errors  # it passed the check against PyTorch
    assert "own venv" in row.errors["torch"]


def test_the_accuracy_clause_compares_the_served_model_with_the_most_accurate_weights():
    def accuracy(served: float) -> dict:
        return {
            "model": {"dice": served, "weights": "models/model.pt"},
            "teacher": {"dice": 0.9731, "weights": "models/teacher.pt"},
            "student16_128": {"dice": 0.9648, "weights": "experiments/student16_128.pt"},
        }

    assert "(`teacher`, `models/teacher.pt`: 0.9731)" in _accuracy_target(accuracy(0.9709))
    assert "-0.22 points **met**" in _accuracy_target(accuracy(0.9709))
    assert "-0.83 points **not met**" in _accuracy_target(accuracy(0.9648))
    assert "(`model`, `models/model.pt`: 0.9741), served `model`: 0.9741, +0.00 points **met**" in _accuracy_target(
        accuracy(0.9741)
    )  # the served model may be the most accurate itself
    assert "not evaluated" in _accuracy_target({})
