"""The one atomic writer: every file this project writes appears whole, under its final name, or not at all."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["atomic_path", "file_suffix", "TEMPORARY_GLOB"]

# what a temporary of :class:`atomic_path` looks like in its folder: ``.<name>.<random>.part<suffix>``
TEMPORARY_GLOB = ".*.part*"

_UMASK = os.umask(0)
os.umask(_UMASK)


def file_suffix(path: str | Path) -> str:
    """The lower-case suffix of a file name, ``.nii.gz`` counted as one."""
    name = Path(path).name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else Path(name).suffix


def _fsync(path: Path) -> None:
    """Flush a file's or a folder's contents (a folder: the names in it) to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class atomic_path:
    """Context manager yielding a temporary path beside ``target`` (same suffix, so writers that go by the suffix
    pick the right format); on success the temporary is fsync'd, renamed onto ``target`` and the folder fsync'd, so
    the file survives a crash once the ``with`` block is left (a PACS acknowledges an instance only then); on an
    exception it is removed and ``target`` is left as it was. Missing folders are made (and recorded in theirs)."""

    def __init__(self, target: str | Path):
        self.target = Path(target)

    def __enter__(self) -> Path:
        folder = self.target.parent
        missing = [p for p in (folder, *folder.parents) if not p.exists()]
        folder.mkdir(parents=True, exist_ok=True)
        for made in reversed(missing):
            _fsync(made.parent)
        fd, tmp = tempfile.mkstemp(
            prefix=f".{self.target.name}.", suffix=".part" + file_suffix(self.target), dir=folder
        )
        os.close(fd)
        self.tmp = Path(tmp)
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.tmp.unlink(missing_ok=True)
            return
        try:
            os.chmod(self.tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give the usual permissions
            _fsync(self.tmp)
            os.replace(self.tmp, self.target)
        except BaseException:
            self.tmp.unlink(missing_ok=True)
            raise
        _fsync(self.target.parent)
