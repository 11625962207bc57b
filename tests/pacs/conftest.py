"""Fixtures: a real Orthanc PACS (Debian `orthanc` + DICOMweb plugin) on loopback, and listener processes."""

from __future__ import annotations

from pathlib import Path

import pytest
from pacs_support import Listener, start_orthanc


@pytest.fixture(scope="session")
def orthanc(tmp_path_factory):
    """One Orthanc for the session (tests use fresh UIDs, so they do not see each other's data)."""
    server = start_orthanc(tmp_path_factory.mktemp("orthanc"))
    yield server
    server.stop()


@pytest.fixture
def listener_factory():
    """Start listeners for a test; whatever is still running at the end is stopped."""
    started = []

    def start(config: Path) -> Listener:
        listener = Listener(config)
        started.append(listener)
        return listener.start()

    yield start
    for listener in started:
        listener.stop()
