"""Shared pieces of the Deploy app's tests: the real input files, a model bundle, and dciodvfy."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from pydicom.data import get_testdata_file

import lightweight_nets
from lightweight_nets.inference import MODEL_SUFFIXES, export_onnx
from lightweight_seg.pipeline import DEFAULT_BUNDLE

TEST_FILES = Path(get_testdata_file("MR_small.dcm", download=False)).parent
SINGLE_FILE_INPUTS = ["US1_UNCR.dcm", "US1_J2KR.dcm", "OBXXXX1A.dcm", "OBXXXX1A_2frame.dcm", "examples_ybr_color.dcm",
                      "color3d_jpeg_baseline.dcm", "MR_small.dcm", "CT_small.dcm"]
FOLDER_INPUTS = {"CT5N": "dicomdirtests/98892001/CT5N", "MR700": "dicomdirtests/98892003/MR700"}


def input_path(name: str) -> Path:
    """A real input: a pydicom / pydicom-data file (no download: both ship their files) or a series folder."""
    if name in FOLDER_INPUTS:
        return TEST_FILES / FOLDER_INPUTS[name]
    path = get_testdata_file(name, download=False)
    assert path is not None, f"{name} is not available offline"
    return Path(path)


def make_bundle(root: Path) -> Path:
    """The repository's bundle when it holds a trained model, else a bundle with a freshly initialised
    ``thin_separable_student`` exported to ONNX (same architecture and input grid, untrained weights)."""
    if any((DEFAULT_BUNDLE / "models" / f"model{suffix}").is_file() for suffix in MODEL_SUFFIXES.values()):
        return DEFAULT_BUNDLE
    (root / "models").mkdir(parents=True)
    (root / "configs").mkdir()
    torch.manual_seed(0)
    net = lightweight_nets.create_net("thin_separable_student", spatial_dims=2, in_channels=1, out_channels=1)
    export_onnx(net.eval(), root / "models" / "model.onnx", torch.zeros(1, 1, 256, 256))
    (root / "configs" / "metadata.json").write_text(json.dumps({"name": "untrained test net", "version": "0.0.0"}))
    return root


def dciodvfy_errors(path: Path) -> list[str]:
    """The error lines dciodvfy reports for a DICOM file."""
    if shutil.which("dciodvfy") is None:
        pytest.fail("dciodvfy missing: install dicom3tools (make system-packages)")
    run = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True)
    return [line for line in (run.stdout + run.stderr).splitlines() if line.startswith("Error")]
