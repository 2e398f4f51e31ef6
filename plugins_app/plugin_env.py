"""Which of the portal's environment variables a plugin's sandbox processes get.

The sandbox passes what every process needs and what the operator allows; a plugin adds the
variables it declares (``requires.env`` and those its ``requires.files`` paths use), except
names that look like secrets unless the operator allows them, and never what
``SANDBOX_ENV_DENY`` lists (see sandbox/config.py).
"""

from __future__ import annotations

import os
import re
from typing import Literal

from sandbox import SandboxResult, sandbox_config
from sandbox.config import EnvVerdict, env_verdict

__all__ = ["MAX_DECLARED", "declared", "env_to_load_with", "withheld"]

MAX_DECLARED = 64  # names per plugin: they key its warm host, and a report may be hostile
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
_PATH_VARIABLE = re.compile(r"\$(?:\{(\w+)\}|(\w+))")  # $NAME or ${NAME}, as expandvars reads them


def declared(requires: object) -> tuple[str, ...]:
    """The variables a plugin needs: its requires.env and those its requires.files paths use.

    ``requires`` may come from an untrusted load report: anything but lists of strings is
    ignored, as are names no shell could set.
    """
    if not isinstance(requires, dict):
        return ()
    names = _strings(requires.get("env"))
    for path in _strings(requires.get("files")):
        names += [braced or bare for braced, bare in _PATH_VARIABLE.findall(path)]
    valid = [name for name in names if _NAME.fullmatch(name)]
    return tuple(dict.fromkeys(valid))[:MAX_DECLARED]


def env_to_load_with(result: SandboxResult) -> tuple[str, ...]:
    """After a load without declared variables: the plugin's declared ones, when it lacked a
    variable the sandbox passes once declared; () when loading again would change nothing."""
    report = result.value if result.ok else None
    if not isinstance(report, dict) or report.get("status") != "unavailable":
        return ()
    missing = report.get("missing")
    if not isinstance(missing, list) or not any(
        isinstance(item, dict)
        and (item.get("kind") == "env" or item.get("problem") == "unset_variable")
        for item in missing
    ):
        return ()
    names = declared(report.get("requires"))
    config = sandbox_config()
    for name in names:
        value = os.environ.get(name)
        if value and env_verdict(name, value, config, names) is EnvVerdict.PASSED:
            return names
    return ()


def withheld(var: str) -> Literal["secret", "denied"] | None:
    """Why the sandbox keeps a declared variable that the portal has from plugins, if it does."""
    value = os.environ.get(var) if isinstance(var, str) and "\0" not in var else None
    if not value:
        return None
    verdict = env_verdict(var, value, sandbox_config(), (var,))
    if verdict is EnvVerdict.SECRET:
        return "secret"
    return "denied" if verdict is EnvVerdict.DENIED else None


def _strings(value: object) -> list[str]:
    return [item for item in value if isinstance(item, str)] if isinstance(value, list) else []
