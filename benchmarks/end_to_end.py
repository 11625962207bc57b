"""Hook for the end-to-end benchmark through the MONAI Deploy app (DICOM in, DICOM-SEG out).

Not measured yet: whoever adds it fills :func:`markdown_section` (it is called by the report, its Markdown goes
into docs/benchmarks.md under "End to end"), measuring with the same 2-thread setting as the CPU tables.
"""

from __future__ import annotations

__all__ = ["markdown_section"]


def markdown_section() -> str:
    """Markdown for the "End to end" section of docs/benchmarks.md."""
    return ("Not measured yet: the Deploy app's end-to-end time (DICOM in -> DICOM-SEG out) goes here, "
            "from `benchmarks/end_to_end.py`.\n")
