"""`pip install` of the built wheel gives a working app without the repository: ``lightweight-seg -i IN -o OUT``
run outside the checkout segments a sample with the bundles the wheel ships (about 15 s: builds and installs it).

The fresh venv reuses the dependencies already installed beside this Python through a ``.pth`` line (no download,
no copy); that line only adds their folder to ``sys.path``, so the editable install of this project there stays
inactive and the wheel's own ``lightweight_seg`` and ``lightweight_nets`` are the ones imported.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pydicom

REPO = Path(__file__).resolve().parents[1]
BUILT_FROM = ("pyproject.toml", "README.md", "LICENSE", "lightweight_nets", "apps", "benchmarks", "bundle")


def _run(command: list[str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    """``command`` with no PYTHONPATH (the tests' own points into the checkout)."""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _build_wheel(tmp_path: Path) -> Path:
    """The wheel of a copy of the working tree (setuptools leaves build/ and *.egg-info beside the sources)."""
    source = tmp_path / "source"
    source.mkdir()
    for name in BUILT_FROM:
        if (REPO / name).is_dir():
            shutil.copytree(
                REPO / name, source / name, symlinks=True, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
            )
        else:
            shutil.copy2(REPO / name, source / name)
    run = _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "-w",
            str(tmp_path / "dist"),
            str(source),
        ],
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("lightweight_seg-*.whl")
    return wheel


def _fresh_venv(path: Path) -> Path:
    """A venv without pip or this project whose sys.path ends with this Python's installed dependencies."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True, timeout=120)
    python = path / "bin" / "python"
    site_packages = Path(
        _run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=path).stdout.strip()
    )
    ours = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    (site_packages / "_dependencies.pth").write_text("\n".join(ours) + "\n")
    return python


def test_the_installed_wheel_segments_a_sample_outside_the_checkout(tmp_path):
    wheel = _build_wheel(tmp_path)
    python = _fresh_venv(tmp_path / "venv")
    install = _run(
        [str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--ignore-installed", str(wheel)],
        cwd=tmp_path,
    )
    assert install.returncode == 0, install.stderr[-2000:]
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "in").mkdir(parents=True)
    shutil.copy2(REPO / "samples" / "dicom" / "us_hc18_006.dcm", elsewhere / "in")

    where = _run(
        [
            str(python),
            "-c",
            "import lightweight_nets, lightweight_seg.routing as r; "
            "print(r.DEFAULT_BUNDLES); print(r.__file__); print(lightweight_nets.__file__)",
        ],
        cwd=elsewhere,
    )
    assert where.returncode == 0, where.stderr[-2000:]
    site_packages = (tmp_path / "venv").resolve()
    paths = [Path(line) for line in where.stdout.split()]
    assert all(path.is_relative_to(site_packages) and "site-packages" in path.parts for path in paths), paths
    bundles = sorted(p.name for p in paths[0].iterdir())
    assert bundles == sorted(p.parent.parent.name for p in (REPO / "bundle").glob("*/configs/inference.json"))
    assert not list(paths[0].glob("*/models/teacher.pt")) and not list(paths[0].glob("*/experiments"))

    run = _run([str(python.parent / "lightweight-seg"), "-i", "in", "-o", "out", "-l", "WARN"], cwd=elsewhere)
    assert run.returncode == 0, run.stderr[-2000:]
    (seg,) = (elsewhere / "out").glob("*.seg.dcm")
    assert pydicom.dcmread(seg).Modality == "SEG"
    assert "-> fetal_head_us: fetal head on 1 of 1 frames" in run.stdout
