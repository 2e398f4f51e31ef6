"""What a name is bound to in each scope of a file, so the rules can judge a receiver.

A name bound only by static imports and definitions is trusted; one bound by an assignment is
as trustworthy as what was assigned; parameters, loop targets of unknown iterables, exception
names and `global`/`nonlocal` names are unknown.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass, field

IMPORTED = "import"
DEFINED = "def"
UNKNOWN = "unknown"

Binding = ast.expr | str  # an expression the name was assigned, or one of the markers above

SCOPE_NODES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)


def root_of(expr: ast.expr) -> ast.expr:
    """`a` for `a.b[0].c()`: the expression an attribute, subscript or call chain starts from."""
    while True:
        if isinstance(expr, ast.Attribute | ast.Subscript):
            expr = expr.value
        elif isinstance(expr, ast.Call):
            expr = expr.func
        else:
            return expr


def last_name(expr: ast.expr) -> str:
    """`Plugin` for `Plugin`, `models.Plugin` and `app.models.Plugin`."""
    if isinstance(expr, ast.Attribute):
        return expr.attr
    return expr.id if isinstance(expr, ast.Name) else ""


def str_constant(node: ast.expr | None) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    return None


@dataclass
class Scope:
    parent: Scope | None
    bindings: dict[str, list[Binding]] = field(default_factory=dict)
    annotations: dict[str, list[ast.expr]] = field(default_factory=dict)

    def bind(self, name: str, value: Binding) -> None:
        self.bindings.setdefault(name, []).append(value)

    def lookup(self, name: str) -> list[Binding]:
        scope: Scope | None = self
        while scope is not None:
            if name in scope.bindings:
                return scope.bindings[name]
            scope = scope.parent
        return []

    def annotation_of(self, name: str) -> list[ast.expr]:
        scope: Scope | None = self
        while scope is not None:
            if name in scope.bindings:
                return scope.annotations.get(name, [])
            scope = scope.parent
        return []


def _scope_body(node: ast.AST) -> Iterator[ast.AST]:
    """Nodes of one scope, not descending into nested functions, classes or comprehensions."""
    stack = list(ast.iter_child_nodes(node))
    while stack:
        child = stack.pop()
        yield child
        if isinstance(child, (*SCOPE_NODES, ast.ClassDef)):
            # Decorators and defaults run in the enclosing scope; the body does not.
            stack.extend(getattr(child, "decorator_list", []))
            if not isinstance(child, ast.ClassDef):
                stack.extend(child.args.defaults + [d for d in child.args.kw_defaults if d])
            continue
        if isinstance(child, (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)):
            continue
        stack.extend(ast.iter_child_nodes(child))


def _bind_target(scope: Scope, target: ast.expr, value: Binding) -> None:
    if isinstance(target, ast.Name):
        scope.bind(target.id, value)
    elif isinstance(target, (ast.Tuple, ast.List)):
        for element in target.elts:
            _bind_target(scope, element, UNKNOWN)
    elif isinstance(target, ast.Starred):
        _bind_target(scope, target.value, UNKNOWN)


def build_scopes(node: ast.AST, parent: Scope | None, scopes: dict[ast.AST, Scope]) -> None:
    """Fill `scopes` with the scope of `node` and of every function nested in it."""
    scope = Scope(parent)
    scopes[node] = scope
    if isinstance(node, SCOPE_NODES):
        args = node.args
        for arg in [*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg]:
            if arg is not None:
                scope.bind(arg.arg, UNKNOWN)
                if arg.annotation is not None:
                    scope.annotations.setdefault(arg.arg, []).append(arg.annotation)
    for child in _scope_body(node):
        if isinstance(child, ast.Assign):
            for target in child.targets:
                _bind_target(scope, target, child.value)
        elif isinstance(child, ast.AnnAssign) and isinstance(child.target, ast.Name):
            scope.annotations.setdefault(child.target.id, []).append(child.annotation)
            if child.value is not None:
                scope.bind(child.target.id, child.value)
        elif isinstance(child, ast.AugAssign):
            _bind_target(scope, child.target, UNKNOWN)
        elif isinstance(child, (ast.For, ast.AsyncFor)):
            _bind_target(scope, child.target, child.iter)
        elif isinstance(child, ast.withitem) and child.optional_vars is not None:
            _bind_target(scope, child.optional_vars, child.context_expr)
        elif isinstance(child, ast.NamedExpr):
            _bind_target(scope, child.target, child.value)
        elif isinstance(child, (ast.Import, ast.ImportFrom)):
            for alias in child.names:
                scope.bind((alias.asname or alias.name).split(".")[0], IMPORTED)
        elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            scope.bind(child.name, DEFINED)
        elif isinstance(child, ast.ExceptHandler) and child.name:
            scope.bind(child.name, UNKNOWN)
        elif isinstance(child, (ast.Global, ast.Nonlocal)):
            for name in child.names:
                scope.bind(name, UNKNOWN)
    for child in _scope_body(node):
        if isinstance(child, SCOPE_NODES):
            build_scopes(child, scope, scopes)
        elif isinstance(child, ast.ClassDef):
            # Methods do not see the class body's names: they hang off the enclosing scope.
            for item in _scope_body(child):
                if isinstance(item, SCOPE_NODES):
                    build_scopes(item, scope, scopes)
