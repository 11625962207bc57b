"""Train/validation splits by group (subject, near-duplicate group), never by image, so validation scores
do not leak. The split is written to a JSON file kept in the bundle."""

from __future__ import annotations

import csv
import json
import random
from collections.abc import Sequence
from pathlib import Path

__all__ = ["split_by_group", "hc18_subject", "make_hc18_split", "make_busi_split", "make_csv_group_split",
           "read_split"]


def split_by_group(names: list[str], groups: list[str], val_fraction: float, seed: int,
                   keep_in_validation: Sequence[str] = ()) -> dict[str, list[str]]:
    """Put whole groups into validation until ``val_fraction`` of the groups is there; shuffled by ``seed``.
    ``keep_in_validation`` groups go there first (e.g. the patients of the end-to-end DICOM tests)."""
    unique = sorted(set(groups) - set(keep_in_validation))
    random.Random(seed).shuffle(unique)
    kept = [g for g in keep_in_validation if g in set(groups)]
    val_groups = set(kept + unique[: max(0, round(len(set(groups)) * val_fraction) - len(kept))])
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
    return make_csv_group_split(Path(dataset_dir) / "labels.csv", "filename", "near_duplicate_group", val_fraction,
                                seed, "busi")


def make_csv_group_split(csv_path: str | Path, name_column: str, group_column: str, val_fraction: float,
                         seed: int = 0, dataset: str | None = None, keep_in_validation: Sequence[str] = ()) -> dict:
    """A split of the files a CSV lists (``name_column``) by its ``group_column`` (a subject, a near-duplicate
    group): MSD hippocampus by ``subject_group`` in ``cases.csv``, the sarcoma CT by ``subject``."""
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    missing = {name_column, group_column} - set(rows[0] if rows else ())
    if missing:
        raise ValueError(f"{csv_path}: no column {', '.join(sorted(missing))}")
    split = split_by_group([r[name_column] for r in rows], [r[group_column] for r in rows], val_fraction, seed,
                           keep_in_validation)
    kept = {"kept_in_validation": list(keep_in_validation)} if keep_in_validation else {}
    return {"dataset": dataset or Path(csv_path).parent.name, "group_by": group_column, "val_fraction": val_fraction,
            "seed": seed, **kept, **split}


def read_split(path: str | Path, part: str) -> list[str]:
    """File names of one part (``train`` or ``validation``) of a split file."""
    split = json.loads(Path(path).read_text())
    if part not in split:
        raise KeyError(f"{path}: split has no part {part!r}")
    return split[part]
