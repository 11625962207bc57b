"""Train/validation splits by group (subject, near-duplicate group), never by image, so validation scores
do not leak. The split is written to a JSON file kept in the bundle."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

__all__ = ["split_by_group", "hc18_subject", "make_hc18_split", "make_busi_split", "read_split"]


def split_by_group(names: list[str], groups: list[str], val_fraction: float, seed: int) -> dict[str, list[str]]:
    """Put whole groups into validation until ``val_fraction`` of the groups is there; shuffled by ``seed``."""
    unique = sorted(set(groups))
    random.Random(seed).shuffle(unique)
    val_groups = set(unique[: round(len(unique) * val_fraction)])
    split = {"train": [], "validation": []}
    for name, group in zip(names, groups):
        split["validation" if group in val_groups else "train"].append(name)
    return {k: sorted(v) for k, v in split.items()}


def hc18_subject(filename: str) -> str:
    """HC18 subject id: the number before the first underscore (``010_2HC.png`` -> ``010``)."""
    return filename.split("_", 1)[0]


def make_hc18_split(dataset_dir: str | Path, val_fraction: float = 0.2, seed: int = 0) -> dict:
    names = sorted(p.name for p in (Path(dataset_dir) / "images").glob("*.png"))
    split = split_by_group(names, [hc18_subject(n) for n in names], val_fraction, seed)
    return {"dataset": "hc18", "group_by": "subject (number before the first underscore)",
            "val_fraction": val_fraction, "seed": seed, **split}


def make_busi_split(dataset_dir: str | Path, val_fraction: float = 0.3, seed: int = 0) -> dict:
    with open(Path(dataset_dir) / "labels.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    split = split_by_group([r["filename"] for r in rows], [r["near_duplicate_group"] for r in rows],
                           val_fraction, seed)
    return {"dataset": "busi", "group_by": "near_duplicate_group", "val_fraction": val_fraction, "seed": seed,
            **split}


def read_split(path: str | Path, part: str) -> list[str]:
    """File names of one part (``train`` or ``validation``) of a split file."""
    split = json.loads(Path(path).read_text())
    if part not in split:
        raise KeyError(f"{path}: split has no part {part!r}")
    return split[part]
