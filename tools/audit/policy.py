"""Which rules apply to which file of the project, and which module names are plugins."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Directories holding plugin code (it runs in the sandbox, so the rules do not apply to it).
PLUGIN_DIRS = ("examples/plugins",)
SANDBOX_DIR = "sandbox/"
# The plugin-side loader: it imports plugins and reads their run and setup too, but only ever
# in a sandbox process. The rest of plugin_contract/ is audited like portal code.
PLUGIN_SIDE_MODULES = ("plugin_contract/loader.py", "plugin_contract/declarations.py")
# Benchmark scripts seed thousands of rows in bulk to time reads; they never run in the portal
# and would take minutes going through the services row by row.
SEED_DATA_DIRS = ("benchmarks/",)
SERVICES_PACKAGE = "plugins_app/services/"
REASONS_MODULE = "plugins_app/reasons.py"
REASON_RULE_SCOPE = "plugins_app/"
PROJECT_PACKAGES = frozenset(
    {"plugins_app", "plugin_contract", "portal", "sandbox", "tools", "tests"}
)
# The operator interfaces: they reach the sandbox only through plugins_app's registry code.
INTERFACE_PREFIXES = ("plugins_app/admin", "plugins_app/api/", "plugins_app/management/")


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
            registry_writes=not relpath.startswith((SERVICES_PACKAGE, *SEED_DATA_DIRS)),
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
