"""Validation metrics on the original image grid: Dice, 95% Hausdorff distance (mm where the pixel size is
known), and where the dataset gives a reference head circumference, the HC error in mm. Speed is measured in
``benchmarks/``."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from monai.metrics import compute_dice, compute_hausdorff_distance
from tqdm import tqdm

from lightweight_nets.inference.segment import segment_frames, segment_volume
from lightweight_nets.io.files import atomic_path
from lightweight_nets.io.images import image_spacing_mm, read_image
from lightweight_nets.io.tables import read_csv_column, read_pixel_sizes
from lightweight_nets.measure import head_circumference_mm
from lightweight_nets.training.split import read_split
from lightweight_nets.transforms import Postprocessing, Preprocessing, VolumePreprocessing

__all__ = ["evaluate", "evaluate_volumes", "summarise"]


def summarise(values: list[float]) -> dict:
    """Mean, std and count of the finite values."""
    finite = [v for v in values if v is not None and np.isfinite(v)]
    if not finite:
        return {"mean": None, "std": None, "n": 0}
    return {"mean": float(np.mean(finite)), "std": float(np.std(finite)), "n": len(finite)}


def evaluate(
    predictor,
    preprocessing: Preprocessing,
    postprocessing: Postprocessing,
    dataset_dir: str | Path,
    split_file: str | Path,
    output_dir: str | Path,
    part: str = "validation",
    pixel_size_csv: str | Path | None = None,
    reference_hc_column: str | None = None,
    class_csv: str | Path | None = None,
    limit: int | None = None,
    outline_inset_px: float = 0.0,
) -> dict:
    """Segment every image of the split part with the bundle's pre/post-processing, compare the foreground with
    ``dataset_dir/masks``, write ``metrics.json`` (summary) and ``per_image.json`` to ``output_dir`` and return the
    summary. Images with an empty reference mask (BUSI 'normal') count towards ``false_positive_rate_on_empty``
    instead of Dice. With ``reference_hc_column`` (a column of ``pixel_size_csv``, as HC18's) the head
    circumference of each mask (its ellipse ``outline_inset_px`` inside the edge, as the bundle's segment says) is
    compared with it; with ``class_csv`` (columns ``filename``, ``class``, as BUSI's
    labels.csv) Dice is also summarised per class."""
    dataset_dir, output_dir = Path(dataset_dir), Path(output_dir)
    names = read_split(split_file, part)[:limit]
    pixel_sizes = read_pixel_sizes(pixel_size_csv)
    classes = read_csv_column(class_csv, "class")
    reference_hc = read_csv_column(pixel_size_csv, reference_hc_column, float) if reference_hc_column else {}
    per_image = []
    for name in tqdm(names, desc=f"evaluating {part}", unit="image"):
        image = read_image(dataset_dir / "images" / name)
        truth = read_image(dataset_dir / "masks" / name).pixels > 0
        mask = segment_frames(image.pixels, predictor, preprocessing, postprocessing)[0] > 0
        spacing = image_spacing_mm(image, pixel_sizes)
        row = {
            "image": name,
            "empty_reference": not truth.any(),
            "predicted_any": bool(mask.any()),
            "spacing_known": spacing is not None,
        }
        if name in classes:
            row["class"] = classes[name]
        spacing = spacing or (1.0, 1.0)
        if truth.any():
            pred_t = torch.as_tensor(mask[None, None], dtype=torch.float32)
            true_t = torch.as_tensor(truth[None, None], dtype=torch.float32)
            row["dice"] = float(compute_dice(pred_t, true_t, include_background=True))
            row["hd95"] = (
                float(
                    compute_hausdorff_distance(
                        pred_t, true_t, include_background=True, percentile=95, spacing=list(spacing)
                    )
                )
                if mask.any()
                else None
            )
        if name in reference_hc:
            hc = head_circumference_mm(mask, spacing, outline_inset_px)
            row["hc_mm"] = hc
            row["hc_abs_diff_mm"] = None if hc is None else abs(hc - reference_hc[name])
        per_image.append(row)
    summary = {
        "images": len(per_image),
        "dice": summarise([r.get("dice") for r in per_image if "dice" in r]),
        "hd95": summarise([r.get("hd95") for r in per_image if "dice" in r]),
        "hd95_unit": "mm" if all(r["spacing_known"] for r in per_image) else "pixels",
        "backend": getattr(predictor, "backend", type(predictor).__name__),
    }
    if classes:
        summary["dice_by_class"] = {
            label: summarise([r["dice"] for r in per_image if r.get("class") == label])
            for label in sorted({r["class"] for r in per_image if "dice" in r})
        }
    if reference_hc:
        summary["hc_abs_diff_mm"] = summarise([r.get("hc_abs_diff_mm") for r in per_image])
    empty = [r for r in per_image if r["empty_reference"]]
    if empty:
        summary["false_positive_rate_on_empty"] = sum(r["predicted_any"] for r in empty) / len(empty)
    return _write_json(output_dir, summary, {"metrics.json": summary, "per_image.json": per_image})


def evaluate_volumes(
    predictor,
    preprocessing: VolumePreprocessing,
    postprocessing: Postprocessing,
    segments: Sequence,
    dataset_dir: str | Path,
    split_file: str | Path,
    output_dir: str | Path,
    part: str = "validation",
    limit: int | None = None,
) -> dict:
    """Segment every volume of the split part (``dataset_dir/images``, NIfTI) as inference does (orientation,
    spacing, sliding window, back to the volume's grid), compare each label with ``dataset_dir/labels``, write
    ``metrics.json`` (summary) and ``per_volume.json`` to ``output_dir`` and return the summary: Dice and HD95 (mm)
    per segment and their mean, the volume error per segment, and the CPU time per volume."""
    import time

    import nibabel as nib

    dataset_dir, output_dir = Path(dataset_dir), Path(output_dir)
    names = read_split(split_file, part)[:limit]
    per_volume = []
    for name in tqdm(names, desc=f"evaluating {part}", unit="volume"):
        image = nib.load(str(dataset_dir / "images" / name))
        truth = np.rint(np.asarray(nib.load(str(dataset_dir / "labels" / name)).dataobj)).astype(np.uint8)
        started = time.perf_counter()
        labels = segment_volume(
            np.asarray(image.dataobj, dtype=np.float32), image.affine, predictor, preprocessing, postprocessing
        )
        row = {"volume": name, "seconds": time.perf_counter() - started}
        spacing = [float(s) for s in image.header.get_zooms()[:3]]
        voxel_mm3 = float(np.prod(spacing))
        for segment in segments:
            pred_t = torch.as_tensor(labels == segment.number, dtype=torch.float32)[None, None]
            true_t = torch.as_tensor(truth == segment.number, dtype=torch.float32)[None, None]
            hd95 = (
                float(
                    compute_hausdorff_distance(pred_t, true_t, include_background=True, percentile=95, spacing=spacing)
                )
                if pred_t.any() and true_t.any()
                else None
            )
            row[segment.label] = {
                "dice": float(compute_dice(pred_t, true_t, include_background=True)),
                "hd95_mm": hd95,
                "volume_mm3": float(pred_t.sum()) * voxel_mm3,
                "reference_volume_mm3": float(true_t.sum()) * voxel_mm3,
            }
        row["mean_dice"] = float(np.mean([row[s.label]["dice"] for s in segments]))
        per_volume.append(row)
    summary = {
        "volumes": len(per_volume),
        "dice": {s.label: summarise([r[s.label]["dice"] for r in per_volume]) for s in segments},
        "hd95_mm": {s.label: summarise([r[s.label]["hd95_mm"] for r in per_volume]) for s in segments},
        "volume_error_percent": {
            s.label: summarise([_percent_error(r[s.label]) for r in per_volume if r[s.label]["reference_volume_mm3"]])
            for s in segments
        },
        "mean_dice": summarise([r["mean_dice"] for r in per_volume]),
        "seconds_per_volume": summarise([r["seconds"] for r in per_volume]),
        "backend": getattr(predictor, "backend", type(predictor).__name__),
    }
    return _write_json(output_dir, summary, {"metrics.json": summary, "per_volume.json": per_volume})


def _percent_error(scores: dict) -> float:
    return 100 * (scores["volume_mm3"] - scores["reference_volume_mm3"]) / scores["reference_volume_mm3"]


def _write_json(output_dir: Path, summary: dict, files: dict) -> dict:
    """Write each of ``files`` (name -> content) as JSON into ``output_dir``, print the summary and return it."""
    output_dir.mkdir(parents=True, exist_ok=True)
    for file_name, content in files.items():
        with atomic_path(output_dir / file_name) as tmp:
            tmp.write_text(json.dumps(content, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    return summary
