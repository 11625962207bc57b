"""The 3D path: volume pre-processing and its inverse keep the geometry, the sliding window covers any volume, the
shipped CT and MR bundles segment their real sample volumes from their own configs, and 3D training and
distillation run from the same Lightning module and configs."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from monai.data import MetaTensor

import lightweight_nets
from lightweight_nets.bundle import BundleSpec, read_bundle_configs
from lightweight_nets.inference.predictors import TorchPredictor
from lightweight_nets.inference.segment import segment_volume
from lightweight_nets.transforms import Postprocessing, VolumePreprocessing

ROOT = Path(__file__).resolve().parents[1]
HIPPOCAMPUS, SARCOMA = ROOT / "bundle" / "hippocampus_mr", ROOT / "bundle" / "sarcoma_ct"
SAMPLES = ROOT / "samples"


def parser_for(bundle: Path, files: list[str], **overrides) -> ConfigParser:
    parser = read_bundle_configs(bundle, files)
    parser.update(overrides)
    return parser


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * (a & b).sum() / max(a.sum() + b.sum(), 1)


@pytest.mark.parametrize("axcodes_in", ["RAS", "LPS", "PIL"])
def test_preprocessing_and_its_inverse_keep_the_geometry(axcodes_in):
    """A real anisotropic CT label in three storage orientations: resampled to the model's orientation and spacing
    and back, it lands on the same voxels (nearest-neighbour agreement; the round trip halves the in-plane
    resolution on the way)."""
    image = nib.as_closest_canonical(nib.load(str(SAMPLES / "sarcoma_ct" / "labels" / "STS_019.nii.gz")))
    stored = image.as_reoriented(nib.orientations.axcodes2ornt(axcodes_in)) if axcodes_in != "RAS" else image
    volume = np.asarray(stored.dataobj).astype(np.float32)
    preprocessing = VolumePreprocessing([64, 64, 32], spacing_mm=[1.953125, 1.953125, 3.27], intensity="minmax")
    image_in = MetaTensor(torch.as_tensor(volume)[None], affine=torch.as_tensor(stored.affine))
    prepared = preprocessing(image_in)
    np.testing.assert_allclose(prepared.pixdim.numpy(), [1.953125, 1.953125, 3.27], rtol=1e-4)
    assert nib.aff2axcodes(prepared.affine.numpy()) == ("R", "A", "S")
    back = preprocessing.invert(prepared.as_tensor(), prepared, image_in)[0].numpy() > 0.5
    assert back.shape == volume.shape
    assert _dice(back, volume > 0.5) > 0.97


def test_sliding_window_covers_a_volume_larger_and_smaller_than_the_patch():
    torch.manual_seed(0)
    net = lightweight_nets.create_net(
        "thin_separable_student", spatial_dims=3, in_channels=1, out_channels=3, depth=4, channels=8
    ).eval()
    preprocessing = VolumePreprocessing([32, 48, 32], spacing_mm=[1.0, 1.0, 1.0])
    for shape in [(70, 90, 40), (20, 30, 17)]:
        volume = np.random.default_rng(0).random(shape).astype(np.float32)
        labels = segment_volume(
            volume,
            np.diag([1.0, 1.0, 1.0, 1.0]),
            TorchPredictor(net, "torch"),
            preprocessing,
            Postprocessing("softmax", keep_largest=False),
        )
        assert labels.shape == shape and labels.dtype == np.uint8 and set(np.unique(labels)) <= {0, 1, 2}


def test_volume_flip_averaging_mirrors_whole_sliding_windows():
    """With ``flip_axes`` each axis adds one sliding window over the mirrored volume, flipped back and averaged
    in; a network that is not mirror-symmetric (a random 3x3x3 convolution) shows that the flips are really run."""
    torch.manual_seed(0)
    net = torch.nn.Conv3d(1, 2, 3, padding=1).eval()
    volume = torch.rand(1, 1, 40, 30, 20)
    plain = VolumePreprocessing([16, 16, 16], spacing_mm=None)
    flipped = VolumePreprocessing([16, 16, 16], spacing_mm=None, flip_axes=[0, 2])
    assert "flip_axes=[0, 2]" in repr(flipped) and "flip" not in repr(plain)
    with torch.no_grad():
        once = plain.inferer(volume, net)
        expected = (once + plain.inferer(volume.flip(2), net).flip(2) + plain.inferer(volume.flip(4), net).flip(4)) / 3
        averaged = flipped.inferer(volume, net)
    torch.testing.assert_close(averaged, expected)
    assert not torch.allclose(averaged, once, atol=1e-3)
    with pytest.raises(ValueError, match="flip_axes of a volume"):
        VolumePreprocessing([16, 16, 16], flip_axes=[3])


@pytest.mark.parametrize("bundle, minimum_dice", [(HIPPOCAMPUS, 0.75), (SARCOMA, 0.5)], ids=["hippocampus", "sarcoma"])
def test_shipped_3d_model_segments_its_samples(bundle, minimum_dice, tmp_path):
    """The bundle's own inference config on its real sample volumes (validation cases, never trained on): one
    label map per input with the input's grid, overlays, and results.csv with the volume of each segment."""
    spec = BundleSpec.load(bundle)
    results = parser_for(bundle, ["inference.json"], output_dir=str(tmp_path)).get_parsed_content("run")
    samples = SAMPLES / bundle.name
    rows = list(csv.DictReader(results.open()))
    assert {row["segment"] for row in rows} == {segment.label for segment in spec.segments}
    for image_path in sorted((samples / "images").glob("*.nii.gz")):
        written = nib.load(str(tmp_path / image_path.name))
        source = nib.load(str(image_path))
        assert written.shape == source.shape and np.allclose(written.affine, source.affine)
        assert (tmp_path / "overlays" / image_path.name.replace(".nii.gz", ".png")).is_file()
        predicted = np.asarray(written.dataobj)
        truth = np.rint(np.asarray(nib.load(str(samples / "labels" / image_path.name)).dataobj))
        for segment in spec.segments:
            dice = _dice(predicted == segment.number, truth == segment.number)
            assert dice > minimum_dice, (image_path.name, segment.label, dice)
            row = next(r for r in rows if r["volume"] == image_path.name and r["segment"] == segment.label)
            voxel = float(np.prod(source.header.get_zooms()[:3]))
            assert float(row["volume_mm3"]) == pytest.approx((predicted == segment.number).sum() * voxel, rel=1e-3)


