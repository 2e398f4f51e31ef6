"""PORTAL006: no import cycle among the modules of the project's packages.

Imports inside functions count, `if TYPE_CHECKING:` blocks do not; `from package import module`
imports the module, not the package. A cycle is reported when one of its files is audited;
ALLOWED_IMPORT_CYCLES lists known exceptions, and an exception whose cycle is gone is reported
(when this file is audited) so that it is removed.
"""

from __future__ import annotations

import ast
from collections import deque
from collections.abc import Container, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tools.audit.findings import Violation
from tools.audit.scopes import last_name
from tools.audit.walk import iter_python_files, relative

# Packages whose modules may not import each other in a circle.
CYCLE_FREE_PACKAGES = ("plugins_app", "plugin_contract", "portal", "sandbox", "tools")
# This file, where a stale exception below is reported.
AUDIT_MODULE = "tools/audit/cycles.py"
# Import cycles accepted for now (none: the executor is handed its job by the runner).
ALLOWED_IMPORT_CYCLES: frozenset[frozenset[str]] = frozenset()


@dataclass
class ImportGraph:
    """Which project module imports which, and where: module → {imported module: line}."""

    files: dict[str, str] = field(default_factory=dict)  # module → path relative to the root
    edges: dict[str, dict[str, int]] = field(default_factory=dict)


def _module_of(relpath: str) -> str:
    parts = relpath.removesuffix(".py").split("/")
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(test: ast.expr) -> bool:
    return last_name(test) == "TYPE_CHECKING"


def _run_time_imports(nodes: Iterable[ast.AST]) -> Iterator[ast.Import | ast.ImportFrom]:
    """Imports anywhere in the nodes, functions included, except under `if TYPE_CHECKING:`."""
    for node in nodes:
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            yield from _run_time_imports(node.orelse)
        else:
            yield from _run_time_imports(ast.iter_child_nodes(node))


def _imported_names(node: ast.Import | ast.ImportFrom, module: str, package: bool) -> list[str]:
    """Dotted names an import may bind to modules: `a.b` for `from a import b` and for `a.b`."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        here = module.split(".") if package else module.split(".")[:-1]
        anchor = here[: len(here) - node.level + 1]
        base = ".".join([*anchor, *([base] if base else [])])
    return [f"{base}.{alias.name}" for alias in node.names] + [base]


def _known_prefix(name: str, modules: Container[str]) -> str | None:
    """The longest leading part of a dotted name that is one of `modules`."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in modules:
            return candidate
    return None


def import_graph(root: Path, packages: Sequence[str] = CYCLE_FREE_PACKAGES) -> ImportGraph:
    """The run-time imports between the modules of `packages` under `root`."""
    graph = ImportGraph()
    trees: dict[str, tuple[ast.Module, bool]] = {}
    for package in packages:
        if not (root / package).is_dir():
            continue
        for file in iter_python_files([root / package]):
            relpath = relative(file, root)
            try:
                tree = ast.parse(file.read_text(encoding="utf-8"), filename=relpath)
            except SyntaxError:
                continue  # PORTAL000 reports it
            module = _module_of(relpath)
            graph.files[module] = relpath
            trees[module] = (tree, file.name == "__init__.py")
    for module, (tree, is_package) in trees.items():
        targets: dict[str, int] = {}
        for node in _run_time_imports(tree.body):
            names = _imported_names(node, module, is_package)
            # `from a import b`: the module a.b when there is one, else a itself.
            if isinstance(node, ast.ImportFrom):
                *submodules, base = names
                found = [name for name in submodules if name in graph.files]
                names = found if len(found) == len(submodules) else [*found, base]
            for name in names:
                target = _known_prefix(name, graph.files)
                if target and target != module:
                    targets.setdefault(target, node.lineno)
        graph.edges[module] = targets
    return graph


@dataclass(frozen=True, order=True)
class ImportCycle:
    """Modules that all reach each other by imports, and one circle through them to show."""

    path: tuple[str, ...]  # from the group's first module back to it
    modules: frozenset[str] = field(compare=False)


def import_cycles(graph: ImportGraph) -> list[ImportCycle]:
    """One cycle per strongly connected group of modules (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for target in graph.edges.get(module, {}):
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in on_stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            group = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.add(member)
                if member == module:
                    break
            if len(group) > 1:
                groups.append(group)

    for module in sorted(graph.edges):
        if module not in index:
            visit(module)
    return sorted(ImportCycle(_shortest_cycle(graph, group), frozenset(group)) for group in groups)


def _shortest_cycle(graph: ImportGraph, group: set[str]) -> tuple[str, ...]:
    start = min(group)
    paths: dict[str, tuple[str, ...]] = {start: (start,)}
    queue = deque([start])
    while queue:
        module = queue.popleft()
        for target in sorted(graph.edges.get(module, {})):
            if target == start:
                return (*paths[module], start)
            if target in group and target not in paths:
                paths[target] = (*paths[module], target)
                queue.append(target)
    raise AssertionError(f"no cycle through {start}")  # a strongly connected group has one


def cycle_violations(
    graph: ImportGraph,
    audited: set[str],
    root: Path,
    allowed: frozenset[frozenset[str]] = ALLOWED_IMPORT_CYCLES,
) -> list[Violation]:
    """Cycles through an audited file, and allowed cycles that no longer exist."""
    violations = []
    found = import_cycles(graph)
    for cycle in found:
        if cycle.modules in allowed or not audited & {graph.files[m] for m in cycle.modules}:
            continue
        first, second = cycle.path[0], cycle.path[1]
        violations.append(
            Violation(
                graph.files[first],
                graph.edges[first][second],
                "PORTAL006",
                f"import cycle: {' → '.join(cycle.path)} (break it: hand the callable in, or "
                "move what both need into a module of its own)",
            )
        )
    if AUDIT_MODULE in audited:
        for gone in sorted(sorted(group) for group in allowed - {c.modules for c in found}):
            violations.append(
                Violation(
                    AUDIT_MODULE,
                    _line_of(root / AUDIT_MODULE, "ALLOWED_IMPORT_CYCLES ="),
                    "PORTAL006",
                    f"allowed import cycle {', '.join(gone)} no longer exists: remove it from "
                    "ALLOWED_IMPORT_CYCLES",
                )
            )
    return violations


def _line_of(path: Path, text: str) -> int:
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.startswith(text):
            return number
    return 1
