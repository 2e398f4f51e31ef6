"""One file as the rules see it: what its names refer to as the walk stands, and its findings.

A rule is a `Check`: the walk in source.py calls its hooks on every import, call and assignment
of the file, and it reports through the shared `FileContext`.
"""

from __future__ import annotations

import ast
import builtins
from collections.abc import Container

from tools.audit.findings import Violation
from tools.audit.scopes import Scope, build_scopes, root_of

DICT_FACTORIES = frozenset(
    {"builtins.dict", "collections.defaultdict", "collections.OrderedDict", "collections.Counter"}
)
DICT_ANNOTATIONS = frozenset({"dict", "Dict", "MutableMapping", "defaultdict", "OrderedDict"})


def _import_aliases(tree: ast.Module) -> dict[str, str]:
    """Each name the file's imports bind (anywhere in it), to the dotted name it stands for."""
    aliases: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    aliases[alias.asname] = alias.name
                else:
                    top = alias.name.split(".")[0]
                    aliases[top] = top
        elif isinstance(node, ast.ImportFrom):
            module = "." * node.level + (node.module or "")
            for alias in node.names:
                aliases[alias.asname or alias.name] = f"{module}.{alias.name}".lstrip(".")
    return aliases


class FileContext:
    def __init__(self, tree: ast.Module, path: str) -> None:
        self.path = path
        self.aliases = _import_aliases(tree)
        self.scopes: dict[ast.AST, Scope] = {}
        build_scopes(tree, None, self.scopes)
        self.scope_stack = [self.scopes[tree]]
        self.class_stack: list[ast.ClassDef] = []
        self.violations: list[Violation] = []

    @property
    def scope(self) -> Scope:
        return self.scope_stack[-1]

    def imports_from(self, packages: Container[str]) -> bool:
        """True when the file imports anything from one of the top-level `packages`."""
        return any(name.split(".")[0] in packages for name in self.aliases.values())

    def qualname(self, expr: ast.expr) -> str | None:
        """Dotted name an expression refers to through the file's imports, else None."""
        if isinstance(expr, ast.Name):
            if expr.id in self.aliases:
                return self.aliases[expr.id]
            if not self.scope.lookup(expr.id) and hasattr(builtins, expr.id):
                return f"builtins.{expr.id}"
            return None
        if isinstance(expr, ast.Attribute):
            base = self.qualname(expr.value)
            return f"{base}.{expr.attr}" if base else None
        return None

    def is_dict(self, expr: ast.expr, seen: frozenset[str] = frozenset()) -> bool:
        """True when `expr` is provably a plain dict, not a queryset or a manager."""
        if isinstance(expr, ast.Dict | ast.DictComp):
            return True
        if isinstance(expr, ast.Call):
            if self.qualname(expr.func) in DICT_FACTORIES:
                return True
            func = expr.func
            return (
                isinstance(func, ast.Attribute)
                and func.attr == "copy"
                and self.is_dict(func.value, seen)
            )
        if not isinstance(expr, ast.Name) or expr.id in seen:
            return False
        for annotation in self.scope.annotation_of(expr.id):
            root = root_of(annotation)
            if isinstance(root, ast.Name) and root.id in DICT_ANNOTATIONS:
                return True
            if isinstance(annotation, ast.Constant) and str(annotation.value).startswith("dict"):
                return True
        bindings = self.scope.lookup(expr.id)
        return bool(bindings) and all(
            isinstance(binding, ast.expr) and self.is_dict(binding, seen | {expr.id})
            for binding in bindings
        )

    def report(self, node: ast.AST, rule: str, message: str) -> None:
        line = getattr(node, "lineno", 1)
        end = getattr(node, "end_lineno", None) or line
        self.violations.append(Violation(self.path, line, rule, message, end))


class Check:
    """A rule, or a family of rules, applied node by node; a hook not overridden does nothing."""

    def __init__(self, context: FileContext) -> None:
        self.context = context

    def check_import(self, node: ast.Import | ast.ImportFrom, module: str) -> None:
        """`module` is imported by `node` (once per name of an `import a, b`)."""

    def check_call(self, node: ast.Call) -> None:
        """Every call of the file, outer calls before the calls in their arguments."""

    def check_assignment(self, node: ast.stmt, target: ast.expr) -> None:
        """Every target assigned a value by `=`, an augmented or an annotated assignment."""
