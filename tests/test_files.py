"""The one atomic writer: whole files under their final name, nothing left behind on failure."""

from __future__ import annotations

import os
import stat

import pytest

from lightweight_nets.io.files import TEMPORARY_GLOB, atomic_path, file_suffix


def test_a_write_appears_whole_with_the_usual_permissions_in_new_folders(tmp_path):
    target = tmp_path / "new" / "deeper" / "mask.nii.gz"
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and file_suffix(tmp) == ".nii.gz"  # writers that go by the suffix
        assert tmp.name.startswith(".") and list(target.parent.glob(TEMPORARY_GLOB)) == [tmp]
        tmp.write_bytes(b"whole")
        assert not target.exists()
    assert target.read_bytes() == b"whole"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask
    assert list(target.parent.iterdir()) == [target]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "results.csv"
    target.write_text("old\n")
    with pytest.raises(RuntimeError, match="disk full"), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("disk full")
    assert target.read_text() == "old\n"
    assert list(tmp_path.iterdir()) == [target]


def test_a_failed_rename_leaves_no_temporary(tmp_path):
    target = tmp_path / "occupied"
    target.mkdir()
    (target / "keep").write_text("x")  # a non-empty folder: os.replace of a file onto it fails
    with pytest.raises(OSError), atomic_path(target) as tmp:
        tmp.write_text("new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["occupied"]
