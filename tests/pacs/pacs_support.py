"""Helpers for the PACS tests: Orthanc access, fresh series from real pydicom-data files, our node as a process."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pydicom
import requests
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import Verification

REPO = Path(__file__).resolve().parents[2]
DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
NODE_AET = "LWSEG"
SENDER_AET = "TESTSCU"
USER, PASSWORD = "lwseg", "not-a-real-secret"
# A real three-slice CT series (16 x 16 pixels: fast to segment).
CT_SERIES = ["dicomdirtests/77654033/CT2/17106", "dicomdirtests/77654033/CT2/17136", "dicomdirtests/77654033/CT2/17166"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(condition, timeout: float, interval: float = 0.1, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout} s waiting for {what}")


@dataclass
class Orthanc:
    http_port: int
    dicom_port: int
    aet: str = "ORTHANC"
    process: subprocess.Popen | None = None

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=60)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb(self) -> str:
        return f"{self.url}/dicom-web"

    def get(self, path: str, **params):
        answer = requests.get(f"{self.url}{path}", params=params, auth=(USER, PASSWORD), timeout=30)
        answer.raise_for_status()
        return answer.json()

    def sop_uids(self, study_uid: str | None = None, modality: str | None = None) -> list[str]:
        """SOP Instance UIDs Orthanc holds (of one study, of one modality), found through its REST API."""
        query = {key: value for key, value in (("StudyInstanceUID", study_uid), ("Modality", modality)) if value}
        found = requests.post(
            f"{self.url}/tools/find",
            json={"Level": "Instance", "Query": query, "Expand": True},
            auth=(USER, PASSWORD),
            timeout=30,
        )
        found.raise_for_status()
        return sorted(i["MainDicomTags"]["SOPInstanceUID"] for i in found.json())

    def peers(self) -> dict:
        """This PACS as a DIMSE peer and as a DICOMweb peer, for a node config."""
        return {
            "pacs": {"ae_title": self.aet, "host": "127.0.0.1", "port": self.dicom_port},
            "pacs-web": {"dicomweb": self.dicomweb},
        }


def start_orthanc(root: Path, dicom_port: int | None = None) -> Orthanc:
    """A real Orthanc (Debian `orthanc` + DICOMweb plugin) on loopback, its files under `root`; `stop()` ends it."""
    if shutil.which("Orthanc") is None or not Path(DICOMWEB_PLUGIN).exists():
        raise RuntimeError("Orthanc is not installed: make system-packages (Debian orthanc, orthanc-dicomweb)")
    root.mkdir(parents=True, exist_ok=True)
    server = Orthanc(http_port=free_port(), dicom_port=dicom_port or free_port())
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
    with open(root / "orthanc.log", "wb") as log:
        server.process = subprocess.Popen(["Orthanc", str(root / "orthanc.json")], stdout=log, stderr=subprocess.STDOUT)

    def ready():
        if server.process.poll() is not None:
            raise RuntimeError(f"Orthanc exited: {(root / 'orthanc.log').read_text()[-2000:]}")
        try:
            return requests.get(f"{server.url}/system", auth=(USER, PASSWORD), timeout=1).ok
        except requests.ConnectionError:
            return False

    wait_for(ready, 30, what="Orthanc")
    return server


def fresh_series(sources: list[str] | str, out_dir: Path, study_uid: str | None = None) -> tuple[str, str, list[Path]]:
    """A new series from real pydicom-data files: same pixels, new Study/Series/SOP Instance UIDs."""
    sources = [sources] if isinstance(sources, str) else sources
    study_uid = study_uid or generate_uid()
    series_uid = generate_uid()
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for number, source in enumerate(sources, start=1):
        ds = pydicom.dcmread(source if os.path.isabs(source) else get_testdata_file(source))
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.InstanceNumber = number
        path = out_dir / f"{ds.SOPInstanceUID}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return study_uid, series_uid, paths


def storescu(
    paths: list[Path], port: int, aet: str = SENDER_AET, called: str = NODE_AET
) -> subprocess.CompletedProcess:
    """Send files with dcmtk's storescu (a real, independent DICOM sender)."""
    return subprocess.run(
        ["storescu", "-aet", aet, "-aec", called, "127.0.0.1", str(port), *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def echo(port: int, aet: str = SENDER_AET) -> bool:
    ae = AE(ae_title=aet)
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", port, ae_title=NODE_AET)
    if not assoc.is_established:
        return False
    status = assoc.send_c_echo()
    assoc.release()
    return bool(status) and status.Status == 0


def write_config(path: Path, orthanc: Orthanc, **overrides) -> Path:
    config = {
        "spool_dir": str(path.parent / "spool"),
        "ae_title": NODE_AET,
        "host": "127.0.0.1",
        "port": free_port(),
        "allowed_calling_aets": [SENDER_AET],
        "quiet_seconds": 1.0,
        "max_attempts": 2,
        "retry_seconds": 0.5,
        "peers": orthanc.peers(),
        "destination": "pacs",
        "model": "fetal_head_us",  # the test series are CT, which no shipped model is for: a node dedicated to one
    }
    config.update(overrides)
    path.write_text(json.dumps(config, indent=1))
    return path


def credentials_env() -> dict:
    return {**os.environ, "LWSEG_DICOMWEB_USERNAME": USER, "LWSEG_DICOMWEB_PASSWORD": PASSWORD}


def cli(config: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "lightweight_seg.pacs", "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=credentials_env(),
        cwd=REPO,
    )


class Listener:
    """`python -m lightweight_seg.pacs listen` as a real process (so that it can be killed with SIGKILL)."""

    def __init__(self, config: Path):
        self.config = config
        self.port = json.loads(config.read_text())["port"]
        self.log_path = config.parent / "listener.log"
        self.process = None

    def start(self, timeout: float = 60) -> Listener:
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "lightweight_seg.pacs", "--config", str(self.config), "listen"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=credentials_env(),
            cwd=REPO,
        )
        log.close()

        def up():
            if self.process.poll() is not None:
                raise RuntimeError(f"listener exited: {self.log()[-3000:]}")
            return "model ready" in self.log() and echo(self.port)

        wait_for(up, timeout, interval=0.2, what="the listener to load its model and answer C-ECHO")
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            assert self.process.wait(timeout=120) == 0, f"listener did not stop cleanly: {self.log()[-2000:]}"
