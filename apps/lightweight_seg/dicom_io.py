"""DICOM in: find the files, select series by rules, and turn each series into stacks of grey frames.

A *stack* is what one DICOM-SEG covers: the frames the model sees (grey, ``(N, H, W)``), the source
datasets they came from and, per frame, which source instance and frame number it is. CT and MR slices of
one series with one orientation and size form one stack; a multi-frame instance (ultrasound cine) is one
stack; a single-frame image without a Frame of Reference (plain ultrasound) is a stack of its own, because
such frames share no coordinate system a SEG could place them in.
"""

from __future__ import annotations

import errno
import json
import os
import re
import stat
import zlib
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.charset import python_encoding
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
from pydicom.valuerep import DA, TM

from lightweight_nets.io.dicom import dicom_grey_frames, dicom_number, dicom_pixel_spacing_mm, number_of_frames

__all__ = [
    "SUPPORTED_SOP_CLASSES",
    "DEFAULT_RULES",
    "Stack",
    "InputError",
    "one_line",
    "problem",
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


_BREAKS_LINES = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\udc80-\udcff]")


def one_line(text) -> str:
    r"""``text`` (a path, a value, a message) so that it prints on one line and unchanged otherwise: control
    characters (newline, tab, escape, ...) and line separators as Python escapes (``\n``), and the bytes of a file
    name that are not UTF-8 as ``\xNN``."""

    def escape(match: re.Match) -> str:
        char = match.group()
        if "\udc80" <= char <= "\udcff":  # os.fsdecode's stand-in for an undecodable byte
            return f"\\x{ord(char) - 0xDC00:02x}"
        return char.encode("unicode_escape").decode("ascii")

    return _BREAKS_LINES.sub(escape, str(text))


def problem(where, text: str, prefix: str = "") -> tuple[str, str]:
    """The one form every problem is reported in: (the file or series it is about, ``"<prefix><where>: <text>"``
    printed on one line)."""
    return str(where), f"{prefix}{one_line(where)}: {one_line(text)}"


def _reason(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}" if str(err) else type(err).__name__


