"""House-rule audit: the rules of docs/contributing.md, checked on the source, not from memory.

Usage: python -m tools.audit [--root DIR] [PATH ...]   (no PATH: the whole tree under --root)
Prints one `file:line: RULE message` line per violation; exits 0 when clean, 1 on violations,
2 on misuse. `python -m tools.audit --list-rules` prints the rules.

A line may carry a narrow, explained suppression: `# audit: allow PORTAL002 <why, in words>`.
It covers the statement or call it sits on, must give a why, and is itself reported when it
suppresses nothing, so stale suppressions cannot pile up.

Heuristics (precision over recall; the run-time guard in tools/plugin_guard.py backs PORTAL001):
- PORTAL001 flags every call that loads code by path or executes code (spec_from_file_location,
  runpy, SourceFileLoader, exec_module, exec, zero-argument entry-point `.load()`), and calls
  that import by name (import_module, __import__, import_string, pkgutil.resolve_name) unless
  the name is a string literal that is not a plugin module; also static imports of a module
  that lives in a plugin directory.
- PORTAL002 flags `X.run(...)`/`X.setup(...)`, bare `run()`/`setup()` and
  `getattr(X, "run"|"setup")` unless X is `self`/`cls`/`super()` or provably comes from a
  static import or a definition in the file (`subprocess.run`, `asyncio.run`, `django.setup`,
  `schema.as_state_machine().run()` where `schema = schemathesis...`). A plugin object in the
  portal could only come from a dynamic import, which PORTAL001 flags, so trusting statically
  imported names costs no safety. Parameters, loop variables and getattr results are flagged.
- PORTAL003 flags assignments and `setattr` to a registry field on anything but `self` in a
  class that is not a Django model, and `.update()`/`.create()`/`.get_or_create()`/
  `.update_or_create()`/model constructors passing a registry field, unless the receiver is
  provably a dict (a dict display, `dict(...)`, or a name bound or annotated only as such).
- PORTAL004 flags a `reason=` keyword in plugins_app/ (outside plugins_app/reasons.py) whose
  value is or contains a non-empty string literal or f-string; `reason=""` (no reason), HTTP
  responses' reason phrases and plain dicts being built are fine.
- PORTAL005 flags any import of `sandbox` (module level or inside a function) in the admin,
  the API and the commands.
- PORTAL006 flags an import cycle among the modules of the project's packages, counting
  imports inside functions and leaving out `if TYPE_CHECKING:` blocks; `from package import
  module` imports the module, not the package. A cycle is reported when one of its files is
  audited; ALLOWED_IMPORT_CYCLES lists known exceptions, and an exception whose cycle is gone
  is reported (when this file is audited) so that it is removed.
"""

from __future__ import annotations

import argparse
import ast
import builtins
import io
import re
import sys
import tokenize
from collections import deque
from collections.abc import Container, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Directories holding plugin code (it runs in the sandbox, so the rules do not apply to it).
PLUGIN_DIRS = ("examples/plugins",)
SANDBOX_DIR = "sandbox/"
# The plugin-side loader: it imports plugins and reads their run and setup too, but only ever
# in a sandbox process. The rest of plugin_contract/ is audited like portal code.
PLUGIN_SIDE_MODULES = ("plugin_contract/loader.py", "plugin_contract/declarations.py")
# Benchmark scripts seed thousands of rows in bulk to time reads; they never run in the portal
# and would take minutes going through the services row by row.
SEED_DATA_DIRS = ("benchmarks/",)
SERVICES_MODULE = "plugins_app/services.py"
REASONS_MODULE = "plugins_app/reasons.py"
REASON_RULE_SCOPE = "plugins_app/"
# Never scanned: tooling caches, environments, generated output; migrations run once, on
# historical models, and are generated code.
SKIPPED_DIR_NAMES = frozenset(
    {"__pycache__", "node_modules", "var", "staticfiles", "htmlcov", "build", "dist", "migrations"}
)
PROJECT_PACKAGES = frozenset(
    {"plugins_app", "plugin_contract", "portal", "sandbox", "tools", "tests"}
)
# The operator interfaces: they reach the sandbox only through plugins_app's registry code.
INTERFACE_PREFIXES = ("plugins_app/admin", "plugins_app/api/", "plugins_app/management/")
SANDBOX_PACKAGE = "sandbox"
# Packages whose modules may not import each other in a circle (PORTAL006).
CYCLE_FREE_PACKAGES = ("plugins_app", "plugin_contract", "portal", "sandbox", "tools")
AUDIT_MODULE = "tools/audit.py"
# Import cycles accepted for now (none: the executor is handed its job by the runner).
ALLOWED_IMPORT_CYCLES: frozenset[frozenset[str]] = frozenset()

