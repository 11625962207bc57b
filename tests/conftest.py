"""Fixtures shared by the Deploy app's tests: one model bundle and its predictor for the whole session."""

from __future__ import annotations

import pytest
from test_app_support import make_bundle

from lightweight_nets.inference import load_bundle_predictor


@pytest.fixture(scope="session")
def bundle(tmp_path_factory):
    return make_bundle(tmp_path_factory.mktemp("bundle"))


@pytest.fixture(scope="session")
def predictor(bundle):
    return load_bundle_predictor(bundle)
