"""Fixtures shared by the Deploy app's tests: the shipped bundles, served once for the whole session."""

from __future__ import annotations

import dataclasses

import pytest

from lightweight_nets.bundle import BundleSpec
from lightweight_nets.transforms import Postprocessing
from lightweight_seg.routing import DEFAULT_BUNDLES, ModelRouter


@pytest.fixture(scope="session")
def models() -> ModelRouter:
    """Every bundle the repository ships, each series routed by the bundles' rules."""
    return ModelRouter.from_path()


@pytest.fixture(scope="session")
def fetal_only() -> ModelRouter:
    """Every series forced to the fetal-head model without its "nothing here" rule: the SEG plumbing on images no
    shipped model is for (CT, MR, ultrasound without a fetal head), where the model then finds a "head" to write."""
    spec = BundleSpec.load(DEFAULT_BUNDLES / "fetal_head_us")
    post = spec.postprocessing
    found_everywhere = Postprocessing(post.activation, post.threshold, post.keep_largest)
    return ModelRouter([dataclasses.replace(spec, postprocessing=found_everywhere)], force=spec.id)


@pytest.fixture(scope="session")
def fetal(fetal_only):
    """The fetal-head bundle as ``fetal_only`` serves it."""
    return fetal_only.bundles["fetal_head_us"]