RULES = {
    "PORTAL000": "file cannot be parsed",
    "PORTAL001": "dynamic import of plugin code outside sandbox/",
    "PORTAL002": "direct call of a plugin's run/setup outside sandbox/",
    "PORTAL003": "registry state, counter or reason written outside plugins_app/services.py",
    "PORTAL004": "hard-coded reason in plugins_app/ (build it in plugins_app/reasons.py)",
    "PORTAL005": "the admin, the API or a command imports sandbox/ (go through plugins_app)",
    "PORTAL006": "import cycle among the project's packages",
    "PORTAL009": "suppression comment without a why, naming no known rule, or suppressing nothing",
}

REGISTRY_FIELDS = frozenset(
    {"state", "reason", "success_count", "error_count", "consecutive_failures", "running_count"}
)
REGISTRY_MODELS = frozenset({"Plugin", "PluginRun", "PluginEvent"})
ROW_WRITING_METHODS = frozenset({"update", "create", "get_or_create", "update_or_create"})
PLUGIN_ENTRY_POINTS = frozenset({"run", "setup"})

# Import by dotted name: a string literal naming a non-plugin module is a static dependency.
IMPORT_BY_NAME = frozenset(
    {
        "importlib.import_module",
        "importlib.__import__",
        "builtins.__import__",
        "django.utils.module_loading.import_string",
        "pkgutil.resolve_name",
        "runpy.run_module",
    }
)
# Load or execute code by path or code object: plugin loading, whatever the argument.
LOAD_BY_PATH = frozenset(
    {
        "importlib.util.spec_from_file_location",
        "importlib.util.spec_from_loader",
        "importlib.util.module_from_spec",
        "importlib.machinery.SourceFileLoader",
        "importlib.machinery.SourcelessFileLoader",
        "importlib.machinery.ExtensionFileLoader",
        "runpy.run_path",
        "imp.load_source",
        "imp.load_module",
        "imp.load_compiled",
        "imp.load_package",
        "zipimport.zipimporter",
        "pkgutil.walk_packages",  # imports every package it finds, to look inside
        "builtins.exec",
    }
)
LOADER_METHODS = frozenset({"exec_module", "load_module"})
ENTRY_POINT_SOURCES = frozenset(
    {
        "importlib.metadata.entry_points",
        "importlib_metadata.entry_points",
        "pkg_resources.iter_entry_points",
        "importlib.metadata.EntryPoint",
    }
)
DICT_FACTORIES = frozenset(
    {"builtins.dict", "collections.defaultdict", "collections.OrderedDict", "collections.Counter"}
)
DICT_ANNOTATIONS = frozenset({"dict", "Dict", "MutableMapping", "defaultdict", "OrderedDict"})
TRANSLATIONS = frozenset({"_", "gettext", "gettext_lazy", "pgettext", "ngettext"})

SUPPRESSION = re.compile(r"#\s*audit:\s*allow\b(?P<rest>.*)$")
SUPPRESSION_RULES = re.compile(r"\s*(?P<rules>[A-Z]+\d{3}(?:\s*,\s*[A-Z]+\d{3})*)(?P<why>.*)$")
MIN_WHY_WORDS = 3


@dataclass(frozen=True, order=True)
class Violation:
    path: str
    line: int
    rule: str
    message: str
    end_line: int = field(default=0, compare=False)

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.rule} {self.message}"


