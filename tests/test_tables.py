"""The side tables of a dataset (HC18's pixel sizes and reference HC, BUSI's classes): read by column, a missing
column named with its file."""

import re
from pathlib import Path

import pytest

from lightweight_nets.io.tables import read_csv_column, read_pixel_sizes

HC18_CSV = Path(__file__).resolve().parents[1] / "samples" / "hc18" / "pixel_size_and_hc.csv"


def test_pixel_sizes_of_the_shipped_samples_are_read_by_file_name():
    sizes = read_pixel_sizes(HC18_CSV)
    assert len(sizes) == 10 and all(0.05 < size < 0.3 for size in sizes.values())
    assert read_csv_column(HC18_CSV, "head_circumference_mm", float).keys() == sizes.keys()


def test_no_table_means_no_values():
    assert read_pixel_sizes(None) == {}


def test_a_missing_column_is_named_with_the_file(tmp_path):
    table = tmp_path / "sizes.csv"
    table.write_text("filename,pixel size\n001_HC.png,0.1\n")
    problem = f"{table}: needs columns filename and pixel_size_mm, has filename, pixel size"
    with pytest.raises(ValueError, match=f"^{re.escape(problem)}$"):
        read_pixel_sizes(table)
