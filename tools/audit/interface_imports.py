"""PORTAL005: the admin, the API and the commands reach the sandbox only through plugins_app.

Any import of `sandbox` in them is flagged, at module level or inside a function.
"""

from __future__ import annotations

import ast

from tools.audit.context import Check

SANDBOX_PACKAGE = "sandbox"


class InterfaceImportCheck(Check):
    def check_import(self, node: ast.Import | ast.ImportFrom, module: str) -> None:
        if module.split(".")[0] == SANDBOX_PACKAGE:
            self.context.report(
                node,
                "PORTAL005",
                f"the admin, the API and the commands do not import '{module}': take what "
                "they need from plugins_app (models' choices, the pipeline, the services)",
            )
