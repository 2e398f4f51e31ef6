"""Which Python interpreter a plugin's sandbox processes run with.

A plugin declares ``python = "/path/to/bin/python"`` or ``python = "NAME"`` (a name from
``PORTAL_PLUGIN_ENVIRONMENTS``); without a declaration it runs with the portal's own. The
declaration is read from the source without running it (plugin_contract/environments.py),
and the interpreter is probed (exists, runs, CPython 3.11+) before any load or run uses it.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings

from plugin_contract.environments import declared_python
from plugins_app import reasons_environment
from plugins_app.discovery import PluginSpec
from sandbox.portal.interpreters import probe_interpreter

__all__ = ["PluginPython", "python_for"]


@dataclass(frozen=True)
class PluginPython:
    """The interpreter of a plugin: ``path`` (None: the portal's own), or the ``reason`` it
    cannot run (the plugin is UNAVAILABLE until the environment changes)."""

    path: str | None = None
    reason: str = ""


def python_for(name: str, spec: PluginSpec) -> PluginPython:
    """The interpreter plugin ``name`` (at ``spec``) declares, resolved and probed."""
    declared = declared_python(spec.kind, spec.path)
    if declared.problem:
        return PluginPython(
            reason=reasons_environment.python_declaration_invalid(
                plugin=name, problem=declared.problem
            )
        )
    if declared.value is None:
        return PluginPython()
    path = declared.value
    if not declared.is_path:
        environments: dict[str, str] = settings.PORTAL_PLUGIN_ENVIRONMENTS
        if path not in environments:
            known = ", ".join(sorted(environments))
            return PluginPython(
                reason=reasons_environment.python_environment_unknown(
                    plugin=name, environment=path, known=known
                )
            )
        path = environments[path]
    if not path.startswith("/"):
        return PluginPython(
            reason=reasons_environment.python_declaration_invalid(
                plugin=name, problem=f"python must be an absolute path, not {path!r}"
            )
        )
    probe = probe_interpreter(path)
    if not probe.ok:
        return PluginPython(
            reason=reasons_environment.python_interpreter_unusable(
                plugin=name,
                path=path,
                problem=probe.problem or "",
                version=probe.version,
                detail=probe.detail,
            )
        )
    return PluginPython(path=path)