@dataclass
class Stack:
    """Frames one SEG covers. ``frames`` is grey ``(N, H, W)``, uint8 for 8-bit colour ultrasound and float32
    otherwise (see :func:`~lightweight_nets.io.dicom.dicom_grey_frames`); ``frame_sources[i]`` is the
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
            raise InputError(
                f"series {self.series_uid}: not a volume of positioned slices (a 3D model needs CT or "
                "MR slices with a frame of reference, orientation, position and pixel spacing)"
            )
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


def _unreachable(path: Path, err: OSError) -> str:
    """Why an entry whose stat failed cannot be read."""
    if err.errno == errno.ELOOP:
        return "symbolic link loop: not followed"
    if path.is_symlink() and err.errno == errno.ENOENT:
        return f"dangling symbolic link (to {one_line(os.readlink(path))})"
    return f"cannot read ({_reason(err)})"


def _not_regular(mode: int) -> str:
    kind = (
        "FIFO"
        if stat.S_ISFIFO(mode)
        else "socket"
        if stat.S_ISSOCK(mode)
        else "device"
        if stat.S_ISBLK(mode) or stat.S_ISCHR(mode)
        else "special file"
    )
    return f"not a regular file ({kind}): not read"


def find_files(paths: list[Path] | Path) -> tuple[list[Path], list[tuple[str, str]]]:
    """The regular files given directly or found under given folders (hidden entries skipped, sorted), each once
    however many links lead to it, and a (path, one-line problem) pair for each entry that is not one: a FIFO,
    socket or device (never opened, so never waited on), an empty file, a dangling symbolic link, a link loop, a
    folder that cannot be listed. Links to folders are followed, but never into a folder already read or one that
    holds the input (no cycles); however deep the tree, no recursion. A path given that does not exist raises
    ``InputError``."""
    paths = [Path(path) for path in ([paths] if isinstance(paths, (str, Path)) else paths)]
    files, problems, seen_files, seen_folders = [], [], set(), set()
    roots = [path.resolve() for path in paths]
    pending = [(path, True) for path in reversed(paths)]  # depth first, in name order
    while pending:
        path, given = pending.pop()
        try:
            info = os.stat(path)
        except OSError as err:
            if not os.path.lexists(path) and given:
                raise InputError(f"{one_line(path)}: no such file or folder") from None
            problems.append(
                problem(
                    path, _unreachable(path, err) if os.path.lexists(path) else "vanished while the folder was read"
                )
            )
            continue
        key = (info.st_dev, info.st_ino)
        if stat.S_ISDIR(info.st_mode):
            if key in seen_folders:
                if path.is_symlink():
                    problems.append(problem(path, "symbolic link to a folder already read (a loop?): not followed"))
                continue
            if not given and path.is_symlink() and any(root.is_relative_to(path.resolve()) for root in roots):
                problems.append(problem(path, "symbolic link to a folder that holds the input (a loop): not followed"))
                continue
            seen_folders.add(key)
            try:
                with os.scandir(path) as entries:
                    names = sorted(entry.name for entry in entries)
            except OSError as err:
                problems.append(problem(path, f"cannot list folder ({_reason(err)})"))
                continue
            pending += [(path / name, False) for name in reversed(names) if not name.startswith(".")]
        elif not stat.S_ISREG(info.st_mode):
            problems.append(problem(path, _not_regular(info.st_mode)))
        elif info.st_size == 0:  # also what /proc and /sys files say of themselves: never opened
            problems.append(problem(path, "empty file"))
        elif key not in seen_files:  # a second link to a file already found: read once
            seen_files.add(key)
            files.append(path)
    return files, problems


def _check_identity(ds: Dataset) -> str | None:
    """What the loaders need to place an instance (SOP class, study, series, instance, modality, image size)."""
    if len(ds) == 0:
        return "no data set after the file meta information (truncated: the file ends inside an element)"
    sop_class = ds.get("SOPClassUID")
    if not sop_class:
        meta_class = ds.get("file_meta", Dataset()).get("MediaStorageSOPClassUID")
        said = f" (the file meta information says {getattr(meta_class, 'name', meta_class)!r})" if meta_class else ""
        return f"no SOPClassUID in the data set{said}"
    if sop_class not in SUPPORTED_SOP_CLASSES:
        return f"unsupported SOP class {getattr(sop_class, 'name', sop_class)!r} (supported: CT, MR, US images)"
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "Modality", "Rows", "Columns"):
        if keyword not in ds:
            return f"incomplete header: no {keyword}"
        if ds[keyword].value in (None, ""):
            return f"{keyword} is empty"
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID"):
        if ds.get(keyword, None) not in (None, "") and not _is_uid(ds[keyword].value):
            return f"{keyword} '{ds[keyword].value}' is not a UID (digits and dots, at most 64 characters)"
    for keyword in ("Rows", "Columns", "NumberOfFrames"):
        value = ds.get(keyword)
        if value not in (None, "") and not (str(value).strip().isdigit() and int(value) > 0):
            return f"{keyword} '{value}' is not a positive whole number"
    return None


_UID = re.compile(r"[0-9]+(\.[0-9]+)*")


def _is_uid(value) -> bool:
    """A UID as PS3.5 9.1 writes it (leading zeros tolerated): output files are named after series UIDs, so
    anything else (a "/", "..", a newline) must never reach a path."""
    return isinstance(value, str) and len(value) <= 64 and _UID.fullmatch(value) is not None


_POSITIONED = (CTImageStorage, MRImageStorage)  # images a SEG places in the patient's frame of reference


def _check_geometry(ds: Dataset) -> str | None:
    """Spacing, thickness, orientation, position and frame of reference (what the SEG and the measurements use),
    and the rescale to the modality's units (what the model sees): checked here so that a bad value is named with
    its file and attribute, not met deep inside a writer."""
    try:
        dicom_pixel_spacing_mm(ds)  # PixelSpacing, else the calibrated ultrasound region
        if ds.get("SliceThickness", None) not in (None, ""):
            dicom_number(ds, "SliceThickness", count=1, positive=True)
        positioned = ds.SOPClassUID in _POSITIONED
        if positioned:
            if not ds.get("FrameOfReferenceUID", None):
                return "no FrameOfReferenceUID (a CT or MR image needs one)"
            dicom_number(ds, "PixelSpacing", count=2, positive=True)
        if positioned or "ImageOrientationPatient" in ds:
            orientation = dicom_number(ds, "ImageOrientationPatient", count=6)
            row, column = np.array(orientation[:3]), np.array(orientation[3:])
            if (
                abs(np.linalg.norm(row) - 1) > 0.01
                or abs(np.linalg.norm(column) - 1) > 0.01
                or abs(float(np.dot(row, column))) > 0.01
            ):
                shown = "\\".join(f"{v:g}" for v in orientation)
                return f"ImageOrientationPatient '{shown}' is not two perpendicular unit vectors"
        if positioned or "ImagePositionPatient" in ds:
            dicom_number(ds, "ImagePositionPatient", count=3)
        if ds.get("RescaleSlope", None) not in (None, "") and dicom_number(ds, "RescaleSlope", count=1) == (0.0,):
            return "RescaleSlope is 0 (every pixel would be the intercept)"
        if ds.get("RescaleIntercept", None) not in (None, ""):
            dicom_number(ds, "RescaleIntercept", count=1)
    except ValueError as err:
        return str(err)
    return None


def _check_character_set(ds: Dataset) -> str | None:
    """SpecificCharacterSet names defined terms only (the first value may be empty: the default repertoire)."""
    value = ds.get("SpecificCharacterSet", None)
    if value in (None, ""):
        return None
    values = [value] if isinstance(value, str) else list(value)
    for index, term in enumerate(values):
        term = str(term).strip()
        if (term or index > 0) and term not in python_encoding:
            return f"SpecificCharacterSet '{term}' is not a character set the DICOM standard defines"
    return None


def _check_patient_and_study(ds: Dataset) -> str | None:
    """The patient's and the study's values a SEG copies from its source, where they are given: each must be one
    the standard allows there (highdicom refuses the SEG otherwise)."""
    sex = str(ds.get("PatientSex", "") or "").strip()
    if sex not in ("", "M", "F", "O"):
        return f"PatientSex '{sex}' is not M, F or O"
    for keyword, kind, convert in (
        ("PatientBirthDate", "date (YYYYMMDD)", DA),
        ("StudyDate", "date (YYYYMMDD)", DA),
        ("StudyTime", "time (HHMMSS.FFFFFF)", TM),
    ):
        value = ds.get(keyword, None)
        if value in (None, ""):
            continue
        try:
            convert(str(value))
        except ValueError:
            return f"{keyword} '{value}' is not a {kind}"
    return None


def header_problem(ds: Dataset) -> str | None:
    """Why an instance cannot be segmented, or None: an unsupported SOP class, a missing or empty identifier, a
    spacing, thickness, orientation or position that is not a sane number, CT or MR without a frame of reference,
    an unknown character set, a patient's sex, a date or a time that the standard does not allow."""
    try:
        return _check_identity(ds) or _check_geometry(ds) or _check_character_set(ds) or _check_patient_and_study(ds)
    except Exception as err:  # a value pydicom cannot even convert
        return f"unreadable header ({_reason(err)})"


