"""Train/validation splits by group (subject, near-duplicate group), never by image, so validation scores
do not leak. The split is written to a JSON file kept in the bundle; ``lightweight-seg-split`` regenerates it::

    lightweight-seg-split hc18 ../shared/data/hc18 -o bundle/fetal_head_us/data/hc18_split.json
    lightweight-seg-split busi ../shared/data/busi -o bundle/breast_lesion_us/data/busi_split.json
    lightweight-seg-split csv ../shared/data/msd_hippocampus/cases.csv --group-column subject_group \
        --dataset msd_hippocampus -o bundle/hippocampus_mr/data/hippocampus_split.json
    lightweight-seg-split csv ../shared/data/sts_ct/cases.csv --group-column subject --val-fraction 0.25 \
        --dataset sts_ct --keep-in-validation STS_002 STS_019 STS_025 -o bundle/sarcoma_ct/data/sts_split.json
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import sys
from collections.abc import Sequence
from pathlib import Path

from lightweight_nets.io.files import atomic_path

__all__ = [
    "split_by_group",
    "hc18_subject",
    "make_hc18_split",
    "make_busi_split",
    "make_csv_group_split",
    "read_split",
    "main",
]


def split_by_group(
    names: list[str], groups: list[str], val_fraction: float, seed: int, keep_in_validation: Sequence[str] = ()
) -> dict[str, list[str]]:
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
    return {
        "dataset": "hc18",
        "group_by": "subject (number before the first underscore)",
        "val_fraction": val_fraction,
        "seed": seed,
        **split,
    }


def make_busi_split(dataset_dir: str | Path, val_fraction: float = 0.3, seed: int = 0) -> dict:
    return make_csv_group_split(
        Path(dataset_dir) / "labels.csv", "filename", "near_duplicate_group", val_fraction, seed, "busi"
    )


def make_csv_group_split(
    csv_path: str | Path,
    name_column: str,
    group_column: str,
    val_fraction: float = 0.2,
    seed: int = 0,
    dataset: str | None = None,
    keep_in_validation: Sequence[str] = (),
) -> dict:
    """A split of the files a CSV lists (``name_column``) by its ``group_column`` (a subject, a near-duplicate
    group): MSD hippocampus by ``subject_group`` in ``cases.csv``, the sarcoma CT by ``subject``."""
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    missing = {name_column, group_column} - set(rows[0] if rows else ())
    if missing:
        raise ValueError(f"{csv_path}: no column {', '.join(sorted(missing))}")
    split = split_by_group(
        [r[name_column] for r in rows], [r[group_column] for r in rows], val_fraction, seed, keep_in_validation
    )
    kept = {"kept_in_validation": list(keep_in_validation)} if keep_in_validation else {}
    return {
        "dataset": dataset or Path(csv_path).parent.name,
        "group_by": group_column,
        "val_fraction": val_fraction,
        "seed": seed,
        **kept,
        **split,
    }


def read_split(path: str | Path, part: str) -> list[str]:
    """File names of one part (``train`` or ``validation``) of a split file."""
    split = json.loads(Path(path).read_text())
    if part not in split:
        raise KeyError(f"{path}: split has no part {part!r}")
    return split[part]


def main(argv: Sequence[str] | None = None) -> int:
    """``lightweight-seg-split``: write the group split of a dataset as the bundles keep it (JSON)."""
    parser = argparse.ArgumentParser(prog="lightweight-seg-split", description=__doc__.splitlines()[0])
    parser.add_argument(
        "kind",
        choices=("hc18", "busi", "csv"),
        help="hc18: a folder with images/; busi: a folder with labels.csv; csv: any CSV of files",
    )
    parser.add_argument("source", type=Path, help="the dataset folder (hc18, busi) or the CSV (csv)")
    parser.add_argument("-o", "--output", type=Path, required=True, help="the split JSON to write")
    parser.add_argument(
        "--val-fraction", type=float, help="share of the groups in validation (default 0.2; 0.3 for busi)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--name-column", default="file", help="csv: the column of file names")
    parser.add_argument("--group-column", help="csv: the column of groups (subject, near-duplicate group)")
    parser.add_argument("--dataset", help="csv: the dataset's name (default: the CSV's folder)")
    parser.add_argument(
        "--keep-in-validation",
        nargs="*",
        default=(),
        metavar="GROUP",
        help="csv: groups that must be in validation (e.g. the end-to-end test patients)",
    )
    args = parser.parse_args(argv)
    if args.val_fraction is not None and not 0 < args.val_fraction < 1:
        parser.error(f"--val-fraction {args.val_fraction}: expected a number between 0 and 1")
    fraction = {} if args.val_fraction is None else {"val_fraction": args.val_fraction}
    try:
        if args.kind == "hc18":
            split = make_hc18_split(args.source, seed=args.seed, **fraction)
        elif args.kind == "busi":
            split = make_busi_split(args.source, seed=args.seed, **fraction)
        else:
            if not args.group_column:
                parser.error("csv needs --group-column")
            split = make_csv_group_split(
                args.source,
                args.name_column,
                args.group_column,
                seed=args.seed,
                dataset=args.dataset,
                keep_in_validation=args.keep_in_validation,
                **fraction,
            )
    except (OSError, ValueError) as error:
        print(f"lightweight-seg-split: {error}", file=sys.stderr)
        return 1
    if not split["train"] and not split["validation"]:
        print(f"lightweight-seg-split: {args.source}: no files to split", file=sys.stderr)
        return 1
    with atomic_path(args.output) as tmp:
        tmp.write_text(json.dumps(split, indent=1) + "\n")
    print(f"{args.output}: {len(split['train'])} train, {len(split['validation'])} validation")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
