"""What a plugin declares about the interpreter it runs with, read without running it.

A plugin module may say ``python = "/srv/envs/ocr/bin/python"`` (an interpreter path) or
``python = "torch"`` (a name the operator maps to a path in ``PORTAL_PLUGIN_ENVIRONMENTS``).
The portal must know it before the plugin is imported (its imports exist only in that
interpreter), so it is read from the source text with ``ast``: a top-level assignment of a
string literal. Standard library only; parsing runs none of the plugin's code.
"""

from __future__ import annotations

import ast
import dataclasses
import os

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
    try:
        with open(source, "rb") as handle:
            tree = ast.parse(handle.read(), filename=source)
    except (OSError, SyntaxError, ValueError):
        return DeclaredPython()  # the load reports what is wrong with the source itself
    for node in tree.body:
        value = _assigned_value(node)
        if value is None:
            continue
        if isinstance(value, ast.Constant) and isinstance(value.value, str) and value.value:
            return DeclaredPython(value.value.strip())
        return DeclaredPython(
            problem=(
                "python must be a string literal (an interpreter path such as "
                "'/srv/envs/ocr/bin/python', or a name from PORTAL_PLUGIN_ENVIRONMENTS), "
                f"not {ast.unparse(value)[:100]!r}: the portal reads it before importing the plugin"
            )
        )
    return DeclaredPython()


def _assigned_value(node: ast.stmt) -> ast.expr | None:
    if isinstance(node, ast.Assign):
        names = [t.id for t in node.targets if isinstance(t, ast.Name)]
        return node.value if PYTHON_DECLARATION in names else None
    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
        return node.value if node.target.id == PYTHON_DECLARATION else None
    return None
