"""``python -m benchmarks.empty_frames``: how often each served 2D model says "nothing here" on frames without its
structure, and what that costs on frames with it -> docs/empty_frames.md (+ .json, + .png).

For every frame the shipped model (its bundle's pre- and post-processing, ONNX Runtime) finds a component in, the
evidence of the largest component (``lightweight_nets.transforms.component_evidence``) is recorded; each single
rule "feature >= t" is then scored at the largest t that keeps the frames with the structure (fetal head: >= 99%
of the HC18 validation images; breast lesion: > 97% of the BUSI validation lesion images), and the rule each
bundle's ``configs/inference.json`` sets (its ``postprocessing#presence``) is scored as configured. Only the
validation splits are read, never the training splits; the thresholds are chosen on them, so there is no held-out
estimate of these rates.

Frames without a fetal head: all frames of the pydicom-data ultrasound files (read as the Deploy app reads them)
and the BUSI validation images. Frames without a breast lesion: the BUSI validation "normal" images.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np
import torch

from benchmarks import checkout
from lightweight_nets.bundle import BundleSpec
from lightweight_nets.io.images import read_image
from lightweight_nets.transforms import PRESENCE_FEATURES, Postprocessing

__all__ = ["NON_FETAL_DICOM", "frame_evidence", "measure", "best_single_rules", "write_report"]

NON_FETAL_DICOM = (
    "color3d_jpeg_baseline.dcm",
    "US1_UNCR.dcm",
    "US1_J2KR.dcm",
    "OBXXXX1A.dcm",
    "OBXXXX1A_2frame.dcm",
    "examples_ybr_color.dcm",
)
KEEP = {"fetal_head_us": 0.99, "breast_lesion_us": 0.97}  # the share of frames with the structure a rule keeps
DATA = Path("..") / "shared" / "data"


def frame_evidence(spec: BundleSpec, predictor, frames: list[np.ndarray], masks: list | None = None) -> list[dict]:
    """Per frame: the largest found component's evidence (None where nothing is found) and, with reference
    ``masks``, the Dice of the found label map with it (the presence rule not applied)."""
    post = Postprocessing(
        spec.postprocessing.activation, spec.postprocessing.threshold, spec.postprocessing.keep_largest
    )
    rows = []
    for index, frame in enumerate(frames):
        with torch.inference_mode():
            logits = spec.preprocessing.inferer(spec.preprocessing(frame), predictor.predict)
            probabilities = post.frame_probabilities(logits, frame.shape)
        labels = post.found_labels(probabilities)
        found = post.evidence(probabilities, labels)[0]
        row = {"evidence": found.get(1)}
        if masks is not None:
            truth, predicted = masks[index] > 0, labels[0] > 0
            total = truth.sum() + predicted.sum()
            row["dice"] = float(2 * (truth & predicted).sum() / total) if total else 1.0
        rows.append(row)
    return rows


def _dicom_frames(names: tuple[str, ...]) -> dict[str, list[np.ndarray]]:
    """The grey frames of pydicom-data files as the Deploy app reads them (headers, series, stacks)."""
    from pydicom.data import get_testdata_file

    from lightweight_seg.dicom_io import build_stacks, group_series, read_headers

    result = {}
    for name in names:
        headers, errors = read_headers([Path(get_testdata_file(name))])
        if errors:
            raise ValueError(f"{name}: {errors[0][1]}")
        for uid, series in group_series(headers).items():
            stacks, errors = build_stacks(uid, series)
            if errors:
                raise ValueError(f"{name}: {errors[0][1]}")
            result[name] = [frame for stack in stacks for frame in stack.frames]
    return result


def _images(folder: Path, names: list[str], with_masks: bool) -> tuple[list[np.ndarray], list[np.ndarray] | None]:
    images = [read_image(folder / "images" / name).pixels for name in names]
    masks = [read_image(folder / "masks" / name).pixels for name in names] if with_masks else None
    return images, masks


def measure(backend: str = "onnx") -> dict:
    """Evidence of every frame of every set, per bundle."""
    hc18, busi = checkout(DATA / "hc18"), checkout(DATA / "busi")
    fetal = BundleSpec.load(checkout("bundle", "fetal_head_us"))
    breast = BundleSpec.load(checkout("bundle", "breast_lesion_us"))
    hc18_names = json.loads(checkout("bundle", "fetal_head_us", "data", "hc18_split.json").read_text())["validation"]
    busi_names = json.loads(checkout("bundle", "breast_lesion_us", "data", "busi_split.json").read_text())["validation"]
    with open(busi / "labels.csv", newline="") as handle:
        classes = {row["filename"]: row["class"] for row in csv.DictReader(handle)}
    busi_images, busi_masks = _images(busi, busi_names, with_masks=True)
    hc18_images, hc18_masks = _images(hc18, hc18_names, with_masks=True)
    fetal_predictor, breast_predictor = fetal.load_predictor(backend), breast.load_predictor(backend)
    sets = {"fetal_head_us": {}, "breast_lesion_us": {}}
    sets["fetal_head_us"]["HC18 validation (heads)"] = frame_evidence(fetal, fetal_predictor, hc18_images, hc18_masks)
    for name, frames in _dicom_frames(NON_FETAL_DICOM).items():
        sets["fetal_head_us"][f"{name} (no head)"] = frame_evidence(fetal, fetal_predictor, frames)
    sets["fetal_head_us"]["BUSI validation (no head)"] = frame_evidence(fetal, fetal_predictor, busi_images)
    breast_rows = frame_evidence(breast, breast_predictor, busi_images, busi_masks)
    for name, row in zip(busi_names, breast_rows):
        row["class"] = classes[name]
    sets["breast_lesion_us"]["BUSI validation lesions (benign + malignant)"] = [
        row for row in breast_rows if row["class"] != "normal"
    ]
    sets["breast_lesion_us"]["BUSI validation normals (no lesion)"] = [
        row for row in breast_rows if row["class"] == "normal"
    ]
    return sets


def _kept(rows: list[dict], presence: dict[str, float]) -> np.ndarray:
    """Which frames keep their component under ``presence`` (a frame with nothing found keeps nothing)."""
    return np.array(
        [
            row["evidence"] is not None and all(row["evidence"][name] >= low for name, low in presence.items())
            for row in rows
        ]
    )


def best_single_rules(sets: dict, keep: float) -> dict[str, float]:
    """Per feature, the largest threshold that keeps at least ``keep`` of the frames with the structure."""
    positives = [row for name, rows in sets.items() if "(no " not in name for row in rows]
    values = {
        name: sorted(r["evidence"][name] if r["evidence"] else -1.0 for r in positives) for name in PRESENCE_FEATURES
    }
    lost = int(np.floor((1 - keep) * len(positives) + 1e-9))
    return {name: round(float(np.floor(v[lost] * 1000) / 1000), 3) for name, v in values.items()}


def _rates(name: str, rows: list[dict], presence: dict[str, float]) -> tuple[float, float, str]:
    """Share of set ``name``'s frames found before and after ``presence``, and for frames with the structure the
    mean Dice before -> after (a frame the rule empties scores 0)."""
    before, after = np.mean([row["evidence"] is not None for row in rows]), _kept(rows, presence)
    if "(no " in name:
        return before, after.mean(), "-"
    dice = np.array([row["dice"] for row in rows])
    return before, after.mean(), f"{dice.mean():.3f} -> {np.where(after, dice, 0.0).mean():.3f}"


def write_report(results: dict, docs: Path) -> Path:
    """docs/empty_frames.md: per bundle, the candidate single rules and the configured one; PNG of the features."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines = [
        '# "Nothing here": frames without the structure',
        "",
        "`python -m benchmarks.empty_frames` (shipped ONNX models, bundle pre- and post-processing). Per frame the",
        "largest found component's evidence; a frame is *found* where its label map is not empty. Thresholds are",
        "chosen on these validation splits (there is no separate test split), never on training images.",
        "",
    ]
    figure, axes = plt.subplots(len(results), len(PRESENCE_FEATURES), figsize=(16, 4 * len(results)), squeeze=False)
    for row_axes, (bundle, sets) in zip(axes, results.items()):
        presence = BundleSpec.load(checkout("bundle", bundle)).postprocessing.presence
        rules = best_single_rules(sets, KEEP[bundle])
        lines += [
            f"## {bundle}",
            "",
            f"Share of frames found. Single rules at the largest threshold that keeps >= {KEEP[bundle]:.0%} of the "
            f"frames with the structure; configured: `postprocessing#presence` = `{json.dumps(presence)}`, Dice "
            "(frames with the structure) before -> after it.",
            "",
            "| frames | n | no rule | "
            + " | ".join(f"{name} >= {low}" for name, low in rules.items())
            + " | configured | Dice |",
            "|---" * (len(rules) + 5) + "|",
        ]
        for name, rows in sets.items():
            before, after, dice = _rates(name, rows, presence)
            singles = " | ".join(f"{_kept(rows, {feature: low}).mean():.1%}" for feature, low in rules.items())
            lines.append(f"| {name} | {len(rows)} | {before:.1%} | {singles} | **{after:.1%}** | {dice} |")
        lines.append("")
        for axis, feature in zip(row_axes, PRESENCE_FEATURES):
            for name, rows in sets.items():
                values = [r["evidence"][feature] for r in rows if r["evidence"]]
                axis.hist(values, bins=40, range=(0, 1), histtype="step", density=True, label=name)
            if feature in presence:
                axis.axvline(presence[feature], color="k", linestyle="--")
            axis.set_title(f"{bundle}: {feature}")
        row_axes[0].legend(fontsize=6)
    figure.tight_layout()
    figure.savefig(docs / "empty_frames.png", dpi=80)
    lines += ["![evidence per set](empty_frames.png)", ""]
    target = docs / "empty_frames.md"
    target.write_text("\n".join(lines))
    return target


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--from-json", action="store_true", help="rewrite the report from docs/empty_frames.json")
    args = parser.parse_args(argv)
    docs = checkout("docs")
    if args.from_json:
        results = json.loads((docs / "empty_frames.json").read_text())
    else:
        results = measure()
        (docs / "empty_frames.json").write_text(json.dumps(results))
    print(write_report(results, docs))


if __name__ == "__main__":
    main()
