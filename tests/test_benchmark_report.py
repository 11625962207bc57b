"""``python -m benchmarks --from-json`` rewrites the report from the saved results and measures nothing."""

from __future__ import annotations

import shutil
from pathlib import Path

from benchmarks.__main__ import main
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
