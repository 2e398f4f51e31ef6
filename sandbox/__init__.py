"""Crash barrier for plugin calls: each call runs in a fresh, resource-limited process.

    from sandbox import run_plugin_sandboxed, Limits, Preload
    result = run_plugin_sandboxed("pkg.mod:run", 1, 2, limits=Limits(timeout_s=5), key="v")

See docs/sandbox.md. This package imports nothing from Django.
"""

from sandbox._client import (
    configure_sandbox,
    discard_preload,
    run_plugin_sandboxed,
    sandbox_config,
    sandbox_status,
    shutdown_sandbox,
)
from sandbox.config import SandboxConfig
from sandbox.limits import Limits
from sandbox.result import Outcome, SandboxResult
from sandbox.targets import Preload

__all__ = [
    "Limits",
    "Outcome",
    "Preload",
    "SandboxConfig",
    "SandboxResult",
    "configure_sandbox",
    "discard_preload",
    "run_plugin_sandboxed",
    "sandbox_config",
    "sandbox_status",
    "shutdown_sandbox",
]
