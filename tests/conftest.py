"""Fixtures shared by the Deploy app's tests: the shipped bundles, served once for the whole session."""

from __future__ import annotations

import dataclasses
import json
import shutil

import pytest
import torch

from lightweight_nets.bundle import BundleSpec
from lightweight_nets.export import export_onnx
from lightweight_nets.inference.predictors import load_weights
from lightweight_nets.transforms import Postprocessing
from lightweight_seg.routing import DEFAULT_BUNDLES, ModelRouter


@pytest.fixture(scope="session")
def models() -> ModelRouter:
    """Every bundle the repository ships, each series routed by the bundles' rules."""
    return ModelRouter.from_path()


@pytest.fixture(scope="session")
def fetal_only(tmp_path_factory) -> ModelRouter:
    """Every series forced to a fetal-head model that finds a "head" to write on images no shipped model is for
    (CT, MR, ultrasound without a fetal head): the SEG plumbing on them. The served model finds nothing on some of
    these (its probability stays below 0.001 on pydicom-data's US1 images), so this is the fetal-head bundle with
    the 0.4.0 weights (the same network at 16 channels, ``experiments/student16_128.pt``) and without its "nothing
    here" rule."""
    source = (DEFAULT_BUNDLES / "fetal_head_us").resolve()
    root = tmp_path_factory.mktemp("bundles") / "fetal_head_us"
    shutil.copytree(source, root, ignore=shutil.ignore_patterns("experiments", "logs", "runs", "eval", "model.*"))
    config = root / "configs" / "inference.json"
    inference = json.loads(config.read_text())
    inference["network_def"]["channels"] = 16
    config.write_text(json.dumps(inference))
    shutil.copy(source / "experiments" / "student16_128.pt", root / "models" / "model.pt")
    spec = BundleSpec.load(root)
    net = load_weights(spec.network(), root / "models" / "model.pt")
    export_onnx(net, root / "models" / "model.onnx", torch.zeros(1, 1, *spec.preprocessing.spatial_size))
    post = spec.postprocessing
    found_everywhere = Postprocessing(post.activation, post.threshold, post.keep_largest)
    return ModelRouter([dataclasses.replace(spec, postprocessing=found_everywhere)], force=spec.id)


@pytest.fixture(scope="session")
def fetal(fetal_only):
    """The fetal-head bundle as ``fetal_only`` serves it."""
    return fetal_only.bundles["fetal_head_us"]
