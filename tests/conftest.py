"""Fixtures shared by the Deploy app's tests: the shipped bundles, served once for the whole session."""

from __future__ import annotations

import pytest

from lightweight_seg.routing import ModelRouter


@pytest.fixture(scope="session")
def models() -> ModelRouter:
    """Every bundle the repository ships, each series routed by the bundles' rules."""
    return ModelRouter.from_path()


@pytest.fixture(scope="session")
def fetal_only() -> ModelRouter:
    """Every series forced to the fetal-head model: the SEG plumbing on CT and MR, which no shipped model is for."""
    return ModelRouter.from_path(force="fetal_head_us")


@pytest.fixture(scope="session")
def fetal(models):
    return models.bundles["fetal_head_us"]
