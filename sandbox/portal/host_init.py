"""What a host is started with: its environment and its init message.

Runs in the portal. A host runs the portal's interpreter with the portal's sys.path, or a
Preload's own interpreter (a plugin's venv) with that interpreter's sys.path; either way the
sandbox's own code is put on it through PYTHONPATH.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from sandbox.config import SandboxConfig, private_cache_dir, scrub_environment
from sandbox.portal.leftovers import OWNER_VARIABLE
from sandbox.portal.spawn import SANDBOX_ROOT
from sandbox.targets import Preload
from sandbox.zygote.cgroup import CGROUP_VARIABLE

__all__ = ["HOST_ONLY_CHANGES", "host_environment", "host_tmp_dir", "init_message"]

# Variables the portal may change only to start a host; the host gives plugins the originals.
HOST_ONLY_CHANGES = ("PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX")


def host_environment(
    preload: Preload | None, config: SandboxConfig, mark: str
) -> tuple[dict[str, str], dict[str, str | None]]:
    """The host's environment, and what plugins get of HOST_ONLY_CHANGES (``plugin_env``)."""
    declared = preload.env if preload is not None else ()
    env = scrub_environment(os.environ, config, declared)
    plugin_env = {name: env.get(name) for name in HOST_ONLY_CHANGES}
    # The host runs `-m sandbox.zygote.host`: make this very package importable first.
    paths = [SANDBOX_ROOT] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    if config.bytecode_cache and sys.dont_write_bytecode:
        cache = private_cache_dir("host-bytecode")
        if cache is not None:
            # Else the host compiles its own modules at every start and keeps ~2.5 MiB
            # of compiler leftovers that every fork copies. The host puts both
            # variables back for plugins (see "plugin_env").
            env.pop("PYTHONDONTWRITEBYTECODE", None)
            env["PYTHONPYCACHEPREFIX"] = cache
    env[OWNER_VARIABLE] = mark
    return env, plugin_env


def init_message(
    preload: Preload | None, config: SandboxConfig, plugin_env: dict[str, str | None]
) -> dict[str, Any]:
    """The first message a host reads: how to set itself up."""
    # '' and relative entries mean "the portal's cwd", which is not the child's cwd.
    portal_path = [os.path.abspath(p) for p in sys.path]
    if SANDBOX_ROOT not in portal_path:
        portal_path.append(SANDBOX_ROOT)
    # Another interpreter keeps its own sys.path (its venv), never the portal's:
    # PYTHONPATH already puts the sandbox's code on it.
    own = preload is not None and preload.python is not None
    return {
        "type": "init",
        "portal_pid": os.getpid(),
        "sys_path": None if own else portal_path,
        "no_network": config.no_network,
        "run_as": config.run_as,
        "tmp_dir": host_tmp_dir(config),
        "spare_children": config.spare_children,
        "bytecode_cache": config.bytecode_cache,
        "dont_write_bytecode": sys.dont_write_bytecode,
        "plugin_env": plugin_env,
        "cgroup": os.environ.get(CGROUP_VARIABLE) or None,  # else the host's own cgroup v2
    }


def host_tmp_dir(config: SandboxConfig) -> str:
    """Where a host makes its directories: decided here, so cleanup looks in the same place."""
    return config.tmp_dir or os.environ.get("TMPDIR") or "/tmp"
