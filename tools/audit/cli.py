"""The whole audit of a tree (`audit_paths`) and its command line (`python -m tools.audit`)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from tools.audit.cycles import ALLOWED_IMPORT_CYCLES, cycle_violations, import_graph
from tools.audit.findings import RULES, Violation
from tools.audit.policy import ROOT, plugin_module_names
from tools.audit.source import audit_source
from tools.audit.walk import iter_python_files, relative


def audit_paths(
    paths: Sequence[Path],
    root: Path = ROOT,
    *,
    allowed_cycles: frozenset[frozenset[str]] = ALLOWED_IMPORT_CYCLES,
) -> list[Violation]:
    names = plugin_module_names(root)
    violations: list[Violation] = []
    audited: set[str] = set()
    for file in iter_python_files(paths):
        relpath = relative(file, root)
        audited.add(relpath)
        source = file.read_text(encoding="utf-8")
        violations.extend(audit_source(source, relpath, plugin_names=names))
    violations += cycle_violations(import_graph(root), audited, root, allowed_cycles)
    return sorted(violations)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.audit", description="Check the house rules on the source tree."
    )
    parser.add_argument("paths", nargs="*", type=Path, help="files or directories (default: root)")
    parser.add_argument("--root", type=Path, default=ROOT, help="repository root (default: here)")
    parser.add_argument("--list-rules", action="store_true", help="print the rules and exit")
    args = parser.parse_args(argv)
    if args.list_rules:
        for rule, text in RULES.items():
            print(f"{rule} {text}")
        return 0
    if not args.root.is_dir():
        parser.error(f"--root {args.root} is not a directory")
    paths = args.paths or [args.root]
    missing = [str(path) for path in paths if not path.exists()]
    if missing:
        parser.error(f"no such file or directory: {', '.join(missing)}")
    violations = audit_paths(paths, args.root)
    for violation in violations:
        print(violation)
    if violations:
        count = len(violations)
        print(f"{count} house-rule violation(s); see docs/contributing.md", file=sys.stderr)
        return 1
    return 0
