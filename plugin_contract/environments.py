"""What a plugin declares about the interpreter it runs with, read without running it.

A plugin module may say ``python = "/srv/envs/ocr/bin/python"`` (an interpreter path) or
``python = "torch"`` (a name the operator maps to a path in ``PORTAL_PLUGIN_ENVIRONMENTS``).
The portal must know it before the plugin is imported (its imports exist only in that
interpreter), so it is read from the source text with ``tokenize``: a top-level assignment of a
string literal. Standard library only; reading runs none of the plugin's code.
"""

from __future__ import annotations

import codecs
import dataclasses
import os
import tokenize

__all__ = ["DeclaredPython", "declared_python"]

PYTHON_DECLARATION = "python"


@dataclasses.dataclass(frozen=True)
class DeclaredPython:
    """A plugin's ``python`` declaration: ``value`` (None: the portal's own interpreter), or
    ``problem``, why it cannot be read (not a string literal)."""

    value: str | None = None
    problem: str = ""

    @property
    def is_path(self) -> bool:
        return self.value is not None and "/" in self.value


def declared_python(kind: str, path: str) -> DeclaredPython:
    """The ``python`` a file or package plugin declares at its top level (entry points run
    with the portal's interpreter: their distribution is installed there)."""
    if kind == "file":
        source = path
    elif kind == "package":
        source = os.path.join(path, "__init__.py")
    else:
        return DeclaredPython()
    try:
        stat = os.stat(source)
    except OSError:
        return DeclaredPython()  # the load reports the missing source
    key = (source, stat.st_mtime_ns, stat.st_size)
    if key not in _read:  # every run asks: parse each version of the source once
        _read[key] = _read_source(source)
    return _read[key]


_read: dict[tuple[str, int, int], DeclaredPython] = {}


def _read_source(source: str) -> DeclaredPython:
    # tokenize, not ast: CPython 3.11's ast.parse is not safe while another thread parses.
    try:
        with open(source, "rb") as handle:
            tokens = list(tokenize.tokenize(handle.readline))
    except (OSError, SyntaxError, tokenize.TokenError, UnicodeDecodeError):
        return DeclaredPython()  # the load reports what is wrong with the source itself
    depth, starts = 0, True
    for index, token in enumerate(tokens):
        if token.type == tokenize.INDENT:
            depth += 1
        elif token.type == tokenize.DEDENT:
            depth -= 1
        elif token.type == tokenize.NEWLINE:
            starts = True
            continue
        if token.type in (
            tokenize.NL,
            tokenize.COMMENT,
            tokenize.INDENT,
            tokenize.DEDENT,
            tokenize.ENCODING,
        ):
            continue
        if (
            starts
            and depth == 0
            and token.type == tokenize.NAME
            and token.string == PYTHON_DECLARATION
        ):
            declared = _declared_value(tokens[index + 1 :])
            if declared is not None:
                return declared
        starts = False
    return DeclaredPython()


def _declared_value(rest: list[tokenize.TokenInfo]) -> DeclaredPython | None:
    """The value of ``python = ...`` (or ``python: str = ...``) from the tokens after the name;
    None when the statement assigns nothing to it."""
    statement = []
    for token in rest:
        if token.type in (tokenize.NEWLINE, tokenize.ENDMARKER):
            break
        if token.type not in (tokenize.NL, tokenize.COMMENT):
            statement.append(token)
    if not statement or statement[0].string not in ("=", ":"):
        return None
    equals = [i for i, token in enumerate(statement) if token.string == "="]
    if not equals:
        return None
    value = statement[equals[0] + 1 :]
    if not value:
        return None  # not Python: the load reports the syntax error
    text = _string_literal(value[0]) if len(value) == 1 else None
    if text:
        return DeclaredPython(text.strip())
    first, last = value[0], value[-1]
    same_line = first.start[0] == last.end[0]
    shown = first.line[first.start[1] : last.end[1]] if same_line else first.string + " ..."
    shown = shown[:100]
    return DeclaredPython(
        problem=(
            "python must be a string literal (an interpreter path such as "
            "'/srv/envs/ocr/bin/python', or a name from PORTAL_PLUGIN_ENVIRONMENTS), "
            f"not {shown!r}: the portal reads it before importing the plugin"
        )
    )


def _string_literal(token: tokenize.TokenInfo) -> str | None:
    """A plain or raw string literal's text; None for anything else (f-, byte strings)."""
    if token.type != tokenize.STRING:
        return None
    text = token.string
    prefix = text[: len(text) - len(text.lstrip("rRuU"))].lower()
    body = text[len(prefix) :]
    for quote in ('"""', "'''", '"', "'"):
        if body.startswith(quote) and body.endswith(quote) and len(body) >= 2 * len(quote):
            inner = body[len(quote) : -len(quote)]
            return inner if "r" in prefix else codecs.decode(inner, "unicode_escape")
    return None
