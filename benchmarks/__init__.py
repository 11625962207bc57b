"""CPU benchmarks of the network zoo across inference backends: ``python -m benchmarks`` (``make bench``).

They are developer tools: they measure the repository checkout's samples/ and its bundles' training outputs
(teacher, ablation weights, validation splits), which an installed copy does not hold.
"""

from pathlib import Path

__all__ = ["NotACheckoutError", "checkout"]

_REPOSITORY = Path(__file__).resolve().parents[1]


class NotACheckoutError(FileNotFoundError):
    """What a benchmark measures is not there: it runs from an installed copy, not from a checkout."""


def checkout(*parts: str) -> Path:
    """The path ``parts`` inside the repository checkout the benchmarks run from; a missing one raises
    :class:`NotACheckoutError` naming it."""
    path = _REPOSITORY.joinpath(*parts)
    if not path.exists():
        raise NotACheckoutError(
            f"{path}: not found; the benchmarks run from a checkout of lightweight-seg "
            "(git clone, then make venv), not from an installed copy"
        )
    return path
