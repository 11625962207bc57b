"""Fixtures: a real Orthanc PACS (Debian `orthanc` + DICOMweb plugin) on loopback, and listener processes."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
import requests
from pacs_support import DICOMWEB_PLUGIN, NODE_AET, PASSWORD, USER, Listener, Orthanc, free_port, wait_for


@pytest.fixture(scope="session")
def orthanc(tmp_path_factory):
    """One Orthanc for the session (tests use fresh UIDs, so they do not see each other's data)."""
    if shutil.which("Orthanc") is None or not Path(DICOMWEB_PLUGIN).exists():
        pytest.fail("Orthanc is not installed: make system-packages (Debian orthanc, orthanc-dicomweb)")
    root = tmp_path_factory.mktemp("orthanc")
    server = Orthanc(http_port=free_port(), dicom_port=free_port())
    config = {
        "Name": "lwseg-test",
        "StorageDirectory": str(root / "db"),
        "IndexDirectory": str(root / "db"),
        "HttpPort": server.http_port,
        "DicomPort": server.dicom_port,
        "DicomAet": server.aet,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": True,
        "RegisteredUsers": {USER: PASSWORD},
        "Plugins": [DICOMWEB_PLUGIN],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        # C-GET and C-FIND from our node: Orthanc answers known modalities only (the port is unused by C-GET).
        "DicomModalities": {"lwseg": [NODE_AET, "127.0.0.1", 1]},
        "DicomScpTimeout": 30,
    }
    (root / "orthanc.json").write_text(json.dumps(config))
    log = open(root / "orthanc.log", "wb")
    process = subprocess.Popen(["Orthanc", str(root / "orthanc.json")], stdout=log, stderr=subprocess.STDOUT)

    def ready():
        if process.poll() is not None:
            raise RuntimeError(f"Orthanc exited: {(root / 'orthanc.log').read_text()[-2000:]}")
        try:
            return requests.get(f"{server.url}/system", auth=(USER, PASSWORD), timeout=1).ok
        except requests.ConnectionError:
            return False

    wait_for(ready, 30, what="Orthanc")
    yield server
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=60)
    log.close()


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