def test_3d_training_and_distillation_from_the_bundle_configs(tmp_path):
    """The hippocampus bundle's train and distill configs, a few steps on real volumes, softmax over three
    labels, float32 and channels-last on the CPU; validation through the sliding window reports Dice per label."""
    split = tmp_path / "split.json"
    names = json.loads((HIPPOCAMPUS / "data" / "hippocampus_split.json").read_text())
    split.write_text(json.dumps({"train": names["train"][:4], "validation": names["validation"][:2]}))
    common = {
        "split_file": str(split),
        "output_dir": str(tmp_path),
        "num_workers": 0,
        "max_epochs": 1,
        "trainer#limit_train_batches": 2,
        "trainer#enable_progress_bar": False,
        "network_def#channels": 8,
    }
    train = ["inference.json", "train.json"]
    teacher = parser_for(
        HIPPOCAMPUS,
        train,
        model_file=str(tmp_path / "teacher.pt"),
        run_name="teacher",
        **{"network_def#name": "thin_unet"},
        **common,
    ).get_parsed_content("run")
    metrics = next(tmp_path.glob("teacher/*/metrics.csv")).read_text()
    assert "val_dice_1" in metrics and "val_dice_2" in metrics
    # a run cut short goes on from its last checkpoint: the second epoch only
    (last,) = tmp_path.glob("teacher/*/checkpoints/last.ckpt")
    parser_for(
        HIPPOCAMPUS,
        train,
        model_file=str(tmp_path / "teacher.pt"),
        run_name="resumed",
        resume_from=str(last),
        **{"network_def#name": "thin_unet"},
        **{**common, "max_epochs": 2},
    ).get_parsed_content("run")
    (resumed,) = tmp_path.glob("resumed/*/metrics.csv")
    assert {row["epoch"] for row in csv.DictReader(resumed.open()) if row.get("val_loss")} == {"1"}
    student = parser_for(
        HIPPOCAMPUS,
        [*train, "distill.json"],
        model_file=str(tmp_path / "student.pt"),
        teacher_file=str(teacher),
        **{"teacher_def#channels": 8},
        **common,
    ).get_parsed_content("run")
    state = torch.load(student, weights_only=True)
    assert not any(k.startswith(("adapters", "teacher")) for k in state)
    assert "feature_loss" in next(tmp_path.glob("model/*/metrics.csv")).read_text()


def test_evaluate_volumes_reports_dice_hd95_and_volume_per_segment(tmp_path):
    split = tmp_path / "split.json"
    split.write_text(
        json.dumps(
            {"train": [], "validation": sorted(p.name for p in (SAMPLES / "hippocampus_mr" / "images").iterdir())[:2]}
        )
    )
    summary = parser_for(
        HIPPOCAMPUS,
        ["inference.json", "evaluate.json"],
        dataset_dir=str(SAMPLES / "hippocampus_mr"),
        split_file=str(split),
        output_dir=str(tmp_path),
    ).get_parsed_content("run")
    assert summary["volumes"] == 2 and set(summary["dice"]) == {"anterior hippocampus", "posterior hippocampus"}
    assert all(summary["dice"][label]["n"] == 2 and summary["hd95_mm"][label]["mean"] > 0 for label in summary["dice"])
    assert summary["mean_dice"]["mean"] > 0.7 and summary["seconds_per_volume"]["mean"] > 0
    assert json.loads((tmp_path / "metrics.json").read_text()) == summary


def test_bundle_inference_reads_a_dicom_series_folder(tmp_path):
    """The sarcoma bundle's inference config on a folder holding a DICOM CT series (the demo's limb CT): one label
    map named after the folder, on the series grid (the same grid as the series' own reference label)."""
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "sts_019_ct").symlink_to(SAMPLES / "dicom" / "sts_019_ct")
    parser_for(
        SARCOMA, ["inference.json"], dataset_dir=str(tmp_path / "in"), output_dir=str(tmp_path / "out")
    ).get_parsed_content("run")
    written = nib.load(str(tmp_path / "out" / "sts_019_ct.nii.gz"))
    reference = nib.load(str(ROOT.parent / "shared" / "data" / "sts_dicom" / "STS_019" / "CT" / "label.nii.gz"))
    assert written.shape == reference.shape and np.allclose(written.affine, reference.affine, atol=1e-4)
    predicted, truth = np.asarray(written.dataobj) > 0, np.asarray(reference.dataobj) > 0
    dice, recall = _dice(predicted, truth), (predicted & truth).sum() / truth.sum()
    print(f"\nSTS_019 CT series through the bundle: Dice {dice:.3f}, reference covered {recall:.0%}")
    # the series is a wider field (5 cm margin) than the training crops: the model over-grows (model card), but a
    # wrong geometry would miss the tumour
    assert recall > 0.9 and dice > 0.25