@dataclass(frozen=True)
class Policy:
    """Which rules apply to a file, from its path relative to the repository root."""

    dynamic_code: bool  # PORTAL001, PORTAL002
    registry_writes: bool  # PORTAL003
    reasons: bool  # PORTAL004
    registry_writes_if_django: bool = False  # PORTAL003 only when the file imports Django
    interface: bool = False  # PORTAL005

    @classmethod
    def for_path(cls, relpath: str) -> Policy | None:
        """None: not audited (plugin code, migrations)."""
        parts = relpath.split("/")
        if any(relpath == d or relpath.startswith(d + "/") for d in PLUGIN_DIRS):
            return None
        if "migrations" in parts[:-1]:
            return None
        if relpath.startswith(SANDBOX_DIR) or relpath in PLUGIN_SIDE_MODULES:
            # The sandbox imports plugins by design and knows nothing of the registry; should it
            # ever import Django, the registry rule applies to it again.
            return cls(
                dynamic_code=False,
                registry_writes=False,
                reasons=False,
                registry_writes_if_django=True,
            )
        return cls(
            dynamic_code=True,
            registry_writes=relpath != SERVICES_MODULE and not relpath.startswith(SEED_DATA_DIRS),
            reasons=relpath.startswith(REASON_RULE_SCOPE) and relpath != REASONS_MODULE,
            interface=relpath.startswith(INTERFACE_PREFIXES),
        )


def plugin_module_names(root: Path) -> frozenset[str]:
    """Top-level module names that live in the plugin directories (stdlib names excluded)."""
    names: set[str] = set()
    for relative in PLUGIN_DIRS:
        directory = root / relative
        if not directory.is_dir():
            continue
        for entry in directory.iterdir():
            if entry.suffix == ".py" and entry.stem.isidentifier():
                names.add(entry.stem)
            elif entry.is_dir() and (entry / "__init__.py").exists():
                names.add(entry.name)
    return frozenset(names - set(sys.stdlib_module_names) - PROJECT_PACKAGES)


# --- Scopes: what a name is bound to, so receivers can be judged --------------------------------

_IMPORTED = "import"
_DEFINED = "def"
_UNKNOWN = "unknown"

Binding = ast.expr | str  # an expression the name was assigned, or one of the markers above


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


_SCOPE_NODES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)


def _scope_body(node: ast.AST) -> Iterator[ast.AST]:
    """Nodes of one scope, not descending into nested functions, classes or comprehensions."""
    stack = list(ast.iter_child_nodes(node))
    while stack:
        child = stack.pop()
        yield child
        if isinstance(child, (*_SCOPE_NODES, ast.ClassDef)):
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
            _bind_target(scope, element, _UNKNOWN)
    elif isinstance(target, ast.Starred):
        _bind_target(scope, target.value, _UNKNOWN)


def _build_scope(node: ast.AST, parent: Scope | None, scopes: dict[ast.AST, Scope]) -> None:
    scope = Scope(parent)
    scopes[node] = scope
    if isinstance(node, _SCOPE_NODES):
        args = node.args
        for arg in [*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg]:
            if arg is not None:
                scope.bind(arg.arg, _UNKNOWN)
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
            _bind_target(scope, child.target, _UNKNOWN)
        elif isinstance(child, (ast.For, ast.AsyncFor)):
            _bind_target(scope, child.target, child.iter)
        elif isinstance(child, ast.withitem) and child.optional_vars is not None:
            _bind_target(scope, child.optional_vars, child.context_expr)
        elif isinstance(child, ast.NamedExpr):
            _bind_target(scope, child.target, child.value)
        elif isinstance(child, (ast.Import, ast.ImportFrom)):
            for alias in child.names:
                scope.bind((alias.asname or alias.name).split(".")[0], _IMPORTED)
        elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            scope.bind(child.name, _DEFINED)
        elif isinstance(child, ast.ExceptHandler) and child.name:
            scope.bind(child.name, _UNKNOWN)
        elif isinstance(child, (ast.Global, ast.Nonlocal)):
            for name in child.names:
                scope.bind(name, _UNKNOWN)
    for child in _scope_body(node):
        if isinstance(child, _SCOPE_NODES):
            _build_scope(child, scope, scopes)
        elif isinstance(child, ast.ClassDef):
            # Methods do not see the class body's names: they hang off the enclosing scope.
            for item in _scope_body(child):
                if isinstance(item, _SCOPE_NODES):
                    _build_scope(item, scope, scopes)


# --- The per-file audit ----------------------------------------------------------------------


def _root_of(expr: ast.expr) -> ast.expr:
    while True:
        if isinstance(expr, ast.Attribute | ast.Subscript):
            expr = expr.value
        elif isinstance(expr, ast.Call):
            expr = expr.func
        else:
            return expr


