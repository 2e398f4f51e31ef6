"""Run-time backing for house rule 1: no plugin code ever executes in a portal process.

`PluginCodeGuard` installs a `sys.addaudithook` hook that records the file of every code object
the process executes (the interpreter raises an "exec" audit event for each module body an
import runs, and for exec/runpy), so it sees plugin code however it got in: under another
module name, through spec_from_file_location without sys.modules, or by exec(). Forked sandbox
children inherit the hook; it ignores every process but the one that installed it. At the end,
`violations()` also sweeps sys.modules and every live module object for files under the plugin
roots and for modules named like an example plugin.

The test suite installs one for the whole session (tests/conftest.py).
"""

from __future__ import annotations

import gc
import os
import sys
import types
from collections.abc import Iterable
from pathlib import Path

from tools.audit.policy import PLUGIN_DIRS, ROOT, plugin_module_names

PLUGIN_DIRS_ENV = "PORTAL_PLUGIN_DIRS"


def _real(path: str | os.PathLike[str]) -> str:
    return os.path.realpath(os.fspath(path))


class PluginCodeGuard:
    def __init__(self, roots: Iterable[str | os.PathLike[str]] = (), names: Iterable[str] = ()):
        self._roots: set[str] = set()
        self._names = frozenset(names)
        self._executed: set[str] = set()
        self._pid = os.getpid()
        self.add_roots(roots)

    @classmethod
    def for_repository(cls, root: Path = ROOT) -> PluginCodeGuard:
        """Guard against the repository's plugin directories and PORTAL_PLUGIN_DIRS."""
        guard = cls([root / relative for relative in PLUGIN_DIRS], plugin_module_names(root))
        guard.add_roots_from_env()
        return guard

    def add_roots(self, roots: Iterable[str | os.PathLike[str]]) -> None:
        self._roots.update(_real(root) for root in roots if os.fspath(root))

    def add_roots_from_env(self, value: str | None = None) -> None:
        """Add the directories a PORTAL_PLUGIN_DIRS value lists (default: the environment's)."""
        value = os.environ.get(PLUGIN_DIRS_ENV, "") if value is None else value
        self.add_roots(item for item in value.split(os.pathsep) if item)

    def install(self) -> PluginCodeGuard:
        """Start recording; call once (an audit hook stays for the life of the process)."""
        sys.addaudithook(self._on_audit_event)
        return self

    def _on_audit_event(self, event: str, args: tuple[object, ...]) -> None:
        # The interpreter runs audit hooks untraced, so coverage cannot see these lines; the
        # tests in tests/governance/test_plugin_guard.py show their effect.
        if event == "exec" and os.getpid() == self._pid:  # pragma: no cover
            filename = getattr(args[0], "co_filename", None)
            if isinstance(filename, str):
                self._executed.add(filename)

    def _under_a_root(self, filename: str) -> bool:
        if not filename or filename.startswith("<"):
            return False
        real = _real(filename)
        return any(real == root or real.startswith(root + os.sep) for root in self._roots)

    def violations(self) -> list[str]:
        """One line per piece of plugin code found in this process; empty when there is none."""
        found = {
            f"executed plugin code from {filename}"
            for filename in self._executed
            if self._under_a_root(filename)
        }
        modules = {id(module): module for module in sys.modules.values() if module is not None}
        # type(), not isinstance(): isinstance on a dead weakref.proxy raises ReferenceError.
        modules.update(
            (id(obj), obj) for obj in gc.get_objects() if issubclass(type(obj), types.ModuleType)
        )
        for module in modules.values():
            # The module's own dict: a lazy module's __getattr__ must not run (or raise) here.
            namespace = vars(module)
            name = namespace.get("__name__", "?")
            files = [namespace.get("__file__") or ""]
            files += list(namespace.get("__path__") or [])
            for filename in files:
                if self._under_a_root(filename):
                    found.add(f"module {name!r} from {filename} is loaded")
            if str(name).split(".")[0] in self._names:
                found.add(f"module {name!r} is named like an example plugin")
        return sorted(found)
