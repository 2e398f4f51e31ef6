"""PORTAL004: a reason comes from plugins_app/reasons.py, never a literal written in place.

Flags a `reason=` keyword in plugins_app/ (outside plugins_app/reasons.py) whose value is or
contains a non-empty string literal or f-string; `reason=""` (no reason), HTTP responses'
reason phrases and plain dicts being built are fine.
"""

from __future__ import annotations

import ast

from tools.audit.context import DICT_FACTORIES, Check
from tools.audit.policy import REASONS_MODULE

TRANSLATIONS = frozenset({"_", "gettext", "gettext_lazy", "pgettext", "ngettext"})


class HardCodedReasonCheck(Check):
    def check_call(self, node: ast.Call) -> None:
        context = self.context
        callee = context.qualname(node.func) or ast.unparse(node.func)
        if callee.endswith("Response"):  # an HTTP reason phrase, not a registry reason
            return
        if callee in DICT_FACTORIES or (
            isinstance(node.func, ast.Attribute) and context.is_dict(node.func.value)
        ):
            return  # building a plain dict passes nothing to a service
        for keyword in node.keywords:
            if keyword.arg == "reason" and _hard_coded_text(keyword.value):
                context.report(
                    keyword.value,
                    "PORTAL004",
                    "reason= is a hard-coded string; build it with a function in "
                    f"{REASONS_MODULE} so every reason says what failed, why and what next",
                )


def _hard_coded_text(expr: ast.expr) -> bool:
    if isinstance(expr, ast.Constant):
        return isinstance(expr.value, str) and bool(expr.value.strip())
    if isinstance(expr, ast.JoinedStr):
        return bool(expr.values)
    if isinstance(expr, ast.BinOp):
        return _hard_coded_text(expr.left) or _hard_coded_text(expr.right)
    if isinstance(expr, ast.IfExp):
        return _hard_coded_text(expr.body) or _hard_coded_text(expr.orelse)
    if isinstance(expr, ast.BoolOp):
        return any(_hard_coded_text(value) for value in expr.values)
    if isinstance(expr, ast.Call):
        func = expr.func
        if isinstance(func, ast.Attribute) and func.attr == "format":
            return _hard_coded_text(func.value)
        if isinstance(func, ast.Name) and func.id in TRANSLATIONS:
            return any(_hard_coded_text(arg) for arg in expr.args)
    return False
