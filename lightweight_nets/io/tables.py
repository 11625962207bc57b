"""A dataset's side tables: CSV files with a ``filename`` column and one value per image (HC18's pixel sizes and
reference head circumferences, BUSI's classes)."""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["read_csv_column", "read_pixel_sizes"]


def read_csv_column(csv_path: str | Path | None, column: str, convert: Callable[[str], Any] = str) -> dict[str, Any]:
    """``{file name: convert(value)}`` from a CSV with a ``filename`` column and ``column``; ``{}`` without a path,
    a clear error naming the file when a column is missing."""
    if not csv_path:
        return {}
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    if rows and not {"filename", column} <= set(rows[0]):
        raise ValueError(f"{csv_path}: needs columns filename and {column}, has {', '.join(rows[0])}")
    return {row["filename"]: convert(row[column]) for row in rows}


def read_pixel_sizes(csv_path: str | Path | None) -> dict[str, float]:
    """``{file name: pixel size in mm}`` from a CSV with ``filename`` and ``pixel_size_mm`` columns (HC18's)."""
    return read_csv_column(csv_path, "pixel_size_mm", float)
