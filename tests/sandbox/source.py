"""Where a test's target functions stand in their source, to check reported locations."""

from __future__ import annotations


def line_of(function: object, text: str) -> int:
    """The line number of the first source line of ``function`` that contains ``text``."""
    code = function.__code__  # type: ignore[attr-defined]
    with open(code.co_filename) as handle:
        lines = handle.read().splitlines()
    return next(n for n, line in enumerate(lines, 1) if n >= code.co_firstlineno and text in line)
