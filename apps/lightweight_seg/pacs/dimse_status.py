"""DIMSE status codes by name, and what a peer's answer means, from pynetdicom's own status tables.

The node answers C-STORE with the codes named here; the clients judge C-FIND, C-GET and C-STORE answers by their
category (PS3.7 Annex C: Success, Warning, Pending, Failure, Cancel) and name them in error messages.
"""

from __future__ import annotations

from pydicom.dataset import Dataset
from pynetdicom.status import (
    QR_FIND_SERVICE_CLASS_STATUS,
    QR_GET_SERVICE_CLASS_STATUS,
    STATUS_PENDING,
    STATUS_SUCCESS,
    STATUS_WARNING,
    STORAGE_SERVICE_CLASS_STATUS,
    Status,
    code_to_category,
)

SUCCESS = Status.SUCCESS  # 0x0000
OUT_OF_RESOURCES = 0xA700  # C-STORE refused: the instance could not be written to the spool
DATA_SET_DOES_NOT_MATCH_SOP_CLASS = 0xA900  # C-STORE error; here: no valid Series / SOP Instance UID to file it by

# What a code means, per service (pynetdicom's tables of PS3.4 and PS3.7).
STORE = STORAGE_SERVICE_CLASS_STATUS
FIND = QR_FIND_SERVICE_CLASS_STATUS
GET = QR_GET_SERVICE_CLASS_STATUS


def code(status: Dataset | None) -> int | None:
    """The Status of a DIMSE answer; None when no answer came (pynetdicom's empty Dataset: aborted, timed out)."""
    return int(status.Status) if status is not None and "Status" in status else None


def done(status: Dataset | None) -> bool:
    """Success or Warning: the peer did it (a C-STORE warning, e.g. coercion of data elements, still stored it)."""
    value = code(status)
    return value is not None and code_to_category(value) in (STATUS_SUCCESS, STATUS_WARNING)


def pending(status: Dataset | None) -> bool:
    """Pending: an intermediate answer (a C-FIND match, C-GET progress); the final one is still to come."""
    value = code(status)
    return value is not None and code_to_category(value) == STATUS_PENDING


def describe(status: Dataset | None, service: dict[int, tuple[str, str]] = STORE) -> str:
    """One line for messages: "0xA700 Failure: Refused: Out of Resources", or why there is no code."""
    value = code(status)
    if value is None:
        return "no answer (association aborted or timed out)"
    category, meaning = service.get(value, (code_to_category(value), ""))
    return f"0x{value:04X} {category}" + (f": {meaning}" if meaning else "")
