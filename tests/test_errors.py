"""One line of an exception for one-line messages."""

from __future__ import annotations

from lightweight_nets.errors import first_line


def test_first_line_of_a_multi_line_message_or_the_type_name():
    assert first_line(ValueError("\n  bad shape\nTraceback of the library\n")) == "bad shape"
    assert first_line(KeyError()) == "KeyError"


def test_innermost_cause_for_wrapped_errors():
    try:
        try:
            raise ValueError("spatial_size must be positive")
        except ValueError as error:
            raise RuntimeError("Failed to instantiate {...}") from error
    except RuntimeError as wrapped:
        assert first_line(wrapped) == "Failed to instantiate {...}"
        assert first_line(wrapped, innermost=True) == "spatial_size must be positive"
