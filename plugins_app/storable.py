"""What text the registry can store and show: no NUL characters, no lone surrogates.

JSON lets a client send both (`\\u0000`, `\\udcff`); PostgreSQL refuses them (a DataError that
looked like an outage), SQLite stores them, and then rendering the value as UTF-8 fails for
ever after. So they are refused where they come in: API bodies and URL parts, command lines.
"""

from __future__ import annotations

from typing import Any

# MAX_NAME_CHARS is Plugin.name's column size: a longer name cannot be registered, so cannot
# be looked up.
from plugin_contract import MAX_NAME_CHARS

_SHOWN_CHARS = 60


def text_problem(text: str) -> str | None:
    """Why `text` cannot be stored as it is, or None when it can."""
    if "\x00" in text:
        return "contains a NUL character (\\u0000)"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        bad = text[error.start]
        return (
            f"contains a lone surrogate ({ascii(bad)[1:-1]}), which is not text: send valid "
            "UTF-8, or pass binary data as base64"
        )
    return None


def value_problem(value: Any, where: str) -> str | None:
    """The first NUL or lone surrogate in a parsed JSON value, keys included, at any depth.

    Returns `where.path: problem` (e.g. `params.pages[1].title: contains ...`) or None.
    Iterative, so a deeply nested value cannot exhaust the stack.
    """
    pending: list[tuple[Any, str]] = [(value, where)]
    while pending:
        item, path = pending.pop()
        if isinstance(item, str):
            problem = text_problem(item)
            if problem:
                return f"{path}: {problem}"
        elif isinstance(item, dict):
            for key, child in reversed(list(item.items())):
                problem = text_problem(key) if isinstance(key, str) else None
                if problem:
                    return f"{path}: a key {problem}"
                pending.append((child, f"{path}.{key}"))
        elif isinstance(item, list):
            pending.extend((child, f"{path}[{i}]") for i, child in reversed(list(enumerate(item))))
    return None


def name_problem(name: str) -> str | None:
    """Why no plugin can be named `name` (so it need not be looked up), or None."""
    if len(name) > MAX_NAME_CHARS:
        return f"it is {len(name)} characters long, and names have at most {MAX_NAME_CHARS}"
    return text_problem(name)


def shown(text: str) -> str:
    """`text` safe to put in a message: escaped where unprintable, shortened when long."""
    escaped = ascii(text)[1:-1] if not text.isprintable() or text_problem(text) else text
    if len(escaped) > _SHOWN_CHARS:
        return escaped[: _SHOWN_CHARS - 3] + "..."
    return escaped
