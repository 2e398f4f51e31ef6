"""Command-line arguments checked as text before a command uses them.

A shell passes bytes; Python turns those that are not UTF-8 into lone surrogates (`$'\\xff'`
becomes '\\udcff'), which then fail deep inside a query or a print with a traceback. Every
portal command refuses them up front with exit code 2 and a message naming the argument.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from plugins_app.storable import shown, text_problem


def argument_problem(value: str) -> str | None:
    """Why a command-line value cannot be used, in the terms of a shell user, or None."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raw = value.encode("utf-8", "surrogateescape") if _from_bytes(value) else None
        given = f" ({raw!r})" if raw is not None else ""
        return (
            f"is not UTF-8 text{given}: check the terminal's or the script's encoding and "
            "pass the value as UTF-8"
        )
    return text_problem(value)


def _from_bytes(value: str) -> bool:
    try:
        value.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return False
    return True


def _values(args: tuple, options: dict[str, Any]) -> Iterator[tuple[str, str]]:
    for value in args:
        if isinstance(value, str):
            yield "argument", value
    for dest, value in options.items():
        items = value if isinstance(value, list | tuple) else [value]
        for item in items:
            if isinstance(item, str):
                yield dest, item


class PortalCommand(BaseCommand):
    """A command whose string arguments are valid text by the time handle() runs."""

    def execute(self, *args: Any, **options: Any) -> Any:
        for dest, value in _values(args, options):
            problem = argument_problem(value)
            if problem:
                raise CommandError(f"The {dest} argument '{shown(value)}' {problem}", returncode=2)
        return super().execute(*args, **options)
