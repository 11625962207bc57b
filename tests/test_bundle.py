"""Every model bundle under bundle/: its metadata verifies against the official MONAI schema, its network matches
the metadata, every config runs from the bundle (inference on real images, training and distillation, evaluation,
export), a copy of it runs on its own, and its contract is read in one place (BundleSpec) with clear errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser

from lightweight_nets.bundle import BundleError, BundleSpec, find_bundles, load_bundle_predictor, read_bundle_configs
from lightweight_nets.inference.folders import NothingSegmented
from lightweight_nets.io.images import read_image
from lightweight_nets.io.tables import read_pixel_sizes
from lightweight_nets.measure import head_circumference_mm

ROOT = Path(__file__).resolve().parents[1]
BUNDLES = ROOT / "bundle"
BUNDLE_IDS = sorted(p.name for p in BUNDLES.iterdir() if (p / "configs" / "inference.json").is_file())
SCHEMA = ROOT.parent / "shared" / "monai" / "meta_schema_20240725.json"
SAMPLES = ROOT / "samples" / "hc18"
SHARED_BUSI = ROOT.parent / "shared" / "data" / "busi"
FETAL, BREAST = BUNDLES / "fetal_head_us", BUNDLES / "breast_lesion_us"
# Every workflow of a bundle: its config files, merged in this order (MONAI config merging).
CONFIG_SETS = {
    "inference": ["inference.json"],
    "train": ["inference.json", "train.json"],
    "distill": ["inference.json", "train.json", "distill.json"],
    "evaluate": ["inference.json", "evaluate.json"],
    "export": ["inference.json", "export.json"],
}
REQUIRED_FILES = [
    "LICENSE",
    "configs/metadata.json",
    "configs/logging.conf",
    "docs/README.md",
    "docs/data_license.txt",
    "models/model.pt",
    "models/model.ts",
    "models/model.onnx",
    *(f"configs/{name}" for workflow, files in CONFIG_SETS.items() if workflow != "distill" for name in files),
]
# a distilled bundle ships its teacher and configs/distill.json
DISTILLED = [b for b in BUNDLE_IDS if (BUNDLES / b / "configs" / "distill.json").is_file()]
MODEL_CARD_SECTIONS = [
    "## Model overview",
    "## Data",
    "## Training configuration",
    "## Performance",
    "## Series routing",
    "## Commands",
    "## Limitations",
    "## References",
    "## License",
]


def parser_for(bundle: Path, workflow: str, **overrides) -> ConfigParser:
    parser = read_bundle_configs(bundle, CONFIG_SETS[workflow])
    parser.update(overrides)
    return parser


def _bundle_cli(*args: str, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run(
        [sys.executable, "-m", "monai.bundle", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def _dice(predicted: np.ndarray, truth: np.ndarray) -> float:
    return 2 * (predicted & truth).sum() / (predicted.sum() + truth.sum())


@pytest.fixture
def sample_split(tmp_path) -> Path:
    """A split of the shipped samples (all validation subjects of the real split): 6 train, 4 validation."""
    names = sorted(p.name for p in (SAMPLES / "images").glob("*.png"))
    path = tmp_path / "split.json"
    path.write_text(json.dumps({"train": names[:6], "validation": names[6:]}))
    return path


def test_the_repository_ships_the_two_ultrasound_bundles():
    assert {"fetal_head_us", "breast_lesion_us"} <= set(BUNDLE_IDS)
    assert [spec.id for spec in find_bundles(BUNDLES)] == BUNDLE_IDS


@pytest.mark.parametrize("bundle_id", BUNDLE_IDS)
def test_bundle_is_complete_and_the_served_model_is_obvious(bundle_id):
    bundle = BUNDLES / bundle_id
    assert [f for f in REQUIRED_FILES if not (bundle / f).is_file()] == []
    served = {p.name for p in (bundle / "models").iterdir()}
    assert served <= {"model.pt", "model.ts", "model.onnx", "teacher.pt"}, served
    assert ("teacher.pt" in served) == (bundle_id in DISTILLED)
    card = (bundle / "docs" / "README.md").read_text()
    positions = [card.find(section) for section in MODEL_CARD_SECTIONS]
    assert -1 not in positions and positions == sorted(positions), dict(zip(MODEL_CARD_SECTIONS, positions))
    spec = BundleSpec.load(bundle)
    for rule in spec.series_rules:  # the card documents every routing rule by name
        assert rule["name"] in card, rule["name"]


@pytest.mark.parametrize("bundle_id", BUNDLE_IDS)
def test_verify_metadata_against_the_official_schema_and_net_in_out(bundle_id):
    assert SCHEMA.is_file(), f"{SCHEMA}: the official MONAI schema is part of ../shared"
    bundle = BUNDLES / bundle_id
    result = _bundle_cli(
        "verify_metadata", "--meta_file", "configs/metadata.json", "--filepath", str(SCHEMA), cwd=bundle
    )
    assert "metadata is verified with no error" in result.stdout + result.stderr, result.stderr[-2000:]
    result = _bundle_cli(
        "verify_net_in_out",
        "--net_id",
        "network_def",
        "--meta_file",
        "configs/metadata.json",
        "--config_file",
        "configs/inference.json",
        cwd=bundle,
    )
    assert "data shape of network is verified with no error" in result.stdout + result.stderr, result.stderr[-2000:]


def test_verify_metadata_rejects_what_the_schema_forbids(tmp_path):
    """The official schema really is applied: a metadata file without network_data_format fails."""
    metadata = json.loads((FETAL / "configs" / "metadata.json").read_text())
    del metadata["network_data_format"]
    (tmp_path / "metadata.json").write_text(json.dumps(metadata))
    result = _bundle_cli(
        "verify_metadata", "--meta_file", str(tmp_path / "metadata.json"), "--filepath", str(SCHEMA), cwd=tmp_path
    )
    assert "metadata is verified with no error" not in result.stdout + result.stderr


@pytest.mark.parametrize(
    "bundle_id, workflow", [(b, w) for b in BUNDLE_IDS for w in sorted(CONFIG_SETS) if w != "distill" or b in DISTILLED]
)
def test_config_instantiates(bundle_id, workflow):
    bundle = BUNDLES / bundle_id
    parser = parser_for(bundle, workflow)
    spec = BundleSpec.load(bundle)
    net = parser.get_parsed_content("network_def")
    assert isinstance(net, torch.nn.Module)
    assert repr(parser.get_parsed_content("preprocessing")) == repr(spec.preprocessing)
    if workflow in ("train", "distill"):
        assert parser.get_parsed_content("trainer").max_epochs == parser.get_parsed_content("max_epochs")
        assert parser.get_parsed_content("datamodule").preprocessing.spatial_size == spec.preprocessing.spatial_size
    if workflow == "distill":
        module = parser.get_parsed_content("module")
        assert module.layers == net.feature_layers
        assert not any(p.requires_grad for p in module.teacher.parameters())
    if workflow == "inference":
        assert parser.get_parsed_content("predictor").backend == spec.served_backend()  # the app's choice too


def test_network_is_chosen_by_one_value():
    parser = parser_for(FETAL, "train", **{"network_def#name": "flat_unet"})
    net = parser.get_parsed_content("network_def")
    served_width = parser.get_parsed_content("network_def#channels")
    assert type(net).__name__ == "FlatUNet" and net.head.in_channels == served_width == 32  # it carries over


def test_overrides_reach_the_run_by_name(tmp_path):
    """Named config arguments: a --key#sub style override changes what the run uses."""
    parser = parser_for(
        FETAL, "inference", **{"postprocessing#keep_largest": False, "preprocessing#spatial_size": [128, 128]}
    )
    assert parser.get_parsed_content("workflow#postprocessing").keep_largest is False
    assert parser.get_parsed_content("workflow#preprocessing").spatial_size == (128, 128)