def _last_name(expr: ast.expr) -> str:
    """`Plugin` for `Plugin`, `models.Plugin` and `app.models.Plugin`."""
    if isinstance(expr, ast.Attribute):
        return expr.attr
    return expr.id if isinstance(expr, ast.Name) else ""


def _looks_like_model(base: ast.expr) -> bool:
    """A base class named like a Django model (`models.Model`, `TimeStampedModel`)."""
    return _last_name(base).endswith("Model")


def _str_constant(node: ast.expr | None) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    return None


class _FileAudit(ast.NodeVisitor):
    def __init__(
        self, tree: ast.Module, path: str, policy: Policy, plugin_names: frozenset[str]
    ) -> None:
        self.path = path
        self.policy = policy
        self.plugin_names = plugin_names
        self.aliases = self._aliases(tree)
        self.scopes: dict[ast.AST, Scope] = {}
        _build_scope(tree, None, self.scopes)
        self.scope_stack = [self.scopes[tree]]
        self.class_stack: list[ast.ClassDef] = []
        self.violations: list[Violation] = []
        self.registry_writes = policy.registry_writes or (
            policy.registry_writes_if_django
            and any(
                name.split(".")[0] in {"django", "plugins_app"} for name in self.aliases.values()
            )
        )

    # Names and what they stand for.

    @staticmethod
    def _aliases(tree: ast.Module) -> dict[str, str]:
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

    @property
    def scope(self) -> Scope:
        return self.scope_stack[-1]

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

    def is_dynamic_import(self, call: ast.Call) -> bool:
        name = self.qualname(call.func)
        if name in LOAD_BY_PATH or name in IMPORT_BY_NAME:
            return True
        return isinstance(call.func, ast.Attribute) and call.func.attr in LOADER_METHODS

    def contains_dynamic_import(self, expr: ast.AST) -> bool:
        return any(
            isinstance(node, ast.Call) and self.is_dynamic_import(node) for node in ast.walk(expr)
        )

    def is_trusted(self, expr: ast.expr, seen: frozenset[str] = frozenset()) -> bool:
        """True when `expr` provably comes from a static import or a definition in this file."""
        if self.contains_dynamic_import(expr):
            return False
        root = _root_of(expr)
        if isinstance(root, ast.Constant | ast.JoinedStr | ast.List | ast.Dict | ast.Tuple):
            return True
        if not isinstance(root, ast.Name) or root.id in seen:
            return False
        bindings = self.scope.lookup(root.id)
        if not bindings:
            return root.id in self.aliases or hasattr(builtins, root.id)
        return all(
            binding in (_IMPORTED, _DEFINED)
            or (isinstance(binding, ast.expr) and self.is_trusted(binding, seen | {root.id}))
            for binding in bindings
        )

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
            root = _root_of(annotation)
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

    # Traversal with scopes.

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> None:
        for decorator in getattr(node, "decorator_list", []):
            self.visit(decorator)
        self.scope_stack.append(self.scopes.get(node, self.scope))
        body = node.body if isinstance(node.body, list) else [node.body]
        for statement in body:
            self.visit(statement)
        self.scope_stack.pop()

    visit_AsyncFunctionDef = visit_FunctionDef
    visit_Lambda = visit_FunctionDef

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self.class_stack.append(node)
        self.generic_visit(node)
        self.class_stack.pop()

    # PORTAL001: dynamic import; static import of a plugin module.

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if self.policy.dynamic_code:
                self._check_static_import(node, alias.name)
            if self.policy.interface:
                self._check_interface_import(node, alias.name)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level == 0 and node.module:
            if self.policy.dynamic_code:
                self._check_static_import(node, node.module)
            if self.policy.interface:
                self._check_interface_import(node, node.module)

    def _check_static_import(self, node: ast.AST, module: str) -> None:
        if module.split(".")[0] in self.plugin_names:
            self.report(
                node,
                "PORTAL001",
                f"static import of plugin module '{module}' outside sandbox/ "
                "(run it with sandbox.run_plugin_sandboxed('module:attr'))",
            )

    # PORTAL005: interfaces go through plugins_app, never straight to the sandbox.

    def _check_interface_import(self, node: ast.AST, module: str) -> None:
        if module.split(".")[0] == SANDBOX_PACKAGE:
            self.report(
                node,
                "PORTAL005",
                f"the admin, the API and the commands do not import '{module}': take what "
                "they need from plugins_app (models' choices, the pipeline, the services)",
            )

    def visit_Call(self, node: ast.Call) -> None:
        if self.policy.dynamic_code:
            self._check_dynamic_import(node)
            self._check_entry_point_call(node)
        if self.registry_writes:
            self._check_row_write(node)
        if self.policy.reasons:
            self._check_reason(node)
        self.generic_visit(node)

    def _check_dynamic_import(self, node: ast.Call) -> None:
        name = self.qualname(node.func)
        first = node.args[0] if node.args else None
        literal = _str_constant(first)
        if name in IMPORT_BY_NAME:
            if literal is None:
                self.report(
                    node,
                    "PORTAL001",
                    f"{name.removeprefix('builtins.')}() of a computed module name outside "
                    "sandbox/ (plugin code is imported only in the sandbox child)",
                )
            elif literal.lstrip(".").split(".")[0] in self.plugin_names:
                self.report(node, "PORTAL001", f"{name}() of plugin module '{literal}'")
        elif name in LOAD_BY_PATH and not (name == "builtins.exec" and literal is not None):
            self.report(
                node,
                "PORTAL001",
                f"{name.removeprefix('builtins.')}() loads or executes code outside sandbox/ "
                "(plugin code is imported only in the sandbox child)",
            )
        elif isinstance(node.func, ast.Attribute) and node.func.attr in LOADER_METHODS:
            self.report(
                node, "PORTAL001", f".{node.func.attr}() executes a module outside sandbox/"
            )
        elif self._is_entry_point_load(node):
            self.report(
                node,
                "PORTAL001",
                "entry point .load() imports plugin code outside sandbox/ "
                "(pass its 'module:attr' value to the sandbox instead)",
            )

    def _is_entry_point_load(self, node: ast.Call) -> bool:
        func = node.func
        if not (isinstance(func, ast.Attribute) and func.attr == "load"):
            return False
        if node.args or node.keywords:
            return False
        return self._from_entry_points(func.value, frozenset())

    def _from_entry_points(self, expr: ast.expr, seen: frozenset[str]) -> bool:
        for sub in ast.walk(expr):
            if isinstance(sub, ast.Call):
                name = self.qualname(sub.func) or ""
                attr = sub.func.attr if isinstance(sub.func, ast.Attribute) else ""
                if name in ENTRY_POINT_SOURCES or attr == "entry_points":
                    return True
        root = _root_of(expr)
        if isinstance(root, ast.Name) and root.id not in seen:
            return any(
                isinstance(binding, ast.expr) and self._from_entry_points(binding, seen | {root.id})
                for binding in self.scope.lookup(root.id)
            )
        return False

    # PORTAL002: a plugin's run/setup called directly.

    def _check_entry_point_call(self, node: ast.Call) -> None:
        func = node.func
        if isinstance(func, ast.Name) and func.id in PLUGIN_ENTRY_POINTS:
            if not self.is_trusted(func):
                self.report(
                    node, "PORTAL002", f"{func.id}() of an object not defined or imported here"
                )
        elif isinstance(func, ast.Attribute) and func.attr in PLUGIN_ENTRY_POINTS:
            if not self._is_own_object(func.value) and not self.is_trusted(func.value):
                self.report(
                    node,
                    "PORTAL002",
                    f"direct call of .{func.attr}() on '{ast.unparse(func.value)}' outside "
                    "sandbox/ (call the plugin through sandbox.run_plugin_sandboxed)",
                )
        elif self.qualname(func) == "builtins.getattr" and len(node.args) >= 2:
            attribute = _str_constant(node.args[1])
            target = node.args[0]
            if (
                attribute in PLUGIN_ENTRY_POINTS
                and not self._is_own_object(target)
                and not self.is_trusted(target)
            ):
                self.report(
                    node,
                    "PORTAL002",
                    f"getattr(..., '{attribute}') reaches a plugin entry point outside sandbox/",
                )

    @staticmethod
    def _is_own_object(expr: ast.expr) -> bool:
        if isinstance(expr, ast.Name):
            return expr.id in {"self", "cls"}
        return (
            isinstance(expr, ast.Call)
            and isinstance(expr.func, ast.Name)
            and expr.func.id == "super"
        )

    # PORTAL003: registry fields written outside the services.

    def visit_Assign(self, node: ast.Assign) -> None:
        if self.registry_writes:
            for target in node.targets:
                self._check_field_target(node, target)
        self.generic_visit(node)

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        if self.registry_writes:
            self._check_field_target(node, node.target)
        self.generic_visit(node)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        if self.registry_writes and node.value is not None:
            self._check_field_target(node, node.target)
        self.generic_visit(node)

    def _check_field_target(self, node: ast.stmt, target: ast.expr) -> None:
        if isinstance(target, ast.Tuple | ast.List):
            for element in target.elts:
                self._check_field_target(node, element)
        elif (
            isinstance(target, ast.Attribute)
            and target.attr in REGISTRY_FIELDS
            and not self._is_plain_object_attribute(target.value)
        ):
            self._report_field_write(node, f"assignment to .{target.attr}")

    def _is_plain_object_attribute(self, receiver: ast.expr) -> bool:
        """`self.reason = ...` in an exception, dataclass or form sets no registry row."""
        if not (isinstance(receiver, ast.Name) and receiver.id == "self" and self.class_stack):
            return False
        cls = self.class_stack[-1]
        return cls.name not in REGISTRY_MODELS and not any(_looks_like_model(b) for b in cls.bases)

    def _report_field_write(self, node: ast.AST, what: str) -> None:
        self.report(
            node,
            "PORTAL003",
            f"{what} outside {SERVICES_MODULE} (state, counters and reason change only "
            "through a service function)",
        )

    def _check_row_write(self, node: ast.Call) -> None:
        func = node.func
        written = self._registry_keywords(node)
        if isinstance(func, ast.Attribute) and func.attr in ROW_WRITING_METHODS:
            if written and not self.is_dict(func.value):
                fields = ", ".join(sorted(written))
                self._report_field_write(node, f".{func.attr}({fields}=...)")
        elif self.qualname(func) == "builtins.setattr" and len(node.args) >= 2:
            attribute = _str_constant(node.args[1])
            if attribute in REGISTRY_FIELDS and not self._is_plain_object_attribute(node.args[0]):
                self._report_field_write(node, f"setattr(..., '{attribute}')")
        elif written and _last_name(func) in REGISTRY_MODELS:
            fields = ", ".join(sorted(written))
            self._report_field_write(node, f"{ast.unparse(func)}({fields}=...)")

    @staticmethod
    def _registry_keywords(node: ast.Call) -> set[str]:
        written: set[str] = set()
        for keyword in node.keywords:
            if keyword.arg in REGISTRY_FIELDS:
                written.add(keyword.arg)
            elif keyword.arg in {"defaults", "create_defaults", None} and isinstance(
                keyword.value, ast.Dict
            ):
                written |= {
                    key
                    for key_node in keyword.value.keys
                    if (key := _str_constant(key_node)) in REGISTRY_FIELDS
                }
        return written

    # PORTAL004: reasons come from plugins_app/reasons.py.

    def _check_reason(self, node: ast.Call) -> None:
        callee = self.qualname(node.func) or ast.unparse(node.func)
        if callee.endswith("Response"):  # an HTTP reason phrase, not a registry reason
            return
        if callee in DICT_FACTORIES or (
            isinstance(node.func, ast.Attribute) and self.is_dict(node.func.value)
        ):
            return  # building a plain dict passes nothing to a service
        for keyword in node.keywords:
            if keyword.arg == "reason" and self._hard_coded_text(keyword.value):
                self.report(
                    keyword.value,
                    "PORTAL004",
                    "reason= is a hard-coded string; build it with a function in "
                    f"{REASONS_MODULE} so every reason says what failed, why and what next",
                )

    def _hard_coded_text(self, expr: ast.expr) -> bool:
        if isinstance(expr, ast.Constant):
            return isinstance(expr.value, str) and bool(expr.value.strip())
        if isinstance(expr, ast.JoinedStr):
            return bool(expr.values)
        if isinstance(expr, ast.BinOp):
            return self._hard_coded_text(expr.left) or self._hard_coded_text(expr.right)
        if isinstance(expr, ast.IfExp):
            return self._hard_coded_text(expr.body) or self._hard_coded_text(expr.orelse)
        if isinstance(expr, ast.BoolOp):
            return any(self._hard_coded_text(value) for value in expr.values)
        if isinstance(expr, ast.Call):
            func = expr.func
            if isinstance(func, ast.Attribute) and func.attr == "format":
                return self._hard_coded_text(func.value)
            if isinstance(func, ast.Name) and func.id in TRANSLATIONS:
                return any(self._hard_coded_text(arg) for arg in expr.args)
        return False


