"""One file's audit: the walk over its syntax tree that drives the rules its policy applies."""

from __future__ import annotations

import ast
from collections.abc import Iterable

from tools.audit.context import Check, FileContext
from tools.audit.dynamic_code import DynamicCodeCheck
from tools.audit.findings import Violation, apply_suppressions
from tools.audit.hard_coded_reasons import HardCodedReasonCheck
from tools.audit.interface_imports import InterfaceImportCheck
from tools.audit.policy import Policy
from tools.audit.registry_writes import RegistryWriteCheck


def _checks(context: FileContext, policy: Policy, plugin_names: frozenset[str]) -> list[Check]:
    checks: list[Check] = []
    if policy.dynamic_code:
        checks.append(DynamicCodeCheck(context, plugin_names))
    if policy.interface:
        checks.append(InterfaceImportCheck(context))
    if RegistryWriteCheck.applies(policy, context):
        checks.append(RegistryWriteCheck(context))
    if policy.reasons:
        checks.append(HardCodedReasonCheck(context))
    return checks


class _FileWalk(ast.NodeVisitor):
    """Visits every statement and expression once, keeping the context's scope and class."""

    def __init__(self, context: FileContext, checks: list[Check]) -> None:
        self.context = context
        self.checks = checks

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> None:
        for decorator in getattr(node, "decorator_list", []):
            self.visit(decorator)
        stack = self.context.scope_stack
        stack.append(self.context.scopes.get(node, stack[-1]))
        body = node.body if isinstance(node.body, list) else [node.body]
        for statement in body:
            self.visit(statement)
        stack.pop()

    visit_AsyncFunctionDef = visit_FunctionDef
    visit_Lambda = visit_FunctionDef

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self.context.class_stack.append(node)
        self.generic_visit(node)
        self.context.class_stack.pop()

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            for check in self.checks:
                check.check_import(node, alias.name)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level == 0 and node.module:
            for check in self.checks:
                check.check_import(node, node.module)

    def visit_Call(self, node: ast.Call) -> None:
        for check in self.checks:
            check.check_call(node)
        self.generic_visit(node)

    def visit_Assign(self, node: ast.Assign) -> None:
        for target in node.targets:
            self._assigned(node, target)
        self.generic_visit(node)

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        self._assigned(node, node.target)
        self.generic_visit(node)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        if node.value is not None:
            self._assigned(node, node.target)
        self.generic_visit(node)

    def _assigned(self, node: ast.stmt, target: ast.expr) -> None:
        for check in self.checks:
            check.check_assignment(node, target)


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
    context = FileContext(tree, relpath)
    _FileWalk(context, _checks(context, policy, frozenset(plugin_names))).visit(tree)
    return sorted(apply_suppressions(relpath, source, context.violations))
