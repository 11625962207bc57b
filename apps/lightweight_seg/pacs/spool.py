"""Durable on-disk spool: one folder per series, one file per instance named by its SOP Instance UID.

An instance is written through `lightweight_nets.io.files.atomic_path` (a temporary file, fsync'd, renamed into
place and its folder fsync'd) before `store_*` returns, so a C-STORE is only acknowledged once the instance survives
a crash. Objects that cannot be filed under a series (no valid Series or SOP Instance UID) are kept under rejected/
so that nothing received is dropped silently.
"""

from __future__ import annotations

import fcntl
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from pydicom import dcmwrite
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import UID

from lightweight_nets.io.files import TEMPORARY_GLOB, atomic_path


class RejectedObject(ValueError):
    """Raised when a received object cannot be filed under a series; `path` is where it was kept."""

    def __init__(self, reason: str, path: Path):
        super().__init__(reason)
        self.path = path


def _valid_uid(value) -> bool:
    return isinstance(value, str) and UID(value).is_valid


class Spool:
    """Files under `root`: series/<SeriesUID>/<SOPUID>.dcm, rejected/<sha1>.dcm, out/<SeriesUID>/ (pipeline output)."""

    def __init__(self, root: Path):
        self.root = Path(root)
        for sub in ("series", "rejected", "out"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    def lock(self) -> None:
        """Hold the spool for this process's lifetime (the kernel releases it even after `kill -9`).

        Recovery re-queues running jobs and deletes temporaries, which only the sole user of a spool may do.
        """
        self._lock_file = open(self.root / "lock", "a")  # kept open: closing it would release the lock
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_file.close()
            raise RuntimeError(
                f"{self.root} is in use by another listen or pull; give this one its own spool_dir"
            ) from None

    def _write_atomic(self, target: Path, write: Callable[[BinaryIO], None]) -> None:
        with atomic_path(target) as tmp, open(tmp, "wb") as f:
            write(f)

    def _file(self, decode: Callable[[], Dataset], write: Callable[[BinaryIO], None]) -> tuple[str, str, bool]:
        """File one object; returns (series UID, study UID, whether this SOP Instance UID is new to the spool)."""
        try:
            dataset = decode()
            series_uid, sop_uid = dataset.get("SeriesInstanceUID"), dataset.get("SOPInstanceUID")
            study_uid = dataset.get("StudyInstanceUID") or ""
            problem = None if _valid_uid(series_uid) and _valid_uid(sop_uid) else "no valid Series/SOP Instance UID"
        except Exception as exc:  # undecodable header: keep the bytes, report the reason
            problem = f"cannot decode the data set: {exc}"
        if problem:
            target = self.root / "rejected" / f"{uuid.uuid4().hex}.dcm"
            self._write_atomic(target, write)
            raise RejectedObject(problem, target)
        target = self.series_dir(series_uid) / f"{sop_uid}.dcm"
        is_new = not target.exists()
        self._write_atomic(target, write)
        return str(series_uid), str(study_uid), is_new

    def store_raw(
        self, file_meta: FileMetaDataset, dataset_bytes: bytes, decode: Callable[[], Dataset]
    ) -> tuple[str, str, bool]:
        """File an instance as received over DIMSE: the encoded bytes are written untouched; `decode` parses them."""

        def write(f: BinaryIO) -> None:
            f.write(b"\x00" * 128 + b"DICM")
            write_file_meta_info(f, file_meta, enforce_standard=True)
            f.write(dataset_bytes)

        return self._file(decode, write)

    def store_dataset(self, dataset: Dataset) -> tuple[str, str, bool]:
        """File a decoded instance (as received over DICOMweb)."""
        return self._file(lambda: dataset, lambda f: dcmwrite(f, dataset, enforce_file_format=True))

    def series_dir(self, series_uid: str) -> Path:
        return self.root / "series" / series_uid

    def instances(self, series_uid: str) -> list[Path]:
        return sorted(self.series_dir(series_uid).glob("*.dcm"))

    def series_uids(self) -> list[str]:
        return sorted(p.name for p in (self.root / "series").iterdir() if p.is_dir())

    def fresh_output_dir(self, series_uid: str) -> Path:
        """An empty output folder for one pipeline run (leftovers of an interrupted run are removed)."""
        out = self.root / "out" / series_uid
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        return out

    def remove_temporaries(self) -> int:
        """Delete half-written files of a crashed process (never acknowledged, so the sender still has them)."""
        stale = [*(self.root / "series").glob(f"*/{TEMPORARY_GLOB}"), *(self.root / "rejected").glob(TEMPORARY_GLOB)]
        for path in stale:
            path.unlink(missing_ok=True)
        return len(stale)
