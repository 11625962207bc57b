"""The CPU MAP: its manifests agree with each other and with the image (fast), and the built image runs the app
on real DICOM (slow: builds the image with apps/lightweight_seg/map/build.sh; `podman run` is refused here, so
the image is mounted and the entrypoint run in a chroot with the image's environment)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import highdicom as hd
import pytest
import yaml
from test_app_support import (
    REFERENCED_FRAME_OF_SINGLE_FRAME_CLASS,
    SHARED_DATA,
    dciodvfy_errors,
    input_path,
    write_ultrasound,
)

from lightweight_seg.routing import DEFAULT_BUNDLES

REPO = Path(__file__).resolve().parents[1]
MAP_DIR = REPO / "apps" / "lightweight_seg" / "map"
APP_JSON = json.loads((MAP_DIR / "app.json").read_text())
PKG_JSON = json.loads((MAP_DIR / "pkg.json").read_text())
PODMAN = ["podman", "--storage-driver=vfs"]


def _dockerfile_env() -> dict[str, str]:
    text = (MAP_DIR / "Dockerfile").read_text()
    block = re.search(r"^ENV (.*?)(?=^\S)", text, re.M | re.S).group(1)
    return dict(pair.split("=", 1) for pair in block.replace("\\\n", " ").split())


def test_manifests_agree_with_each_other_and_the_image():
    env = APP_JSON["environment"]
    assert json.loads(APP_JSON["command"]) == ["/opt/holoscan/venv/bin/python3", env["HOLOSCAN_APPLICATION"]]
    assert PKG_JSON["applicationRoot"] == env["HOLOSCAN_APPLICATION"] == "/opt/holoscan/app"
    assert PKG_JSON["modelRoot"] == env["HOLOSCAN_MODEL_PATH"] == "/opt/holoscan/models"  # a folder of bundles
    shipped = sorted(p.name for p in DEFAULT_BUNDLES.iterdir() if (p / "configs" / "inference.json").is_file())
    assert PKG_JSON["models"] == {name: f"{PKG_JSON['modelRoot']}/{name}" for name in shipped}
    assert env["HOLOSCAN_APP_MANIFEST_PATH"] == "/etc/holoscan/app.json"
    assert env["HOLOSCAN_PKG_MANIFEST_PATH"] == "/etc/holoscan/pkg.json"
    assert env["HOLOSCAN_INPUT_PATH"] == f"{APP_JSON['workingDirectory']}/{APP_JSON['input']['path'].rstrip('/')}"
    assert env["HOLOSCAN_OUTPUT_PATH"] == f"{APP_JSON['workingDirectory']}/{APP_JSON['output']['path'].rstrip('/')}"
    assert (APP_JSON["sdk"], APP_JSON["sdkVersion"]) == ("monai-deploy", "4.0.0")
    image_env = _dockerfile_env()
    assert {key: image_env[key] for key in env} == env  # the image sets what the manifest declares
    assert 'ENTRYPOINT ["/var/holoscan/tools"]' in (MAP_DIR / "Dockerfile").read_text()
    resources = yaml.safe_load((REPO / "apps" / "lightweight_seg" / "app.yaml").read_text())["resources"]
    assert PKG_JSON["resources"]["gpu"] == resources["gpu"] == 0
    assert (PKG_JSON["resources"]["cpu"], PKG_JSON["resources"]["memory"]) == (resources["cpu"], resources["memory"])


@pytest.fixture(scope="module")
def map_image(tmp_path_factory):
    """The MAP image built from the working tree with every shipped bundle; removed afterwards."""
    for tool in ("podman", "debootstrap", "dciodvfy"):
        assert shutil.which(tool), f"{tool} missing: make system-packages"
    tag = "lightweight-seg-map:test"
    subprocess.run(
        [str(MAP_DIR / "build.sh"), tag],
        check=True,
        env={**os.environ, "MAP_BUNDLES": str(DEFAULT_BUNDLES)},
        capture_output=True,
        timeout=1800,
    )
    yield tag
    subprocess.run([*PODMAN, "rmi", "-f", tag], capture_output=True)


def _image_config(tag: str) -> dict:
    inspect = subprocess.run([*PODMAN, "image", "inspect", tag], check=True, capture_output=True, text=True)
    return json.loads(inspect.stdout)[0]["Config"]


@pytest.mark.slow
def test_map_image_runs_the_app_on_dicom(map_image, tmp_path):
    config = _image_config(map_image)
    assert config["Entrypoint"] == ["/var/holoscan/tools"]
    env = dict(item.split("=", 1) for item in config["Env"])
    assert {key: env[key] for key in APP_JSON["environment"]} == APP_JSON["environment"]
    root = Path(
        subprocess.run(
            [*PODMAN, "image", "mount", map_image], check=True, capture_output=True, text=True
        ).stdout.strip()
    )
    mounts = []
    try:
        shutil.copytree(input_path("CT5N"), tmp_path / "input" / "ct")
        shutil.copy(input_path("OBXXXX1A_2frame.dcm"), tmp_path / "input")
        write_ultrasound(tmp_path / "input" / "breast.dcm", SHARED_DATA / "busi" / "images" / "benign_2.png", "BREAST")
        shutil.copytree(REPO / "samples" / "dicom" / "sts_019_ct", tmp_path / "input" / "limb_ct")
        (tmp_path / "output").mkdir()
        binds = [
            (tmp_path / "input", env["HOLOSCAN_INPUT_PATH"]),
            (tmp_path / "output", env["HOLOSCAN_OUTPUT_PATH"]),
            ("/proc", "/proc"),
            ("/dev", "/dev"),
        ]
        for source, target in binds:
            subprocess.run(["mount", "--bind", str(source), f"{root}{target}"], check=True)
            mounts.append(f"{root}{target}")
        shown = subprocess.run(
            ["chroot", str(root), "/var/holoscan/tools", "show"], env=env, capture_output=True, text=True, check=True
        )
        assert '"applicationRoot": "/opt/holoscan/app"' in shown.stdout
        assert '"fetal_head_us": "/opt/holoscan/models/fetal_head_us"' in shown.stdout
        run = subprocess.run(
            ["chroot", str(root), *config["Entrypoint"], "-l", "WARN"],
            env=env,
            cwd="/",
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert run.returncode == 0, run.stderr[-3000:]
    finally:
        for mount in reversed(mounts):
            subprocess.run(["umount", mount])
        subprocess.run([*PODMAN, "image", "unmount", map_image], capture_output=True)
    segs = [hd.seg.segread(seg) for seg in sorted((tmp_path / "output").glob("*.seg.dcm"))]
    # every shipped bundle served from the image: the cine to the fetal head, the breast US to the lesion model,
    # the limb CT to the sarcoma model; CT5N (no body part) skipped
    assert sorted((seg.SegmentSequence[0].SegmentLabel, seg.NumberOfFrames) for seg in segs) == [
        ("breast lesion", 1),
        ("fetal head", 2),
        ("soft-tissue sarcoma", 47),
    ]
    assert "no model for CT/no body part" in run.stderr
    # the IBSI CT's own errors (a Study ID longer than SH allows, no Laterality) are all a SEG of its study may
    # inherit; the cine's SEG references its frames by number (test_app_support)
    allowed = set(dciodvfy_errors(next((tmp_path / "input" / "limb_ct").iterdir()))) | {
        REFERENCED_FRAME_OF_SINGLE_FRAME_CLASS
    }
    assert all(set(dciodvfy_errors(seg)) <= allowed for seg in sorted((tmp_path / "output").glob("*.seg.dcm")))
