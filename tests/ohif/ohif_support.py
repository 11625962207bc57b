"""The OHIF viewer test's serving and browser side: OHIF's built viewer and a real Orthanc behind one loopback origin,
and headless Chromium (driven by playwright-core, view_study.mjs) opening a study and loading its SEG."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import requests
from PIL import Image

HERE = Path(__file__).resolve().parent
VIEWER_DIST = HERE / "viewer" / "dist"
DRIVER = HERE / "view_study.mjs"
CHROMIUM = "/usr/bin/chromium"
# Orthanc's DICOMweb and WADO-URI roots, passed through to it with its credentials.
PROXIED = ("/dicom-web/", "/wado")


def missing_tools() -> str | None:
    """Why the browser test cannot run here (None when it can): the pieces `make ohif` and `make system-packages`
    install."""
    if not (VIEWER_DIST / "index.html").exists() or not (HERE / "node_modules" / "playwright-core").exists():
        return "the OHIF viewer or playwright-core is not installed: make ohif"
    if not Path(CHROMIUM).exists() or shutil.which("node") is None:
        return "chromium or node is missing: make system-packages (Debian chromium, nodejs)"
    return None


def app_config(origin: str) -> str:
    """OHIF's app-config.js: one DICOMweb data source, the Orthanc behind this same origin (so no CORS)."""
    source = {
        "namespace": "@ohif/extension-default.dataSourcesModule.dicomweb",
        "sourceName": "orthanc",
        "configuration": {
            "friendlyName": "test Orthanc",
            "name": "orthanc",
            "qidoRoot": f"{origin}/dicom-web",
            "wadoRoot": f"{origin}/dicom-web",
            "wadoUriRoot": f"{origin}/wado",
            "qidoSupportsIncludeField": False,
            "imageRendering": "wadors",
            "thumbnailRendering": "wadors",
            "enableStudyLazyLoad": True,
            "supportsFuzzyMatching": False,
            "supportsWildcard": True,
            "staticWado": False,
            "bulkDataURI": {"enabled": True},
            "omitQuotationForMultipartRequest": True,
        },
    }
    config = {
        "routerBasename": "/",
        "extensions": [],
        "modes": [],
        "showStudyList": True,
        "maxNumberOfWebWorkers": 2,
        "showWarningMessageForCrossOrigin": False,
        "showCPUFallbackMessage": False,
        "showLoadingIndicator": True,
        "investigationalUseDialog": {"option": "never"},
        "defaultDataSourceName": "orthanc",
        "dataSources": [source],
    }
    return f"window.config = {json.dumps(config, indent=1)};\n"


class ViewerServer:
    """OHIF's dist/ with our app-config.js, and Orthanc's DICOMweb under the same loopback origin: a small reverse
    proxy that adds Orthanc's credentials. `stop()` ends it."""

    def __init__(self, orthanc_url: str, auth: tuple[str, str]):
        handler = partial(_Handler, directory=str(VIEWER_DIST))
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.orthanc_url, self.httpd.auth = orthanc_url, auth
        self.origin = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.httpd.config_js = app_config(self.origin).encode()
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def study_url(self, study_uid: str) -> str:
        return f"{self.origin}/viewer?StudyInstanceUIDs={study_uid}"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class _Handler(SimpleHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's name)
        if self.path.startswith(PROXIED):
            return self._proxy()
        if self.path.split("?")[0] == "/app-config.js":
            return self._send(200, "application/javascript", self.server.config_js)
        local = Path(self.translate_path(self.path))
        if not local.exists():  # the viewer's own routes (/viewer?...): its single page
            self.path = "/index.html"
        return super().do_GET()

    def _proxy(self):
        # Host passes through: Orthanc writes its bulk data URLs from it, so they point back here (same origin).
        headers = {key: value for key, value in self.headers.items() if key.lower() in ("accept", "range", "host")}
        answer = requests.get(
            f"{self.server.orthanc_url}{self.path}", headers=headers, auth=self.server.auth, timeout=60
        )
        self._send(answer.status_code, answer.headers.get("Content-Type", "application/octet-stream"), answer.content)

    def _send(self, status: int, content_type: str, body: bytes):
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):  # the browser closed the page before the answer came
            pass

    def log_message(self, *args):  # quiet: the test reports what the page saw
        pass