def check_headers(datasets: list[Dataset]) -> tuple[list[Dataset], list[tuple[str, str]]]:
    """The instances that can be segmented and a (file, one-line problem) pair for each other one (including a
    second instance with a SOPInstanceUID already seen); DICOMDIR index files are skipped silently."""
    headers, errors, first_of = [], [], {}
    for ds in datasets:
        if ds.get("file_meta", Dataset()).get("MediaStorageSOPClassUID") == MediaStorageDirectoryStorage:
            continue
        why = header_problem(ds)
        if why is None and ds.SOPInstanceUID in first_of:
            why = f"same SOPInstanceUID as {one_line(first_of[ds.SOPInstanceUID])}: left out"
        if why:
            errors.append(problem(ds.filename, why))
        else:
            first_of[ds.SOPInstanceUID] = ds.filename
            headers.append(ds)
    return headers, errors


DEFER_SIZE = 64 * 1024  # bytes: longer values (the pixel data) are passed over while reading a header


def _truncation(path: Path, ds: Dataset) -> str | None:
    """Whether the file ends inside a value that was passed over (native pixel data cut short)."""
    size = os.path.getsize(path)
    for tag in ds.keys():
        element = ds.get_item(tag)  # as read: a raw element keeps where its value starts and how long it is
        tell, length = getattr(element, "value_tell", None), getattr(element, "length", None)
        if tell is not None and length not in (None, 0xFFFFFFFF) and tell + length > size:
            name = pydicom.datadict.keyword_for_tag(element.tag) or str(element.tag)
            return f"truncated: {name} needs {length} bytes from byte {tell}, the file has {size}"
    return None


