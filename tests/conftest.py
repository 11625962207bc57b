"""Fixtures shared by the Deploy app's tests: the shipped bundles, served once for the whole session."""

from __future__ import annotations

import shutil

import pytest
import torch
from monai.bundle import ConfigParser

from lightweight_nets.bundle import BundleSpec
from lightweight_nets.export import export_onnx
from lightweight_nets.inference.predictors import load_weights
from lightweight_nets.training.train_all import bundle_jobs, job_overrides
from lightweight_seg.routing import DEFAULT_BUNDLES, ModelRouter


@pytest.fixture(scope="session")
def models() -> ModelRouter:
    """Every bundle the repository ships, each series routed by the bundles' rules."""
    return ModelRouter.from_path()


@pytest.fixture(scope="session")
def fetal_only(tmp_path_factory) -> ModelRouter:
    """Every series forced to a fetal-head model that finds a "head" to write on images no shipped model is for
    (CT, MR, ultrasound without a fetal head): the SEG plumbing on them. The served model finds nothing on some of
    these (its probability stays below 0.001 on pydicom-data's US1 images), so this is the fetal-head bundle
    serving the weights of its train job ``student16_128`` (0.4.0's 16-channel model) with that job's overrides,
    which include no "nothing here" rule."""
    source = (DEFAULT_BUNDLES / "fetal_head_us").resolve()
    job = bundle_jobs(source)["student16_128"]
    root = tmp_path_factory.mktemp("bundles") / "fetal_head_us"
    shutil.copytree(source, root, ignore=shutil.ignore_patterns("experiments", "logs", "runs", "eval", "model.*"))
    config = ConfigParser(ConfigParser.load_config_file(str(root / "configs" / "inference.json")))
    for key, value in job_overrides(source, job).items():
        config[key] = value
    ConfigParser.export_config_file(config.get(), str(root / "configs" / "inference.json"))
    shutil.copy(source / job["weights"], root / "models" / "model.pt")
    spec = BundleSpec.load(root)
    net = load_weights(spec.network(), root / "models" / "model.pt")
    export_onnx(net, root / "models" / "model.onnx", torch.zeros(1, 1, *spec.preprocessing.spatial_size))
    return ModelRouter([spec], force=spec.id)


@pytest.fixture(scope="session")
def fetal(fetal_only):
    """The fetal-head bundle as ``fetal_only`` serves it."""
    return fetal_only.bundles["fetal_head_us"]
