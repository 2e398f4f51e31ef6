"""House-rule audit: the rules of docs/contributing.md, checked on the source, not from memory.

Usage: python -m tools.audit [--root DIR] [PATH ...]   (no PATH: the whole tree under --root)
Prints one `file:line: RULE message` line per violation; exits 0 when clean, 1 on violations,
2 on misuse. `python -m tools.audit --list-rules` prints the rules.

One job per module:
- findings: the rules' ids, a violation, and the `# audit: allow RULE <why>` suppressions
- policy: which rules apply to which file, and which module names are plugins
- walk: the Python files under the paths given
- scopes: what each name of a file is bound to; context: one file as the rules see it
- source: one file's audit, the walk over its syntax tree that drives the rules below
- dynamic_code (PORTAL001, PORTAL002), registry_writes (PORTAL003), hard_coded_reasons
  (PORTAL004), interface_imports (PORTAL005): the rules checked file by file
- cycles (PORTAL006): the project's import graph and its cycles
- cli: the audit of a tree and the command line
"""

from tools.audit.cli import audit_paths, main
from tools.audit.cycles import ALLOWED_IMPORT_CYCLES, import_cycles, import_graph
from tools.audit.findings import RULES, Violation
from tools.audit.policy import PLUGIN_DIRS, ROOT, plugin_module_names
from tools.audit.source import audit_source

__all__ = [
    "ALLOWED_IMPORT_CYCLES",
    "PLUGIN_DIRS",
    "ROOT",
    "RULES",
    "Violation",
    "audit_paths",
    "audit_source",
    "import_cycles",
    "import_graph",
    "main",
    "plugin_module_names",
]