def read_headers(files: list[Path]) -> tuple[list[Dataset], list[tuple[str, str]]]:
    """Headers of the image instances among ``files`` that can be segmented, and a (file, one-line problem) pair
    for each file that cannot. Every file is parsed to its end (long values such as the pixel data passed over; the
    pixels are read again later, for the selected series only), so that a file cut short, whose Deflate transfer
    syntax is not deflated, or that pydicom turns into an empty data set with only a warning (truncated JPEG, JPEG
    2000) is named here and never reaches the SDK loader."""
    datasets, errors = [], []
    for path in files:
        try:
            ds = pydicom.dcmread(path, defer_size=DEFER_SIZE)
            why = _truncation(path, ds)
        except InvalidDicomError:
            why = "not a DICOM file"
        except zlib.error as err:
            why = f"not deflated although its transfer syntax is Deflate ({_reason(err)})"
        except Exception as err:  # truncated or corrupt headers fail in many ways inside pydicom
            why = f"unreadable DICOM ({_reason(err)})"
        if why:
            errors.append(problem(path, why))
            continue
        for tag in [tag for tag in ds.keys() if tag.group == 0x7FE0]:
            del ds[tag]  # encapsulated pixel data is held, not passed over: the header need not keep it
        datasets.append(ds)
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
            raise InputError(
                f"{path}: selection {selection.get('name', '?')!r} has no conditions "
                "(the Deploy SDK would select nothing)"
            )
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
        return any(
            re.search(wanted, str(item.get(keyword, "")), re.IGNORECASE) is not None
            for item in value
            for keyword in ("CodeValue", "CodeMeaning")
        )
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
    scores = [
        sum(wanted is not None for wanted in selection["conditions"].values())
        for selection in selections
        if all(_condition_holds(header.get(key), wanted) for key, wanted in selection["conditions"].items())
    ]
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
    alone. The instance read is checked again (a header handed in by a caller may not have been); ``InputError``
    names the file."""
    path = header.filename
    try:
        ds = pydicom.dcmread(path)
    except Exception as err:  # gone or changed since its header was read
        raise InputError(problem(path, f"unreadable DICOM ({_reason(err)})")[1]) from None
    why = header_problem(ds) or (None if "PixelData" in ds else "no pixel data")
    if why:
        raise InputError(problem(path, why)[1])
    try:
        return ds, dicom_grey_frames(ds)
    except Exception as err:  # decoders and truncated files fail in many ways
        raise InputError(problem(path, f"cannot decode pixel data ({_reason(err)})")[1]) from None


def _normal(ds: Dataset) -> np.ndarray:
    row, col = np.array(ds.ImageOrientationPatient[:3], float), np.array(ds.ImageOrientationPatient[3:], float)
    return np.cross(row, col)


def _stack_key(ds: Dataset) -> tuple:
    """Instances that can share one SEG: same size and, for positioned images, the same frame of reference and
    orientation."""
    if "FrameOfReferenceUID" not in ds or "ImageOrientationPatient" not in ds:
        return ("instance", ds.SOPInstanceUID)
    if number_of_frames(ds) > 1:
        return ("instance", ds.SOPInstanceUID)
    orientation = tuple(np.round(np.array(ds.ImageOrientationPatient, float), 4))
    return ("slices", int(ds.Rows), int(ds.Columns), str(ds.FrameOfReferenceUID), orientation)


def _one_per_position(group: list[tuple[Dataset, np.ndarray]]) -> tuple[list, list[tuple[str, str]]]:
    """Slices of one stack with one ImagePositionPatient each, as the SDK loader keeps them (the higher
    AcquisitionNumber, else the first) and a SEG needs them; each slice left out is named."""
    kept, errors = {}, []
    for ds, frames in group:
        position = tuple(np.round(np.array(ds.ImagePositionPatient, float), 3))
        if position not in kept:
            kept[position] = (ds, frames)
            continue
        other = kept[position][0]
        if _acquisition_number(ds) > _acquisition_number(other):
            kept[position], (ds, other) = (ds, frames), (other, ds)
        errors.append(
            problem(
                ds.filename,
                f"same ImagePositionPatient as {one_line(other.filename)} in its series "
                "and not a later acquisition: left out",
            )
        )
    return list(kept.values()), errors


def _acquisition_number(ds: Dataset) -> int:
    value = str(ds.get("AcquisitionNumber", "") or "").strip()
    return int(value) if value.lstrip("-").isdigit() else -1


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
        multi = "NumberOfFrames" in ds
        frame_sources += [(ds, k + 1 if multi else None) for k in range(number_of_frames(ds))]
    parts = [grey[ds.SOPInstanceUID] for ds in instances]
    frames = parts[0] if len(parts) == 1 else np.concatenate(parts)  # a cine is not copied
    return Stack(
        series_uid=series_uid,
        modality=str(instances[0].Modality),
        frames=frames,
        sources=instances,
        frame_sources=frame_sources,
        pixel_spacing_mm=dicom_pixel_spacing_mm(instances[0]),
        slice_spacing_mm=slice_spacing,
    )


def build_stacks(series_uid: str, headers: list[Dataset]) -> tuple[list[Stack], list[tuple[str, str]]]:
    """Read the pixels of one selected series and split it into stacks (see module doc). Never raises: a file
    that fails its header check or its decoding is reported (one line naming it) and left out, a stack that cannot
    be built is reported with the series, and the rest goes on. A series whose slices differ in orientation (or
    frame of reference) is split, one stack per orientation, as a CT/MR volume must not be stacked across
    orientations; of slices at one position one is kept (as the SDK loader does) and the others named, and so are
    instances of another study than the rest of the series."""
    errors, groups = [], defaultdict(list)
    studies = Counter(str(header.get("StudyInstanceUID", "")) for header in headers)
    study = studies.most_common(1)[0][0] if studies else ""
    for header in headers:
        path = getattr(header, "filename", None) or f"series {series_uid}"
        try:
            ds, frames = _read_pixels(header)
            if str(ds.StudyInstanceUID) != study:  # a SEG's sources are of one study
                raise InputError(
                    problem(
                        path,
                        f"StudyInstanceUID {ds.StudyInstanceUID} differs from the rest of "
                        f"series {series_uid} ({study}): left out",
                    )[1]
                )
            groups[_stack_key(ds)].append((ds, frames))
        except InputError as err:
            errors.append((str(path), str(err)))
        except Exception as err:  # a header no check foresaw: this file only
            errors.append(problem(path, f"cannot read ({_reason(err)})"))
    stacks = []
    for key, group in groups.items():
        try:
            if key[0] == "slices":
                group, left_out = _one_per_position(group)
                errors += left_out
            stacks.append(_make_stack(series_uid, group))
        except Exception as err:
            files = ", ".join(one_line(ds.filename) for ds, _ in group[:3]) + (", ..." if len(group) > 3 else "")
            errors.append(
                problem(
                    series_uid,
                    f"not segmented: its images ({files}) do not form a stack ({_reason(err)})",
                    prefix="series ",
                )
            )
    return stacks, errors