# --- Suppressions ----------------------------------------------------------------------------


@dataclass
class Suppression:
    line: int
    rules: frozenset[str]
    why: str
    used: bool = False


def _suppressions(source: str) -> tuple[list[Suppression], list[tuple[int, str]]]:
    """Suppression comments, and (line, problem) for malformed ones."""
    found: list[Suppression] = []
    problems: list[tuple[int, str]] = []
    tokens = tokenize.generate_tokens(io.StringIO(source).readline)
    for token in tokens:
        if token.type != tokenize.COMMENT:
            continue
        match = SUPPRESSION.search(token.string)
        if not match:
            continue
        line = token.start[0]
        parsed = SUPPRESSION_RULES.match(match["rest"])
        if not parsed:
            problems.append((line, "suppression names no rule: use `# audit: allow RULE <why>`"))
            continue
        rules = frozenset(rule.strip() for rule in parsed["rules"].split(","))
        unknown = sorted(rules - RULES.keys())
        why = parsed["why"].strip(" :-—")
        if unknown:
            problems.append((line, f"suppression names unknown rule(s) {', '.join(unknown)}"))
        elif len(why.split()) < MIN_WHY_WORDS:
            problems.append(
                (line, f"suppression needs a why of at least {MIN_WHY_WORDS} words after the rule")
            )
        else:
            found.append(Suppression(line, rules, why))
    return found, problems


