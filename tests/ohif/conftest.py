"""The OHIF viewer test starts its Orthanc the way the PACS tests do: their helpers, importable from here."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pacs"))
