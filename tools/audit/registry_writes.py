"""PORTAL003: registry state, counters and reasons change only in plugins_app/services/.

Flags assignments and `setattr` to a registry field on anything but `self` in a class that is
not a Django model, and `.update()`/`.create()`/`.get_or_create()`/`.update_or_create()`/model
constructors passing a registry field, unless the receiver is provably a dict (a dict display,
`dict(...)`, or a name bound or annotated only as such).
"""

from __future__ import annotations

import ast

from tools.audit.context import Check, FileContext
from tools.audit.policy import SERVICES_PACKAGE, Policy
from tools.audit.scopes import last_name, str_constant

REGISTRY_FIELDS = frozenset(
    {"state", "reason", "success_count", "error_count", "consecutive_failures", "running_count"}
)
REGISTRY_MODELS = frozenset({"Plugin", "PluginRun", "PluginEvent"})
ROW_WRITING_METHODS = frozenset({"update", "create", "get_or_create", "update_or_create"})
# Importing one of these makes a sandbox file portal code, and the rule applies to it again.
PORTAL_PACKAGES = frozenset({"django", "plugins_app"})


def _looks_like_model(base: ast.expr) -> bool:
    """A base class named like a Django model (`models.Model`, `TimeStampedModel`)."""
    return last_name(base).endswith("Model")


class RegistryWriteCheck(Check):
    @staticmethod
    def applies(policy: Policy, context: FileContext) -> bool:
        return policy.registry_writes or (
            policy.registry_writes_if_django and context.imports_from(PORTAL_PACKAGES)
        )

    def check_assignment(self, node: ast.stmt, target: ast.expr) -> None:
        if isinstance(target, ast.Tuple | ast.List):
            for element in target.elts:
                self.check_assignment(node, element)
        elif (
            isinstance(target, ast.Attribute)
            and target.attr in REGISTRY_FIELDS
            and not self._is_plain_object_attribute(target.value)
        ):
            self._report(node, f"assignment to .{target.attr}")

    def check_call(self, node: ast.Call) -> None:
        func = node.func
        written = _registry_keywords(node)
        if isinstance(func, ast.Attribute) and func.attr in ROW_WRITING_METHODS:
            if written and not self.context.is_dict(func.value):
                fields = ", ".join(sorted(written))
                self._report(node, f".{func.attr}({fields}=...)")
        elif self.context.qualname(func) == "builtins.setattr" and len(node.args) >= 2:
            attribute = str_constant(node.args[1])
            if attribute in REGISTRY_FIELDS and not self._is_plain_object_attribute(node.args[0]):
                self._report(node, f"setattr(..., '{attribute}')")
        elif written and last_name(func) in REGISTRY_MODELS:
            fields = ", ".join(sorted(written))
            self._report(node, f"{ast.unparse(func)}({fields}=...)")

    def _is_plain_object_attribute(self, receiver: ast.expr) -> bool:
        """`self.reason = ...` in an exception, dataclass or form sets no registry row."""
        classes = self.context.class_stack
        if not (isinstance(receiver, ast.Name) and receiver.id == "self" and classes):
            return False
        cls = classes[-1]
        return cls.name not in REGISTRY_MODELS and not any(_looks_like_model(b) for b in cls.bases)

    def _report(self, node: ast.AST, what: str) -> None:
        self.context.report(
            node,
            "PORTAL003",
            f"{what} outside {SERVICES_PACKAGE} (state, counters and reason change only "
            "through a service function)",
        )


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
                if (key := str_constant(key_node)) in REGISTRY_FIELDS
            }
    return written
