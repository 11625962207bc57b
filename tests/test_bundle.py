"""The MONAI bundle: every config instantiates, training and distillation run from the configs on real images,
the shipped weights segment the shipped real samples, DDP works on CPU, and the metadata verifies."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser

from lightweight_nets.inference import load_bundle_predictor
from lightweight_nets.io import read_image
from lightweight_nets.measure import head_circumference_mm
from lightweight_nets.segment import read_pixel_sizes

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / "bundle"
CONFIGS = BUNDLE / "configs"
SAMPLES = ROOT / "samples" / "hc18"
SHARED_HC18 = ROOT.parent / "shared" / "data" / "hc18"
SHARED_BUSI = ROOT.parent / "shared" / "data" / "busi"

CONFIG_SETS = {
    "train": ["train.json"],
    "distill": ["train.json", "distill.json"],
    "train_busi": ["train.json", "train_busi.json"],
    "distill_busi": ["train.json", "train_busi.json", "distill.json", "distill_busi.json"],
    "evaluate": ["evaluate.json"],
    "evaluate_busi": ["evaluate.json", "evaluate_busi.json"],
    "inference": ["inference.json"],
    "inference_busi": ["inference.json", "inference_busi.json"],
    "export": ["export.json"],
}


def parser_for(files: list[str], **overrides) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config([str(CONFIGS / f) for f in files])
    parser.update({"bundle_root": str(BUNDLE), **overrides})
    return parser


@pytest.fixture
def sample_split(tmp_path) -> Path:
    """A split of the shipped samples (all validation subjects of the real split): 6 train, 4 validation."""
    names = sorted(p.name for p in (SAMPLES / "images").glob("*.png"))
    path = tmp_path / "split.json"
    path.write_text(json.dumps({"train": names[:6], "validation": names[6:]}))
    return path


@pytest.mark.parametrize("name", sorted(CONFIG_SETS))
def test_config_instantiates(name):
    parser = parser_for(CONFIG_SETS[name])
    net = parser.get_parsed_content("network_def")
    assert isinstance(net, torch.nn.Module)
    if name.startswith(("train", "distill")):
        assert parser.get_parsed_content("trainer").max_epochs == parser.get_parsed_content("max_epochs")
        assert parser.get_parsed_content("datamodule").batch_size == 8
    if name.startswith("distill"):
        teacher_file = Path(parser.get_parsed_content("teacher_file"))
        if not teacher_file.is_file():
            pytest.skip(f"{teacher_file.name} is not shipped yet")
        module = parser.get_parsed_content("module")
        assert module.layers == net.feature_layers
        assert not any(p.requires_grad for p in module.teacher.parameters())
    if name.startswith("inference"):
        assert parser.get_parsed_content("predictor").backend == "onnx"


def test_network_is_chosen_by_one_value():
    parser = parser_for(["train.json"], **{"network_def#name": "lighter_unet", "network_def#group_size": 8})
    assert type(parser.get_parsed_content("network_def")).__name__ == "LiUNet"


def _run(parser: ConfigParser) -> Path:
    return parser.get_parsed_content("run")


def test_two_step_training_and_distillation(tmp_path, sample_split):
    common = {"dataset_dir": str(SAMPLES), "split_file": str(sample_split), "output_dir": str(tmp_path),
              "spatial_size": [64, 64], "num_workers": 0, "max_epochs": 1, "datamodule#batch_size": 2,
              "trainer#limit_train_batches": 2, "trainer#enable_progress_bar": False}
    teacher = _run(parser_for(["train.json"], model_file=str(tmp_path / "teacher.pt"), **common))
    assert teacher.is_file() and (tmp_path / "thin_unet_hc18").is_dir()
    assert list(tmp_path.glob("thin_unet_hc18/*/training_curves.png"))
    parser = parser_for(["train.json", "distill.json"], model_file=str(tmp_path / "student.pt"),
                        teacher_file=str(teacher), **common)
    teacher_before = {k: v.clone() for k, v in parser.get_parsed_content("teacher").state_dict().items()}
    student = _run(parser)
    state = torch.load(student, weights_only=True)
    assert not any(k.startswith(("adapters", "teacher")) for k in state), "adapters/teacher leaked into the export"
    assert sum(v.numel() for k, v in state.items() if "running" not in k and "num_batches" not in k) == 44779
    module = parser.get_parsed_content("module")
    for key, value in module.teacher.state_dict().items():  # the frozen teacher did not move
        assert torch.equal(value, teacher_before[key]), key


def test_shipped_model_segments_shipped_samples(tmp_path):
    """Real weights on real images: catches a broken preprocessing chain."""
    parser = parser_for(["inference.json"], dataset_dir=str(SAMPLES / "images"), output_dir=str(tmp_path))
    results = _run(parser)
    dice = []
    for image in sorted((SAMPLES / "images").glob("*.png")):
        predicted = read_image(tmp_path / image.name).pixels > 0
        truth = read_image(SAMPLES / "masks" / image.name).pixels > 0
        dice.append(2 * (predicted & truth).sum() / (predicted.sum() + truth.sum()))
        assert (tmp_path / "overlays" / image.name).is_file()
    assert np.mean(dice) > 0.9, dice
    rows = results.read_text().splitlines()
    assert len(rows) == 11 and rows[0].startswith("image,mask,pixels,area_mm2,head_circumference_mm")


def test_head_circumference_matches_sonographer():
    """HC from the sonographer's own masks reproduces the sonographer's HC within 2%."""
    sizes = read_pixel_sizes(SAMPLES / "pixel_size_and_hc.csv")
    reference = {r.split(",")[0]: float(r.split(",")[2])
                 for r in (SAMPLES / "pixel_size_and_hc.csv").read_text().splitlines()[1:]}
    for name, spacing in sizes.items():
        hc = head_circumference_mm(read_image(SAMPLES / "masks" / name).pixels > 0, spacing)
        assert abs(hc - reference[name]) / reference[name] < 0.02, (name, hc, reference[name])


def test_bad_image_is_reported_and_rest_processed(tmp_path, capfd):
    images = tmp_path / "in"
    images.mkdir()
    (images / "broken.png").write_bytes(b"not a png")
    (images / SAMPLES.joinpath("images").iterdir().__next__().name).write_bytes(
        next(SAMPLES.joinpath("images").iterdir()).read_bytes())
    parser = parser_for(["inference.json"], dataset_dir=str(images), output_dir=str(tmp_path / "out"))
    results = _run(parser)
    assert len(results.read_text().splitlines()) == 2
    assert not (tmp_path / "out" / "broken.png").exists()
    assert not list((tmp_path / "out").glob(".*part*"))
    (images / next(SAMPLES.joinpath("images").iterdir()).name).unlink()
    with pytest.raises(SystemExit, match="none of 1 images could be segmented"):
        _run(parser_for(["inference.json"], dataset_dir=str(images), output_dir=str(tmp_path / "out2")))


def _bundle_cli(*args: str, cwd: Path = BUNDLE, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, "-m", "monai.bundle", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_verify_metadata_and_net_in_out():
    result = _bundle_cli("verify_metadata", "--meta_file", "configs/metadata.json",
                         "--filepath", str(ROOT / "tests" / "data" / "monai_meta_schema.json"))
    assert "metadata is verified with no error" in result.stdout + result.stderr, result.stderr[-2000:]
    result = _bundle_cli("verify_net_in_out", "--net_id", "network_def", "--meta_file", "configs/metadata.json",
                         "--config_file", "configs/inference.json")
    assert "data shape of network is verified with no error" in result.stdout + result.stderr, result.stderr[-2000:]


def test_ddp_two_cpu_processes(tmp_path, sample_split):
    """Lightning DDP, 2 processes on CPU (gloo), a couple of steps, from the same train config."""
    result = _bundle_cli(
        "run", "--config_file", "configs/train.json", "--bundle_root", ".", "--dataset_dir", str(SAMPLES),
        "--split_file", str(sample_split), "--output_dir", str(tmp_path), "--model_file", str(tmp_path / "ddp.pt"),
        "--spatial_size", "[64,64]", "--num_workers", "0", "--max_epochs", "1", "--datamodule#batch_size", "2",
        "--trainer#limit_train_batches", "2", "--trainer#accelerator", "cpu", "--trainer#devices", "2",
        "--trainer#strategy", "ddp", "--trainer#enable_progress_bar", "false")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2" in output
    assert (tmp_path / "ddp.pt").is_file()


def test_evaluate_reports_dice_hd95_and_head_circumference(tmp_path, sample_split):
    parser = parser_for(["evaluate.json"], dataset_dir=str(SAMPLES), split_file=str(sample_split),
                        output_dir=str(tmp_path), pixel_size_csv=str(SAMPLES / "pixel_size_and_hc.csv"))
    summary = _run(parser)
    assert summary["images"] == 4 and summary["dice"]["n"] == 4
    assert summary["dice"]["mean"] > 0.9
    assert summary["hd95_unit"] == "mm" and 0 < summary["hd95"]["mean"] < 20
    assert 0 <= summary["hc_abs_diff_mm"]["mean"] < 15
    assert json.loads((tmp_path / "metrics.json").read_text()) == summary
    assert len(json.loads((tmp_path / "per_image.json").read_text())) == 4


def test_export_config_writes_torchscript_and_onnx_that_match(tmp_path):
    (tmp_path / "models").mkdir()
    (tmp_path / "configs").symlink_to(CONFIGS)
    (tmp_path / "models" / "model.pt").write_bytes((BUNDLE / "models" / "model.pt").read_bytes())
    _run(parser_for(["export.json"], bundle_root=str(tmp_path)))
    batch = torch.rand(2, 1, 256, 256)
    expected = load_bundle_predictor(tmp_path, "torch").predict(batch)
    for backend in ("torchscript", "onnx"):
        assert torch.allclose(load_bundle_predictor(tmp_path, backend).predict(batch), expected, atol=1e-4), backend


def _busi_validation(per_class: int) -> list[str]:
    """The first ``per_class`` validation images of each BUSI class (benign, malignant, normal)."""
    names = json.loads((BUNDLE / "data" / "busi_split.json").read_text())["validation"]
    return [name for label in ("benign", "malignant", "normal")
            for name in [n for n in names if n.startswith(label)][:per_class]]


def test_busi_model_segments_real_validation_images(tmp_path):
    """The shipped BUSI student on real validation images (never trained on): one mask per input, named after
    it, lesions found where there are lesions."""
    images = tmp_path / "in"
    images.mkdir()
    names = _busi_validation(8)
    for name in names:
        (images / name).symlink_to(SHARED_BUSI / "images" / name)
    parser = parser_for(["inference.json", "inference_busi.json"], dataset_dir=str(images),
                        output_dir=str(tmp_path / "out"))
    _run(parser)
    dice = []
    for name in names:
        predicted = read_image(tmp_path / "out" / name).pixels > 0
        truth = read_image(SHARED_BUSI / "masks" / name).pixels > 0
        assert predicted.shape == truth.shape
        if truth.any():
            dice.append(2 * (predicted & truth).sum() / (predicted.sum() + truth.sum()))
    assert len(dice) == 16 and np.mean(dice) > 0.6, dice


def test_evaluate_busi_reports_dice_per_class_and_normal_false_positives(tmp_path):
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train": [], "validation": _busi_validation(2)}))
    summary = _run(parser_for(["evaluate.json", "evaluate_busi.json"], split_file=str(split),
                              output_dir=str(tmp_path)))
    assert summary["images"] == 6 and summary["dice"]["n"] == 4
    assert set(summary["dice_by_class"]) == {"benign", "malignant"}
    assert all(summary["dice_by_class"][c]["n"] == 2 for c in ("benign", "malignant"))
    assert summary["false_positive_rate_on_empty"] in (0.0, 0.5, 1.0)
    assert summary["hd95_unit"] == "pixels"