def view_study(url: str, out_dir: Path, modality: str = "SEG", timeout_s: float = 60) -> dict:
    """Open ``url`` in headless Chromium, screenshot the study (``before.png``), load its SEG or SR (``modality``) the
    way a user does (double-click its thumbnail; for a SEG, accept the hydration prompt) and screenshot again
    (``after.png``), both in ``out_dir``. Returns what view_study.mjs reports: the viewport's box in each screenshot,
    the text drawn on the viewport after loading (``viewportText``), the page's console messages and errors, and the
    step it failed at, if any."""
    out_dir.mkdir(parents=True, exist_ok=True)
    run = subprocess.run(
        ["node", str(DRIVER), url, str(out_dir), CHROMIUM, str(int(timeout_s * 1000)), modality],
        capture_output=True,
        text=True,
        timeout=timeout_s + 60,
        cwd=HERE,
    )
    if run.returncode != 0 or not run.stdout.strip():
        raise RuntimeError(f"{DRIVER.name} failed (exit {run.returncode}): {run.stderr[-2000:]}")
    return json.loads(run.stdout)


def _image_crop(box: dict, rows: int, columns: int) -> tuple[tuple[int, int, int, int], float]:
    """Where the image lies in a screenshot (fitted into the viewport ``box``, centred, as OHIF shows it at first):
    its crop box and the screen pixels per image pixel."""
    scale = min(box["width"] / columns, box["height"] / rows)
    left = box["x"] + (box["width"] - columns * scale) / 2
    top = box["y"] + (box["height"] - rows * scale) / 2
    return (round(left), round(top), round(left + columns * scale), round(top + rows * scale)), scale


def outline_drawn(
    before: Path,
    after: Path,
    box: dict,
    rows: int,
    columns: int,
    outline: np.ndarray,
    reach_px: int = 2,
    min_change: float = 40,
) -> float:
    """How much of a shape the viewer drew: the fraction of points along ``outline`` (image (column, row)
    coordinates, a polyline) where the ``after`` screenshot differs from ``before`` by at least ``min_change`` (of
    255, in any channel) within ``reach_px`` screen pixels."""
    (left, top, _, _), scale = _image_crop(box, rows, columns)
    with Image.open(before) as b, Image.open(after) as a:
        change = np.abs(np.asarray(a.convert("RGB"), dtype=np.float32) - np.asarray(b.convert("RGB"), dtype=np.float32))
    changed = change.max(axis=2) >= min_change
    steps = [
        np.linspace(start, end, max(2, int(np.linalg.norm(end - start) * scale)), endpoint=False)
        for start, end in zip(outline[:-1], outline[1:])
    ]
    screen = np.rint(np.concatenate(steps) * scale + [left, top]).astype(int)
    hits = [
        changed[max(y - reach_px, 0) : y + reach_px + 1, max(x - reach_px, 0) : x + reach_px + 1].any()
        for x, y in screen
    ]
    return float(np.mean(hits))


def overlay_mask(
    before: Path,
    after: Path,
    box: dict,
    rows: int,
    columns: int,
    color_rgb: tuple[int, int, int],
    min_alpha: float = 0.2,
) -> np.ndarray:
    """Where the viewer drew the overlay, on the image's own ``rows`` x ``columns`` grid: the pixels of the image
    (fitted into the viewport ``box``, centred, as OHIF shows it at first) that moved from the ``before``
    screenshot towards the segment's display colour, by at least ``min_alpha`` of the way."""
    crop, _ = _image_crop(box, rows, columns)
    with Image.open(before) as b, Image.open(after) as a:
        base = np.asarray(b.convert("RGB").crop(crop), dtype=np.float32)
        shown = np.asarray(a.convert("RGB").crop(crop), dtype=np.float32)
    towards = np.asarray(color_rgb, dtype=np.float32) - base
    reach = np.einsum("ijk,ijk->ij", shown - base, towards) / np.maximum(np.einsum("ijk,ijk->ij", towards, towards), 1)
    tinted = Image.fromarray(((reach >= min_alpha) & (np.abs(towards).max(axis=2) > 30)).astype(np.uint8) * 255)
    return np.asarray(tinted.resize((columns, rows), Image.Resampling.BOX)) >= 128
