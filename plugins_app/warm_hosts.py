"""The warm host of each plugin in this process: one sandbox Preload per plugin and code
version, replaced when the code changes and stopped when the plugin is reloaded.
"""

from __future__ import annotations

import os
import threading

from plugins_app.discovery import (
    PluginSpec,
)
from sandbox import Preload, Resident, discard_preload

WARM_TARGET = "plugin_contract.loader:warm_plugin"


_warm_hosts: dict[str, Preload] = {}


_warm_hosts_lock = threading.Lock()


def warm_host_for(
    name: str,
    spec: PluginSpec,
    env: tuple[str, ...],
    python: str | None = None,
    resident: dict | None = None,
) -> Preload:
    """The Preload whose warm host serves this plugin's runs in this process, run with the
    plugin's own interpreter when it declares one (``python``), in resident processes when
    it declares mode = "resident" (``resident``: its knobs, plugin_contract.ResidentPolicy).

    Its key holds the code's version on disk, so edited plugin code gets a fresh warm host
    even when the reload happened in another process (say, `manage.py loadplugins`).
    """
    policy = Resident(**resident) if resident is not None else None
    args = (spec.host_spec(), _code_version(spec))
    preload = Preload(WARM_TARGET, args, env=env, python=python, resident=policy)
    with _warm_hosts_lock:
        previous = _warm_hosts.get(name)
        _warm_hosts[name] = preload
    if previous is not None and previous != preload:
        discard_preload(previous)
    return preload


def discard_if_replaced(name: str, used: Preload) -> None:
    """Stop the warm host a run used if another run or a reload replaced it meanwhile.

    The sandbox re-creates a discarded host on use; without this, nobody would stop it.
    """
    with _warm_hosts_lock:
        current = _warm_hosts.get(name)
    if current != used:
        discard_preload(used)


def discard_warm_hosts() -> None:
    """Stop every warm host this process started for plugin runs (tests, shutdown)."""
    with _warm_hosts_lock:
        names = list(_warm_hosts)
    for name in names:
        discard_warm_host(name)


def discard_warm_host(name: str) -> None:
    with _warm_hosts_lock:
        previous = _warm_hosts.pop(name, None)
    if previous is not None:
        discard_preload(previous)


def _code_version(spec: PluginSpec) -> str:
    if spec.kind == "entry_point":
        return spec.distribution
    try:
        if spec.kind == "file":
            stat = os.stat(spec.path)
            return f"{stat.st_mtime_ns}:{stat.st_size}"
        versions = [
            os.stat(os.path.join(root, file)).st_mtime_ns
            for root, _, files in os.walk(spec.path)
            for file in files
            if file.endswith(".py")
        ]
        return f"{max(versions, default=0)}:{len(versions)}"
    except OSError:
        return "missing"
