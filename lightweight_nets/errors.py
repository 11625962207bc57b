"""The one way an exception becomes part of a one-line message."""

from __future__ import annotations

__all__ = ["first_line"]


def first_line(error: BaseException, innermost: bool = False) -> str:
    """The first non-empty line of ``error``'s message, or its type name when the message is empty (ONNX Runtime
    and decoders raise multi-line messages, some errors none). ``innermost``: of the innermost ``__cause__``
    instead, for wrappers such as MONAI's "Failed to instantiate" whose own message says nothing of the problem."""
    while innermost and error.__cause__ is not None:
        error = error.__cause__
    return (str(error).strip().splitlines() or [type(error).__name__])[0]
