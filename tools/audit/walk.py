"""The Python files the audit reads, and their paths relative to the repository root."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

# Never scanned: tooling caches, environments, generated output; migrations run once, on
# historical models, and are generated code.
SKIPPED_DIR_NAMES = frozenset(
    {"__pycache__", "node_modules", "var", "staticfiles", "htmlcov", "build", "dist", "migrations"}
)


def iter_python_files(paths: Sequence[Path]) -> Iterator[Path]:
    for path in paths:
        if path.is_file():
            if path.suffix == ".py":
                yield path
            continue
        for child in sorted(path.iterdir()):
            if child.name.startswith(".") or child.name in SKIPPED_DIR_NAMES:
                continue
            if child.is_dir() or child.suffix == ".py":
                yield from iter_python_files([child])


def relative(path: Path, root: Path) -> str:
    resolved = path.resolve()
    try:
        return resolved.relative_to(root.resolve()).as_posix()
    except ValueError:
        return resolved.as_posix()
