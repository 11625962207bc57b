"""The bundle's folder workflows: every image (2D models) or volume (3D models) in a folder segmented, with a
mask or label map per input, an overlay PNG per input and a ``results.csv`` of the bundle's measurements.

They log what they do (the bundle's ``logging.conf`` shows INFO) and raise :class:`NothingSegmented` when no input
could be segmented; :func:`run_as_command`, what a bundle's ``run`` calls, is the one place that turns bad input
into a one-line message and a non-zero exit.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from lightweight_nets.errors import first_line
from lightweight_nets.inference.segment import segment_frames, segment_volume
from lightweight_nets.io.files import atomic_path, file_suffix
from lightweight_nets.io.images import IMAGE_SUFFIXES, image_spacing_mm, mask_name, read_image, write_mask
from lightweight_nets.io.tables import read_pixel_sizes
from lightweight_nets.measure import measure_segment
from lightweight_nets.overlays import write_overlay
from lightweight_nets.transforms import Postprocessing, Preprocessing, VolumePreprocessing

__all__ = [
    "NothingSegmented",
    "list_images",
    "list_volumes",
    "segment_folder",
    "segment_volume_folder",
    "run_as_command",
]

log = logging.getLogger(__name__)
_NIFTI_SUFFIXES = (".nii", ".nii.gz")


class NothingSegmented(ValueError):
    """A folder workflow found no input, or could read none of them; the message names the folder."""


def run_as_command(workflow: Callable[[], Path]) -> Path:
    """Run a folder workflow as a command (a bundle's ``run``: ``workflow`` is the workflow with its arguments,
    ``_mode_: callable``): bad input (no such folder, an unreadable side table, nothing segmented) ends the process
    with its one-line message and exit status 1 instead of a traceback. Returns the results CSV path."""
    try:
        return workflow()
    except (OSError, ValueError) as error:
        raise SystemExit(first_line(error)) from None


def list_images(folder: str | Path) -> list[Path]:
    """Image files directly in ``folder`` (sorted); a clear error for a missing folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such input folder")
    return sorted(p for p in folder.iterdir() if p.is_file() and file_suffix(p) in IMAGE_SUFFIXES)


def segment_folder(
    predictor,
    preprocessing: Preprocessing,
    postprocessing: Postprocessing,
    segments: Sequence,
    dataset_dir: str | Path,
    output_dir: str | Path,
    pixel_size_csv: str | Path | None = None,
) -> Path:
    """Segment every image in ``dataset_dir`` with a bundle's model: one mask per input named after it (PNG for
    pictures, 0/255 for a one-segment model and label values otherwise; same format for NIfTI; empty where nothing
    is found), an overlay PNG per input under ``overlays/``, and ``results.csv`` with one row per image and
    segment: its pixels and the measurements the bundle's segment asks for (``area_mm2``,
    ``head_circumference_mm``) where the pixel size is known (from DICOM/NIfTI or ``pixel_size_csv``).

    A file that cannot be read gets a one-line error naming it and the rest is still processed;
    :class:`NothingSegmented` when there is no image or none could be segmented. Returns the results CSV path."""
    output_dir = Path(output_dir)
    images = list_images(dataset_dir)
    if not images:
        raise NothingSegmented(f"{dataset_dir}: no images to segment (looked for {', '.join(IMAGE_SUFFIXES)})")
    pixel_sizes = read_pixel_sizes(pixel_size_csv)
    colors = [segment.color_rgb for segment in segments]
    rows, segmented, failures = [], 0, 0
    for path in tqdm(images, desc="segmenting", unit="image"):
        try:
            image = read_image(path)
        except ValueError as err:
            log.error("%s", err)
            failures += 1
            continue
        labels = segment_frames(image.pixels, predictor, preprocessing, postprocessing)
        write_mask(labels[0] > 0 if len(segments) == 1 else labels[0], output_dir / mask_name(path), like=image)
        write_overlay(image.pixels[None], labels, output_dir / "overlays" / f"{Path(mask_name(path)).stem}.png", colors)
        spacing = image_spacing_mm(image, pixel_sizes)
        for segment in segments:
            measured = measure_segment(
                labels == segment.number, segment.measurements, spacing, outline_inset_px=segment.outline_inset_px
            )
            row = {"image": path.name, "mask": mask_name(path), "segment": segment.label}
            row.update(
                {
                    key.removesuffix("_per_frame"): "" if values[0] is None else values[0]
                    for key, values in measured.items()
                    if key.endswith("_per_frame")
                }
            )
            row.update(_not_measured_column(measured))
            rows.append(row)
        segmented += 1
    return _write_results(
        rows, dataset_dir, output_dir, segmented, len(images), failures, "images", "masks, overlays/, results.csv"
    )


def _not_measured_column(measured: dict) -> dict:
    """The results.csv column naming each measurement the spacing did not allow, and why."""
    reasons = measured.get("not_measured", {})
    return {"not_measured": "; ".join(f"{name}: {why}" for name, why in reasons.items())} if reasons else {}