def _apply_suppressions(path: str, source: str, violations: list[Violation]) -> list[Violation]:
    suppressions, problems = _suppressions(source)
    kept: list[Violation] = []
    for violation in violations:
        span = range(violation.line, max(violation.end_line, violation.line) + 1)
        matching = [s for s in suppressions if s.line in span and violation.rule in s.rules]
        for suppression in matching:
            suppression.used = True
        if not matching:
            kept.append(violation)
    for line, problem in problems:
        kept.append(Violation(path, line, "PORTAL009", problem, line))
    for suppression in suppressions:
        if not suppression.used:
            rules = ", ".join(sorted(suppression.rules))
            kept.append(
                Violation(
                    path,
                    suppression.line,
                    "PORTAL009",
                    f"suppression of {rules} suppresses nothing here: remove it",
                    suppression.line,
                )
            )
    return kept


# --- Import cycles (PORTAL006) ----------------------------------------------------------------


@dataclass
class ImportGraph:
    """Which project module imports which, and where: module → {imported module: line}."""

    files: dict[str, str] = field(default_factory=dict)  # module → path relative to the root
    edges: dict[str, dict[str, int]] = field(default_factory=dict)


def _module_of(relpath: str) -> str:
    parts = relpath.removesuffix(".py").split("/")
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(test: ast.expr) -> bool:
    return _last_name(test) == "TYPE_CHECKING"


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
            relpath = _relative(file, root)
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


# --- Entry points ----------------------------------------------------------------------------


def audit_source(
    source: str, path: str, *, plugin_names: Iterable[str] = frozenset()
) -> list[Violation]:
    """Violations in one file's source; `path` is relative to the repository root."""
    relpath = path.replace("\\", "/")
    policy = Policy.for_path(relpath)
    if policy is None:
        return []
    try:
        tree = ast.parse(source, filename=relpath)
    except SyntaxError as error:
        return [Violation(relpath, error.lineno or 1, "PORTAL000", f"cannot parse: {error.msg}")]
    audit = _FileAudit(tree, relpath, policy, frozenset(plugin_names))
    audit.visit(tree)
    return sorted(_apply_suppressions(relpath, source, audit.violations))


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


def _relative(path: Path, root: Path) -> str:
    resolved = path.resolve()
    try:
        return resolved.relative_to(root.resolve()).as_posix()
    except ValueError:
        return resolved.as_posix()


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
        relpath = _relative(file, root)
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


if __name__ == "__main__":
    sys.exit(main())
