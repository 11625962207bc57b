"""``python -m benchmarks --from-json`` rewrites the report from the saved results and measures nothing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from benchmarks import end_to_end
from benchmarks.__main__ import END_TO_END_AGAIN, main
from benchmarks.report import END_TO_END_HEADING, KEPT_HEADING

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_from_json_gives_back_the_shipped_report_with_its_kept_sections(tmp_path):
    """The shipped run has no saved end-to-end rows: its measured End to end section and the hand-written section
    are kept as they are, and every table comes back from the JSON unchanged (a new measurement would differ)."""
    for name in ("benchmarks.json", "benchmarks.md"):
        shutil.copy(DOCS / name, tmp_path / name)
    main(["--from-json", "--markdown", str(tmp_path / "benchmarks.md")])
    report = (tmp_path / "benchmarks.md").read_text()
    assert f"\n{END_TO_END_HEADING}\n" in report and f"\n{KEPT_HEADING}\n" in report
    assert report == (DOCS / "benchmarks.md").read_text()


@pytest.mark.slow
def test_end_to_end_alone_re_measures_that_section_and_keeps_the_tables(tmp_path):
    """``--end-to-end`` (after a model change): the nets' tables stay as saved, the end-to-end rows are measured
    anew through the pipeline, and the environment line names this re-measurement once, however often it runs."""
    for name in ("benchmarks.json", "benchmarks.md"):
        shutil.copy(DOCS / name, tmp_path / name)
    before = json.loads((tmp_path / "benchmarks.json").read_text())
    main(["--end-to-end", "--markdown", str(tmp_path / "benchmarks.md")])
    after = json.loads((tmp_path / "benchmarks.json").read_text())
    assert after["results"] == before["results"] and after["command"] == before["command"]
    assert [row["case"] for row in after["end_to_end"]] == list(end_to_end.CASES)
    assert all(row["total_s"] > 0 and "error" not in row for row in after["end_to_end"])
    assert after["end_to_end"] != before.get("end_to_end")
    assert after["environment"].count(END_TO_END_AGAIN) == 1
    report = (tmp_path / "benchmarks.md").read_text()
    assert f"\n{KEPT_HEADING}\n" in report and "peak RSS" in report
    assert (
        report.split(END_TO_END_HEADING)[0].split("\n", 3)[3]
        == (DOCS / "benchmarks.md").read_text().split(END_TO_END_HEADING)[0].split("\n", 3)[3]
    )  # every table above the section, as shipped