def list_volumes(folder: str | Path) -> list[Path]:
    """The volumes directly in ``folder`` (sorted): NIfTI files, and sub-folders that hold a DICOM series (files
    other than NIfTI)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such input folder")
    return sorted(
        p
        for p in folder.iterdir()
        if (p.is_file() and file_suffix(p) in _NIFTI_SUFFIXES)
        or (
            p.is_dir()
            and any(
                c.is_file() and not c.name.startswith(".") and file_suffix(c) not in _NIFTI_SUFFIXES
                for c in p.iterdir()
            )
        )
    )


def _axial_slices(volume: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """The volume as axial slices the way a radiologist looks at them (patient's right on the left, anterior at the
    top), whatever its voxel order: for overlays."""
    import nibabel as nib

    ras = nib.orientations.apply_orientation(volume, nib.orientations.io_orientation(affine))
    return np.moveaxis(ras, -1, 0).transpose(0, 2, 1)[:, ::-1, ::-1]


def _volume_name(path: Path) -> str:
    """``<name>.nii.gz`` for an input volume (a NIfTI file or a DICOM series folder)."""
    suffix = file_suffix(path)
    return f"{path.name[: -len(suffix)] if suffix in _NIFTI_SUFFIXES else path.name}.nii.gz"


def segment_volume_folder(
    predictor,
    preprocessing: VolumePreprocessing,
    postprocessing: Postprocessing,
    segments: Sequence,
    dataset_dir: str | Path,
    output_dir: str | Path,
) -> Path:
    """Segment every volume in ``dataset_dir`` (NIfTI files, or sub-folders each holding one DICOM series) with a
    bundle's 3D model: a label map per input named after it (``<name>.nii.gz``, the input's grid and affine), an
    overlay PNG of evenly spaced slices under ``overlays/``, and ``results.csv`` with one row per volume and
    segment: its voxels and the measurements its bundle asks for (``volume_mm3``).

    A volume that cannot be read gets a one-line error naming it and the rest is still processed;
    :class:`NothingSegmented` when there is no volume or none could be segmented. Returns the results CSV path."""
    import nibabel as nib
    from monai.transforms import LoadImage

    output_dir = Path(output_dir)
    volumes = list_volumes(dataset_dir)
    if not volumes:
        raise NothingSegmented(
            f"{dataset_dir}: no volumes to segment (looked for .nii, .nii.gz and DICOM series folders)"
        )
    colors = [segment.color_rgb for segment in segments]
    rows, segmented, failures = [], 0, 0
    for path in tqdm(volumes, desc="segmenting", unit="volume"):
        try:
            image = LoadImage(image_only=True, reader="PydicomReader" if path.is_dir() else "NibabelReader")(path)
            if image.dim() != 3:
                raise ValueError(f"expected a 3D volume, got shape {tuple(image.shape)}")
        except Exception as err:  # every reader fails its own way on a bad file
            log.error("%s: cannot read volume (%s)", path, first_line(err))
            failures += 1
            continue
        volume, affine = image.numpy(), image.affine.numpy()
        labels = segment_volume(volume, affine, predictor, preprocessing, postprocessing)
        name = _volume_name(path)
        with atomic_path(output_dir / name) as tmp:
            nib.save(nib.Nifti1Image(labels, affine), str(tmp))
        write_overlay(
            _axial_slices(volume, affine),
            _axial_slices(labels, affine),
            output_dir / "overlays" / f"{name[:-7]}.png",
            colors,
        )
        spacing = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
        for segment in segments:
            measured = measure_segment(
                np.moveaxis(labels == segment.number, -1, 0),
                segment.measurements,
                (float(spacing[0]), float(spacing[1])),
                float(spacing[2]),
                segment.outline_inset_px,
            )
            row = {
                "volume": path.name,
                "labels": name,
                "segment": segment.label,
                "voxels": int(sum(measured["pixels_per_frame"])),
            }
            row.update(
                {
                    key: value
                    for key, value in measured.items()
                    if not key.endswith("_per_frame") and key not in ("frames_with_segment", "not_measured")
                }
            )
            row.update(_not_measured_column(measured))
            rows.append(row)
        segmented += 1
    return _write_results(
        rows,
        dataset_dir,
        output_dir,
        segmented,
        len(volumes),
        failures,
        "volumes",
        "label maps, overlays/, results.csv",
    )


def _write_results(
    rows: list[dict],
    dataset_dir: Path,
    output_dir: Path,
    segmented: int,
    total: int,
    failures: int,
    what: str,
    outputs: str,
) -> Path:
    """Write ``results.csv`` (one row per input and segment) and log what was done; :class:`NothingSegmented` when
    nothing was."""
    if not rows:
        raise NothingSegmented(f"{dataset_dir}: none of {total} {what} could be segmented")
    results = output_dir / "results.csv"
    with atomic_path(results) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(dict.fromkeys(key for row in rows for key in row)), restval="")
        writer.writeheader()
        writer.writerows(rows)
    log.info(
        "segmented %d of %d %s -> %s (%s)%s",
        segmented,
        total,
        what,
        output_dir,
        outputs,
        f"; {failures} failed, see the errors above" if failures else "",
    )
    return results