def test_shipped_fetal_model_segments_shipped_samples(tmp_path):
    """Real weights on real images, through the bundle's own inference config: one mask per input, overlays, and
    results.csv with the area and head circumference the bundle's segment asks for."""
    results = parser_for(FETAL, "inference", output_dir=str(tmp_path)).get_parsed_content("run")
    dice = []
    for image in sorted((SAMPLES / "images").glob("*.png")):
        truth = read_image(SAMPLES / "masks" / image.name).pixels > 0
        dice.append(_dice(read_image(tmp_path / image.name).pixels > 0, truth))
        assert (tmp_path / "overlays" / image.name).is_file()
    assert np.mean(dice) > 0.9, dice
    rows = results.read_text().splitlines()
    assert len(rows) == 11
    assert rows[0] == "image,mask,segment,pixels,area_mm2,head_circumference_mm,gestational_age_weeks"
    assert all(",fetal head," in row for row in rows[1:])


def _busi_validation(per_class: int) -> list[str]:
    """The first ``per_class`` validation images of each BUSI class (benign, malignant, normal)."""
    names = json.loads((BREAST / "data" / "busi_split.json").read_text())["validation"]
    return [
        name
        for label in ("benign", "malignant", "normal")
        for name in [n for n in names if n.startswith(label)][:per_class]
    ]


