"""PORTAL001 and PORTAL002: plugin code is imported and called only in the sandbox child.

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
"""

from __future__ import annotations

import ast
import builtins

from tools.audit.context import Check, FileContext
from tools.audit.scopes import DEFINED, IMPORTED, root_of, str_constant

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


class DynamicCodeCheck(Check):
    def __init__(self, context: FileContext, plugin_names: frozenset[str]) -> None:
        super().__init__(context)
        self.plugin_names = plugin_names

    def check_import(self, node: ast.Import | ast.ImportFrom, module: str) -> None:
        if module.split(".")[0] in self.plugin_names:
            self.context.report(
                node,
                "PORTAL001",
                f"static import of plugin module '{module}' outside sandbox/ "
                "(run it with sandbox.run_plugin_sandboxed('module:attr'))",
            )

    def check_call(self, node: ast.Call) -> None:
        self._check_dynamic_import(node)
        self._check_entry_point_call(node)

    # PORTAL001: code loaded by name, by path or from an entry point.

    def _is_dynamic_import(self, call: ast.Call) -> bool:
        name = self.context.qualname(call.func)
        if name in LOAD_BY_PATH or name in IMPORT_BY_NAME:
            return True
        return isinstance(call.func, ast.Attribute) and call.func.attr in LOADER_METHODS

    def _contains_dynamic_import(self, expr: ast.AST) -> bool:
        return any(
            isinstance(node, ast.Call) and self._is_dynamic_import(node) for node in ast.walk(expr)
        )

    def _check_dynamic_import(self, node: ast.Call) -> None:
        report = self.context.report
        name = self.context.qualname(node.func)
        first = node.args[0] if node.args else None
        literal = str_constant(first)
        if name in IMPORT_BY_NAME:
            if literal is None:
                report(
                    node,
                    "PORTAL001",
                    f"{name.removeprefix('builtins.')}() of a computed module name outside "
                    "sandbox/ (plugin code is imported only in the sandbox child)",
                )
            elif literal.lstrip(".").split(".")[0] in self.plugin_names:
                report(node, "PORTAL001", f"{name}() of plugin module '{literal}'")
        elif name in LOAD_BY_PATH and not (name == "builtins.exec" and literal is not None):
            report(
                node,
                "PORTAL001",
                f"{name.removeprefix('builtins.')}() loads or executes code outside sandbox/ "
                "(plugin code is imported only in the sandbox child)",
            )
        elif isinstance(node.func, ast.Attribute) and node.func.attr in LOADER_METHODS:
            report(node, "PORTAL001", f".{node.func.attr}() executes a module outside sandbox/")
        elif self._is_entry_point_load(node):
            report(
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
                name = self.context.qualname(sub.func) or ""
                attr = sub.func.attr if isinstance(sub.func, ast.Attribute) else ""
                if name in ENTRY_POINT_SOURCES or attr == "entry_points":
                    return True
        root = root_of(expr)
        if isinstance(root, ast.Name) and root.id not in seen:
            return any(
                isinstance(binding, ast.expr) and self._from_entry_points(binding, seen | {root.id})
                for binding in self.context.scope.lookup(root.id)
            )
        return False

    # PORTAL002: a plugin's run/setup called directly.

    def _is_trusted(self, expr: ast.expr, seen: frozenset[str] = frozenset()) -> bool:
        """True when `expr` provably comes from a static import or a definition in this file."""
        if self._contains_dynamic_import(expr):
            return False
        root = root_of(expr)
        if isinstance(root, ast.Constant | ast.JoinedStr | ast.List | ast.Dict | ast.Tuple):
            return True
        if not isinstance(root, ast.Name) or root.id in seen:
            return False
        bindings = self.context.scope.lookup(root.id)
        if not bindings:
            return root.id in self.context.aliases or hasattr(builtins, root.id)
        return all(
            binding in (IMPORTED, DEFINED)
            or (isinstance(binding, ast.expr) and self._is_trusted(binding, seen | {root.id}))
            for binding in bindings
        )

    def _check_entry_point_call(self, node: ast.Call) -> None:
        func = node.func
        if isinstance(func, ast.Name) and func.id in PLUGIN_ENTRY_POINTS:
            if not self._is_trusted(func):
                self.context.report(
                    node, "PORTAL002", f"{func.id}() of an object not defined or imported here"
                )
        elif isinstance(func, ast.Attribute) and func.attr in PLUGIN_ENTRY_POINTS:
            if not _is_own_object(func.value) and not self._is_trusted(func.value):
                self.context.report(
                    node,
                    "PORTAL002",
                    f"direct call of .{func.attr}() on '{ast.unparse(func.value)}' outside "
                    "sandbox/ (call the plugin through sandbox.run_plugin_sandboxed)",
                )
        elif self.context.qualname(func) == "builtins.getattr" and len(node.args) >= 2:
            attribute = str_constant(node.args[1])
            target = node.args[0]
            if (
                attribute in PLUGIN_ENTRY_POINTS
                and not _is_own_object(target)
                and not self._is_trusted(target)
            ):
                self.context.report(
                    node,
                    "PORTAL002",
                    f"getattr(..., '{attribute}') reaches a plugin entry point outside sandbox/",
                )


def _is_own_object(expr: ast.expr) -> bool:
    if isinstance(expr, ast.Name):
        return expr.id in {"self", "cls"}
    return (
        isinstance(expr, ast.Call) and isinstance(expr.func, ast.Name) and expr.func.id == "super"
    )
