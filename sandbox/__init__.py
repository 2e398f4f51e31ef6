"""Crash barrier for plugin calls: each call runs in a fresh, resource-limited process.

    from sandbox import run_plugin_sandboxed, Limits, Preload
    result = run_plugin_sandboxed("pkg.mod:run", 1, 2, limits=Limits(timeout_s=5), key="v")

See docs/sandbox.md. This package imports nothing from Django.

The public value types live here (``limits``, ``config``, ``result``, ``targets``), with
``messages``, what the host and its call processes send the portal, declared once; the code
that runs in the portal is in ``sandbox/portal/``, the code that runs in the sandbox host and
its call processes in ``sandbox/zygote/`` (import-light: see its ``__init__``).

The public names are imported on first use (PEP 562): the sandbox host process starts as
``python -m sandbox.zygote.host``, which runs this file, and must not load the portal-side
machinery (threads, subprocess, logging): every megabyte in the host slows each fork.
"""

import importlib

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing grows every fork

if TYPE_CHECKING:  # the type checker sees the real names; the host never imports them
    from sandbox.cancel import CancelToken
    from sandbox.config import SandboxConfig
    from sandbox.limits import Limits
    from sandbox.portal.client import (
        configure_sandbox,
        discard_preload,
        run_plugin_sandboxed,
        sandbox_config,
        sandbox_status,
        shutdown_sandbox,
    )
    from sandbox.result import Fault, Frame, Outcome, Phase, SandboxResult
    from sandbox.targets import Preload, Resident

_EXPORTS = {
    "CancelToken": "sandbox.cancel",
    "Fault": "sandbox.result",
    "Frame": "sandbox.result",
    "Limits": "sandbox.limits",
    "Outcome": "sandbox.result",
    "Phase": "sandbox.result",
    "Preload": "sandbox.targets",
    "Resident": "sandbox.targets",
    "SandboxConfig": "sandbox.config",
    "SandboxResult": "sandbox.result",
    "configure_sandbox": "sandbox.portal.client",
    "discard_preload": "sandbox.portal.client",
    "run_plugin_sandboxed": "sandbox.portal.client",
    "sandbox_config": "sandbox.portal.client",
    "sandbox_status": "sandbox.portal.client",
    "shutdown_sandbox": "sandbox.portal.client",
}

__all__ = [
    "CancelToken",
    "Fault",
    "Frame",
    "Limits",
    "Outcome",
    "Phase",
    "Preload",
    "Resident",
    "SandboxConfig",
    "SandboxResult",
    "configure_sandbox",
    "discard_preload",
    "run_plugin_sandboxed",
    "sandbox_config",
    "sandbox_status",
    "shutdown_sandbox",
]
assert sorted(__all__) == sorted(_EXPORTS)  # one list of public names, kept in step


def __getattr__(name: str) -> object:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'sandbox' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
