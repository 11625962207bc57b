"""DICOM in: find the files, select series by rules, and turn each series into stacks of grey frames.

A *stack* is what one DICOM-SEG covers: the frames the model sees (grey, ``(N, H, W)``), the source
datasets they came from and, per frame, which source instance and frame number it is. CT and MR slices of
one series with one orientation and size form one stack; a multi-frame instance (ultrasound cine) is one
stack; a single-frame image without a Frame of Reference (plain ultrasound) is a stack of its own, because
such frames share no coordinate system a SEG could place them in.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.uid import (
    CTImageStorage,
    MediaStorageDirectoryStorage,
    MRImageStorage,
    UltrasoundImageStorage,
    UltrasoundMultiFrameImageStorage,
)

from lightweight_nets.io import dicom_grey_frames, dicom_pixel_spacing_mm

__all__ = [
    "SUPPORTED_SOP_CLASSES",
    "DEFAULT_RULES",
    "Stack",
    "InputError",
    "find_files",
    "header_problem",
    "check_headers",
    "read_headers",
    "load_rules",
    "selection_score",
    "series_matches",
    "group_series",
    "build_stacks",
]

SUPPORTED_SOP_CLASSES = {
    CTImageStorage: "CT",
    MRImageStorage: "MR",
    UltrasoundImageStorage: "US",
    UltrasoundMultiFrameImageStorage: "US cine",
}
DEFAULT_RULES = Path(__file__).with_name("selection_rules.json")


class InputError(ValueError):
    """Bad input, with a one-line message that names the file or series and the problem."""


@dataclass
class Stack:
    """Frames one SEG covers. ``frames`` is grey float32 ``(N, H, W)``; ``frame_sources[i]`` is the
    (dataset, 1-based frame number or None for single-frame instances) that frame ``i`` came from."""

    series_uid: str
    modality: str
    frames: np.ndarray
    sources: list[Dataset]
    frame_sources: list[tuple[Dataset, int | None]] = field(repr=False)
    pixel_spacing_mm: tuple[float, float] | None
    slice_spacing_mm: float | None

    @property
    def is_cine(self) -> bool:
        """One multi-frame source instance."""
        return self.frame_sources[0][1] is not None

    @property
    def has_frame_of_reference(self) -> bool:
        return "FrameOfReferenceUID" in self.sources[0]

    def ras_affine(self) -> np.ndarray:
        """Voxel (column, row, slice) -> RAS mm, for a stack of positioned slices (CT, MR): the geometry a 3D model
        resamples from and its labels go back to. ``InputError`` for frames that are not such a volume."""
        first, last = self.sources[0], self.sources[-1]
        needed = ("ImageOrientationPatient", "ImagePositionPatient", "PixelSpacing")
        if self.is_cine or not self.has_frame_of_reference or any(k not in first for k in needed):
            raise InputError(f"series {self.series_uid}: not a volume of positioned slices (a 3D model needs CT or "
                             "MR slices with a frame of reference, orientation, position and pixel spacing)")
        orientation = np.array(first.ImageOrientationPatient, float)
        row, column = orientation[:3], orientation[3:]
        origin = np.array(first.ImagePositionPatient, float)
        if len(self.sources) > 1:
            step = (np.array(last.ImagePositionPatient, float) - origin) / (len(self.sources) - 1)
        else:
            step = np.cross(row, column) * (self.slice_spacing_mm or 1.0)
        lps = np.eye(4)
        lps[:3, 0] = row * float(first.PixelSpacing[1])
        lps[:3, 1] = column * float(first.PixelSpacing[0])
        lps[:3, 2], lps[:3, 3] = step, origin
        return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps


def find_files(paths: list[Path] | Path) -> list[Path]:
    """Files given directly plus every file under given folders (hidden ones skipped), sorted; a missing path
    raises ``InputError``."""
    paths = [paths] if isinstance(paths, (str, Path)) else paths
    files = []
    for path in map(Path, paths):
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
        elif path.is_file():
            files.append(path)
        else:
            raise InputError(f"{path}: no such file or folder")
    return files


def header_problem(ds: Dataset) -> str | None:
    """Why an instance cannot be segmented (unsupported SOP class, missing identifiers), or None."""
    sop_class = ds.get("SOPClassUID") or ds.get("file_meta", Dataset()).get("MediaStorageSOPClassUID")
    if sop_class not in SUPPORTED_SOP_CLASSES:
        name = getattr(sop_class, "name", sop_class) or "none"
        return f"unsupported SOP class {name!r} (supported: CT, MR, US images)"
    for keyword in ("SeriesInstanceUID", "SOPInstanceUID", "Rows", "Columns"):
        if keyword not in ds:
            return f"incomplete header (truncated?): no {keyword}"
    return None


def check_headers(datasets: list[Dataset]) -> tuple[list[Dataset], list[tuple[str, str]]]:
    """The instances that can be segmented and a (file, one-line problem) pair for each other one; DICOMDIR
    index files are skipped silently."""
    headers, errors = [], []
    for ds in datasets:
        if ds.get("file_meta", Dataset()).get("MediaStorageSOPClassUID") == MediaStorageDirectoryStorage:
            continue
        problem = header_problem(ds)
        if problem:
            errors.append((str(ds.filename), f"{ds.filename}: {problem}"))
        else:
            headers.append(ds)
    return headers, errors


def read_headers(files: list[Path]) -> tuple[list[Dataset], list[tuple[str, str]]]:
    """Headers of the image instances among ``files`` that can be segmented (pixels are read later, for the
    selected series only), and a (file, one-line problem) pair for each file that cannot."""
    datasets, errors = [], []
    for path in files:
        try:
            datasets.append(pydicom.dcmread(path, stop_before_pixels=True))
        except InvalidDicomError:
            errors.append((str(path), f"{path}: not a DICOM file"))
        except Exception as err:  # truncated or corrupt headers fail in many ways inside pydicom
            errors.append((str(path), f"{path}: unreadable DICOM ({type(err).__name__}: {err})"))
    headers, problems = check_headers(datasets)
    return headers, errors + problems


def load_rules(path: Path | None = None) -> list[dict]:
    """Selections from a rules file in the Deploy SDK's format, ``{"selections": [{"name", "conditions"}]}``.
    A series is selected when all conditions of any one selection hold (AND within, OR across)."""
    path = Path(path or DEFAULT_RULES)
    try:
        selections = json.loads(path.read_text())["selections"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise InputError(f"{path}: not a selection rules file ({type(err).__name__}: {err})") from None
    for selection in selections:
        if not selection.get("conditions"):
            raise InputError(f"{path}: selection {selection.get('name', '?')!r} has no conditions "
                             "(the Deploy SDK would select nothing)")
    return selections


def _condition_holds(value, wanted) -> bool:
    """One condition, with the SDK selector's meaning: a string is a case-insensitive regular expression, a
    list names terms a multi-valued attribute must contain (``"!term"``: must not), ``[min, max]`` a range. Two
    additions for routing series to models: ``null`` holds where the attribute is absent or empty, and a regular
    expression on a code sequence (e.g. AnatomicRegionSequence) holds where it matches an item's CodeValue or
    CodeMeaning."""
    if wanted is None:
        return value is None or value == "" or (isinstance(value, Sequence) and len(value) == 0)
    if value is None or value == "":
        return False
    if isinstance(value, Sequence):
        if not isinstance(wanted, str):
            return False
        return any(re.search(wanted, str(item.get(keyword, "")), re.IGNORECASE) is not None
                   for item in value for keyword in ("CodeValue", "CodeMeaning"))
    if isinstance(wanted, str):
        return re.search(wanted, str(value), re.IGNORECASE) is not None
    if isinstance(value, (int, float)) and isinstance(wanted, list) and len(wanted) == 2:
        return wanted[0] <= value <= wanted[1]
    if isinstance(wanted, list):
        values = value if isinstance(value, (list, MultiValue)) else [value]
        terms = {str(v).upper() for v in values}
        return all(t[1:].upper() not in terms if t.startswith("!") else t.upper() in terms for t in map(str, wanted))
    return value == wanted


def selection_score(header: Dataset, selections) -> int | None:
    """How specifically the best-matching selection describes a series (given by one of its headers): the
    number of its conditions that test a value (an "absent" condition, ``null``, counts nothing), or None when
    no selection matches. Routing gives a series to the model whose rules describe it most specifically."""
    scores = [sum(wanted is not None for wanted in selection["conditions"].values())
              for selection in selections
              if all(_condition_holds(header.get(key), wanted) for key, wanted in selection["conditions"].items())]
    return max(scores) if scores else None


def series_matches(header: Dataset, selections: list[dict]) -> bool:
    """Whether a series (given by one of its headers) is selected by any of the selections."""
    return selection_score(header, selections) is not None


def group_series(headers: list[Dataset]) -> dict[str, list[Dataset]]:
    """Headers grouped by SeriesInstanceUID, in order of first appearance."""
    series = defaultdict(list)
    for ds in headers:
        series[ds.SeriesInstanceUID].append(ds)
    return dict(series)


def _read_pixels(header: Dataset) -> tuple[Dataset, np.ndarray]:
    """The full instance of a selected header and its grey frames, decoded here so that a bad file fails
    alone; ``InputError`` names the file."""
    path = header.filename
    try:
        ds = pydicom.dcmread(path)
        if "PixelData" not in ds:
            raise InputError(f"{path}: no pixel data")
        if "SpecificCharacterSet" in ds and not ds.SpecificCharacterSet:
            del ds.SpecificCharacterSet  # empty means the default repertoire; highdicom refuses the empty value
        return ds, dicom_grey_frames(ds)
    except InputError:
        raise
    except Exception as err:  # decoders and truncated files fail in many ways
        raise InputError(f"{path}: cannot decode pixel data ({type(err).__name__}: {err})") from None


def _normal(ds: Dataset) -> np.ndarray:
    row, col = np.array(ds.ImageOrientationPatient[:3], float), np.array(ds.ImageOrientationPatient[3:], float)
    return np.cross(row, col)


def _stack_key(ds: Dataset) -> tuple:
    """Instances that can share one SEG: same size and, for positioned images, the same orientation."""
    if "FrameOfReferenceUID" not in ds or "ImageOrientationPatient" not in ds:
        return ("instance", ds.SOPInstanceUID)
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        return ("instance", ds.SOPInstanceUID)
    orientation = tuple(np.round(np.array(ds.ImageOrientationPatient, float), 4))
    return ("slices", int(ds.Rows), int(ds.Columns), orientation)


def _make_stack(series_uid: str, decoded: list[tuple[Dataset, np.ndarray]]) -> Stack:
    instances = [ds for ds, _ in decoded]
    grey = {ds.SOPInstanceUID: frames for ds, frames in decoded}
    if len(instances) > 1:  # slices: sort along the normal, then measure the spacing between them
        normal = _normal(instances[0])
        depth = [float(np.dot(normal, np.array(ds.ImagePositionPatient, float))) for ds in instances]
        order = np.argsort(depth)
        instances = [instances[i] for i in order]
        gaps = np.diff(np.sort(depth))
        slice_spacing = float(np.median(gaps)) if len(gaps) else None
    else:
        slice_spacing = float(instances[0].SliceThickness) if "SliceThickness" in instances[0] else None
    frame_sources = []
    for ds in instances:
        count = int(ds.get("NumberOfFrames", 1) or 1)
        multi = "NumberOfFrames" in ds
        frame_sources += [(ds, k + 1 if multi else None) for k in range(count)]
    frames = np.concatenate([grey[ds.SOPInstanceUID] for ds in instances])
    return Stack(series_uid=series_uid, modality=str(instances[0].Modality), frames=frames, sources=instances,
                 frame_sources=frame_sources, pixel_spacing_mm=dicom_pixel_spacing_mm(instances[0]),
                 slice_spacing_mm=slice_spacing)


def build_stacks(series_uid: str, headers: list[Dataset]) -> tuple[list[Stack], list[tuple[str, str]]]:
    """Read the pixels of one selected series and split it into stacks (see module doc). Files that fail to
    decode are reported and left out; a series whose slices differ in orientation is split, one stack per
    orientation, as a CT/MR volume must not be stacked across orientations."""
    errors, groups = [], defaultdict(list)
    for header in headers:
        try:
            ds, frames = _read_pixels(header)
        except InputError as err:
            errors.append((header.filename, str(err)))
            continue
        groups[_stack_key(ds)].append((ds, frames))
    return [_make_stack(series_uid, group) for group in groups.values()], errors