def test_shipped_breast_model_segments_real_validation_images(tmp_path):
    """The breast bundle on real BUSI validation images (never trained on): one mask per input, lesions found
    where there are lesions, and results.csv without a head circumference."""
    images = tmp_path / "in"
    images.mkdir()
    names = _busi_validation(8)
    for name in names:
        (images / name).symlink_to(SHARED_BUSI / "images" / name)
    results = parser_for(
        BREAST, "inference", dataset_dir=str(images), output_dir=str(tmp_path / "out")
    ).get_parsed_content("run")
    dice = []
    for name in names:
        predicted = read_image(tmp_path / "out" / name).pixels > 0
        truth = read_image(SHARED_BUSI / "masks" / name).pixels > 0
        assert predicted.shape == truth.shape
        if truth.any():
            dice.append(_dice(predicted, truth))
    assert len(dice) == 16 and np.mean(dice) > 0.6, dice
    header, first = results.read_text().splitlines()[:2]
    assert header == "image,mask,segment,pixels,not_measured"  # BUSI gives no pixel size: no area, and why
    assert first.endswith(",area: no pixel spacing; largest_diameter: no pixel spacing")


def test_a_copied_bundle_runs_on_its_own(tmp_path):
    """A user copies the bundle folder out of the repository and runs it with `python -m monai.bundle run`."""
    copy = shutil.copytree(FETAL, tmp_path / "fetal_head_us")
    result = _bundle_cli(
        "run",
        "--config_file",
        "configs/inference.json",
        "--bundle_root",
        ".",
        "--dataset_dir",
        str(SAMPLES / "images"),
        "--output_dir",
        str(tmp_path / "out"),
        "--pixel_size_csv",
        str(SAMPLES / "pixel_size_and_hc.csv"),
        cwd=copy,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert len(list((tmp_path / "out").glob("*.png"))) == 10


def test_head_circumference_matches_sonographer():
    """HC from the sonographer's own masks (filled drawings of the ellipse) reproduces the sonographer's HC within
    0.2 mm with the bundle's outline inset; the masks' outer edge alone measures 0.4 to 3 mm more."""
    sizes = read_pixel_sizes(SAMPLES / "pixel_size_and_hc.csv")
    reference = {
        r.split(",")[0]: float(r.split(",")[2])
        for r in (SAMPLES / "pixel_size_and_hc.csv").read_text().splitlines()[1:]
    }
    inset = BundleSpec.load(FETAL).segments[0].outline_inset_px
    for name, spacing in sizes.items():
        mask = read_image(SAMPLES / "masks" / name).pixels > 0
        edge, hc = head_circumference_mm(mask, spacing), head_circumference_mm(mask, spacing, inset)
        assert abs(hc - reference[name]) < 0.2 < edge - reference[name], (name, edge, hc, reference[name])


def test_bad_image_is_reported_and_rest_processed(tmp_path):
    images = tmp_path / "in"
    images.mkdir()
    (images / "broken.png").write_bytes(b"not a png")
    good = next((SAMPLES / "images").iterdir())
    (images / good.name).write_bytes(good.read_bytes())
    results = parser_for(
        FETAL, "inference", dataset_dir=str(images), output_dir=str(tmp_path / "out")
    ).get_parsed_content("run")
    assert len(results.read_text().splitlines()) == 2
    assert not (tmp_path / "out" / "broken.png").exists()
    assert not list((tmp_path / "out").glob(".*part*"))
    (images / good.name).unlink()
    parser = parser_for(FETAL, "inference", dataset_dir=str(images), output_dir=str(tmp_path / "out2"))
    with pytest.raises(NothingSegmented, match="none of 1 images could be segmented"):
        parser.get_parsed_content("workflow")()
    with pytest.raises(SystemExit, match="none of 1 images could be segmented"):
        parser.get_parsed_content("run")


def test_bad_input_to_the_bundle_run_is_one_line_and_exit_status_1(tmp_path):
    """`python -m monai.bundle run` on a folder that does not exist or holds no image: the problem in one line
    naming the folder, exit status 1, no traceback."""
    empty = tmp_path / "empty"
    empty.mkdir()
    for folder, problem in ((tmp_path / "missing", "no such input folder"), (empty, "no images to segment")):
        result = _bundle_cli(
            "run",
            "--config_file",
            "configs/inference.json",
            "--bundle_root",
            ".",
            "--dataset_dir",
            str(folder),
            "--output_dir",
            str(tmp_path / "out"),
            cwd=FETAL,
        )
        assert result.returncode == 1
        assert result.stderr.strip().splitlines()[-1].startswith(f"{folder}: {problem}"), result.stderr[-2000:]
        assert "Traceback" not in result.stderr


def test_two_step_training_and_distillation(tmp_path, sample_split):
    """The teacher, then the student distilled from it, from the bundle's configs on real images."""
    common = {
        "dataset_dir": str(SAMPLES),
        "split_file": str(sample_split),
        "output_dir": str(tmp_path),
        "preprocessing#spatial_size": [64, 64],
        "num_workers": 0,
        "max_epochs": 1,
        "datamodule#batch_size": 2,
        "trainer#limit_train_batches": 2,
        "trainer#enable_progress_bar": False,
    }
    teacher = parser_for(
        FETAL,
        "train",
        model_file=str(tmp_path / "teacher.pt"),
        run_name="teacher",
        **{"network_def#name": "thin_unet", "network_def#channels": 32},  # distill.json's teacher_def
        **common,
    ).get_parsed_content("run")
    assert teacher.is_file() and list(tmp_path.glob("teacher/*/training_curves.png"))
    parser = parser_for(FETAL, "distill", model_file=str(tmp_path / "student.pt"), teacher_file=str(teacher), **common)
    teacher_before = {k: v.clone() for k, v in parser.get_parsed_content("teacher").state_dict().items()}
    student = parser.get_parsed_content("run")
    state = torch.load(student, weights_only=True)
    assert not any(k.startswith(("adapters", "teacher")) for k in state), "adapters/teacher leaked into the export"
    exported = sum(v.numel() for k, v in state.items() if "running" not in k and "num_batches" not in k)
    assert exported == sum(p.numel() for p in parser.get_parsed_content("network_def").parameters())
    module = parser.get_parsed_content("module")
    for key, value in module.teacher.state_dict().items():  # the frozen teacher did not move
        assert torch.equal(value, teacher_before[key]), key


def test_ddp_two_cpu_processes(tmp_path, sample_split):
    """Lightning DDP, 2 processes on CPU (gloo), a couple of steps, from the same train config."""
    result = _bundle_cli(
        "run",
        "--config_file",
        "['configs/inference.json','configs/train.json']",
        "--bundle_root",
        ".",
        "--dataset_dir",
        str(SAMPLES),
        "--split_file",
        str(sample_split),
        "--output_dir",
        str(tmp_path),
        "--model_file",
        str(tmp_path / "ddp.pt"),
        "--preprocessing#spatial_size",
        "[64,64]",
        "--num_workers",
        "0",
        "--max_epochs",
        "1",
        "--datamodule#batch_size",
        "2",
        "--trainer#limit_train_batches",
        "2",
        "--trainer#accelerator",
        "cpu",
        "--trainer#devices",
        "2",
        "--trainer#strategy",
        "ddp",
        "--trainer#enable_progress_bar",
        "false",
        cwd=FETAL,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2" in output
    assert (tmp_path / "ddp.pt").is_file()


def test_evaluate_reports_dice_hd95_and_head_circumference(tmp_path, sample_split):
    parser = parser_for(
        FETAL, "evaluate", dataset_dir=str(SAMPLES), split_file=str(sample_split), output_dir=str(tmp_path)
    )
    summary = parser.get_parsed_content("run")
    assert summary["images"] == 4 and summary["dice"]["n"] == 4
    assert summary["dice"]["mean"] > 0.9
    assert summary["hd95_unit"] == "mm" and 0 < summary["hd95"]["mean"] < 20
    assert summary["hc_abs_diff_mm"]["n"] == 4 and summary["hc_abs_diff_mm"]["mean"] < 15
    assert json.loads((tmp_path / "metrics.json").read_text()) == summary
    assert len(json.loads((tmp_path / "per_image.json").read_text())) == 4


def test_evaluate_busi_reports_dice_per_class_and_normal_false_positives(tmp_path):
    split = tmp_path / "split.json"
    names = _busi_validation(2)
    split.write_text(json.dumps({"train": [], "validation": names}))
    summary = parser_for(BREAST, "evaluate", split_file=str(split), output_dir=str(tmp_path)).get_parsed_content("run")
    assert summary["images"] == 6 and summary["dice"]["n"] == 4
    assert set(summary["dice_by_class"]) == {"benign", "malignant"}
    assert all(summary["dice_by_class"][c]["n"] == 2 for c in ("benign", "malignant"))
    per_image = {row["image"]: row for row in json.loads((tmp_path / "per_image.json").read_text())}
    normals = [name for name in names if name.startswith("normal")]
    expected = sum(per_image[name]["predicted_any"] for name in normals) / len(normals)
    assert summary["false_positive_rate_on_empty"] == expected
    assert summary["hd95_unit"] == "pixels" and "hc_abs_diff_mm" not in summary


@pytest.mark.parametrize("bundle_id", BUNDLE_IDS)
def test_export_config_writes_torchscript_and_onnx_that_match(bundle_id, tmp_path):
    bundle = BUNDLES / bundle_id
    (tmp_path / "models").mkdir()
    shutil.copy(bundle / "models" / "model.pt", tmp_path / "models" / "model.pt")
    parser = parser_for(bundle, "export", bundle_root=str(tmp_path))
    parser.get_parsed_content("run")
    network = parser.get_parsed_content("network_def")
    batch = torch.rand(2, 1, *BundleSpec.load(bundle).preprocessing.spatial_size)
    expected = load_bundle_predictor(tmp_path, network, "torch").predict(batch)
    for backend in ("torchscript", "onnx"):
        got = load_bundle_predictor(tmp_path, None, backend).predict(batch)
        assert torch.allclose(got, expected, atol=1e-4), backend


@pytest.mark.parametrize("bundle_id", BUNDLE_IDS)
def test_shipped_backends_agree(bundle_id):
    """The shipped .onnx and .ts are exports of the shipped .pt (same logits)."""
    spec = BundleSpec.load(BUNDLES / bundle_id)
    torch.manual_seed(0)
    batch = torch.rand(2, 1, *spec.preprocessing.spatial_size)
    expected = spec.load_predictor("torch").predict(batch)
    for backend in ("onnx", "torchscript"):
        assert torch.allclose(spec.load_predictor(backend).predict(batch), expected, atol=1e-3), backend


def _broken_copy(tmp_path: Path, edit) -> Path:
    copy = shutil.copytree(FETAL, tmp_path / "broken", ignore=shutil.ignore_patterns("models", "experiments"))
    for name in ("inference.json", "metadata.json"):
        path = copy / "configs" / name
        config = json.loads(path.read_text())
        edit(name, config)
        path.write_text(json.dumps(config))
    return copy


@pytest.mark.parametrize(
    "edit, problem",
    [
        (
            lambda name, c: name == "inference.json" and c["preprocessing"].update(spatial_size=[256, 256]),
            "network_data_format input [128, 128] differs from inference.json preprocessing [256, 256]",
        ),
        (
            lambda name, c: name == "inference.json" and c["segments"][0].update(measurements=["diameter"]),
            "unknown measurement 'diameter'",
        ),
        (
            lambda name, c: name == "inference.json" and c["measurement_codes"].pop("area"),
            "measurement_codes: no codes for 'area'",
        ),
        (
            lambda name, c: name == "inference.json" and c["segments"][0].update(type={"value": "69536005"}),
            "segment 1 type must be {'value', 'scheme', 'meaning'}",
        ),
        (
            lambda name, c: name == "inference.json" and c["postprocessing"].update(activation="relu"),
            "unknown activation 'relu'",
        ),
        (
            lambda name, c: name == "inference.json" and c["series_rules"].append({"name": "all"}),
            "series_rules: every rule needs a name and non-empty conditions",
        ),
        (lambda name, c: name == "inference.json" and c.pop("segments"), "no 'segments' item"),
        (
            lambda name, c: (
                name == "metadata.json" and c["network_data_format"]["outputs"]["pred"].update(num_channels=3)
            ),
            "output has 3 channels; 1 segment(s) with sigmoid need 1",
        ),
    ],
    ids=["grid", "measurement", "uncoded", "code", "activation", "rule", "segments", "channels"],
)
def test_bundle_contract_errors_name_the_file_and_the_problem(tmp_path, edit, problem):
    with pytest.raises(BundleError) as error:
        BundleSpec.load(_broken_copy(tmp_path, edit))
    message = str(error.value)
    assert problem in message and "\n" not in message
    assert str(tmp_path / "broken" / "configs") in message


def test_find_bundles_names_a_folder_without_bundles(tmp_path):
    with pytest.raises(BundleError, match="not a model bundle .* and holds none"):
        find_bundles(tmp_path)
    with pytest.raises(BundleError, match="no such model bundle or folder"):
        find_bundles(tmp_path / "absent")
