"""The fingerprint of the environment a plugin runs in: interpreter, platform, its code, the
versions of what it imports, its declared files, a GPU if it uses one.

Computed once per warm host, after the plugin's import and setup() (plugin_contract.loader
.warm_plugin returns it, and the sandbox hands it to the portal with every run). Standard
library only; reads nothing the plugin did not already load, except file metadata.
"""

from __future__ import annotations

import hashlib
import os
import sys
import types
from typing import Any

__all__ = ["fingerprint"]

MAX_PACKAGES = 50  # versions recorded per plugin: requires.modules first, then its imports
MAX_FILES = 20


def fingerprint(module: Any, declared: dict[str, Any], source: str) -> dict[str, Any]:
    """What the runs of this plugin ran with, as JSON data."""
    requires = declared.get("requires") or {}
    data: dict[str, Any] = {
        "python": sys.executable,
        "python_version": "{}.{}.{}".format(*sys.version_info[:3]),
        "platform": _platform(),
        "code_sha256": _code_hash(source),
        "packages": _versions(_imported_names(module, requires.get("modules") or [])),
        "files": _files(requires.get("files") or [], source),
    }
    gpu = _gpu()
    if gpu:
        data["gpu"] = gpu
    return data


def _imported_names(module: Any, required: list[str]) -> list[str]:
    names = [name.split(".")[0] for name in required]
    for value in vars(module).values():
        if isinstance(value, types.ModuleType):
            names.append(value.__name__.split(".")[0])
    return [n for n in dict.fromkeys(names) if n not in sys.stdlib_module_names][:MAX_PACKAGES]


def _platform() -> str:
    # Not platform.platform(): it reads the interpreter's binary (~50 ms at every warm-up).
    uname = os.uname()
    return f"{uname.sysname}-{uname.release}-{uname.machine}"


def _versions(names: list[str]) -> dict[str, str]:
    if not names:
        return {}
    from importlib import metadata  # ~80 ms: only for plugins that import packages

    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except (metadata.PackageNotFoundError, ValueError):
            found = getattr(sys.modules.get(name), "__version__", None)
            if isinstance(found, str):
                versions[name] = str(found)
    return versions


def _code_hash(source: str) -> str:
    digest = hashlib.sha256()
    paths = [source] if os.path.isfile(source) else []
    if os.path.isdir(source):
        for root, dirs, files in os.walk(source):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__")
            paths += [os.path.join(root, f) for f in sorted(files) if f.endswith(".py")]
    for path in paths:
        try:
            with open(path, "rb") as handle:
                digest.update(os.path.relpath(path, source).encode() + b"\0" + handle.read())
        except OSError:
            continue
    return digest.hexdigest()


def _files(declared: list[str], source: str) -> dict[str, dict[str, Any]]:
    base = source if os.path.isdir(source) else os.path.dirname(source)
    files = {}
    for item in declared[:MAX_FILES]:
        path = os.path.join(base, os.path.expandvars(os.path.expanduser(item)))
        try:
            stat = os.stat(path)
        except OSError:
            continue
        files[item] = {"size": stat.st_size, "mtime": int(stat.st_mtime)}
    return files


def _gpu() -> str | None:
    torch = sys.modules.get("torch")  # only when the plugin imported it: never import it here
    try:
        if torch is not None and torch.cuda.is_initialized():
            return f"{torch.cuda.get_device_name(0)} (CUDA {torch.version.cuda})"
    except Exception:  # a broken CUDA set-up must not fail the warm-up
        return None
    return None
