"""The plugin side of the portal: runs inside a sandbox process, never in a portal process.

It imports one plugin (a file, a package directory or an entry point), reads its
declarations, checks what it `requires`, runs `setup()` and calls `run(**params)`.
Standard library only, no Django. The load functions return plain dicts and never raise for
anything a plugin does; the portal turns those dicts into registry states and reasons.

A spec names one plugin, as a dict or as a tuple of (key, value) pairs (hashable, so it can
key a warm host): kind ("file" | "package" | "entry_point"), name (the discovered name),
path (the .py file, the package directory, or the sys.path entry of an entry point's
distribution), module and attr (what an entry point names).
"""

from __future__ import annotations

import contextlib
import glob
import importlib
import importlib.util
import inspect
import json
import os
import re
import shutil
import subprocess
import sys
import traceback
import types
from collections.abc import Mapping
from typing import Any

from plugin_contract import MAX_NAME_CHARS, MAX_VERSION_CHARS, NAME_PATTERN, REQUIRE_KEYS

# Plugins import under this parent so that a plugin file never shadows a real module.
PACKAGE = "portal_plugins"
# What a call re-checks in its own process: cheap, and set by that process's environment (a
# variable the server had may be unset in the shell of a `runplugin`). Loads check them all.
CALL_CHECKS = ("env", "files")
# The dynamic loader's message when a shared library (libGL.so.1, libcudart.so.12) is absent.
_MISSING_LIBRARY = re.compile(r"([^\s:'\"]+\.so(?:\.[\w.]+)?): cannot open shared object file")

# Loaded plugins of this process, by spec: a warm host keeps them between calls.
_loaded: dict[tuple, _Plugin] = {}


class PluginLoadError(Exception):
    """A plugin could not be imported or set up for a call (carries the load report)."""

    def __init__(self, report: dict[str, Any]) -> None:
        super().__init__(_describe(report))
        self.report = report


class PluginUnavailable(PluginLoadError):
    """The process of a call lacks what the plugin requires: its message is the load report as
    JSON, so the portal gives the reason a load gives and counts no failure."""

    def __init__(self, report: dict[str, Any]) -> None:
        Exception.__init__(self, json.dumps({**report, "description": ""}, default=repr))
        self.report = report


class PluginParamsError(TypeError):
    """The params of a call do not fit the plugin's run() signature."""


class _Plugin:
    """An imported plugin and what it declared."""

    def __init__(self, module: Any, declared: dict[str, Any]) -> None:
        self.module = module
        self.declared = declared
        self.run = module.run


# --- Entry points called by the sandbox ---------------------------------------------------


def load_plugin(spec: Any) -> dict[str, Any]:
    """Import, read declarations, check requirements and run setup(): the load report."""
    spec = _spec_dict(spec)
    plugin, report = _load(spec)
    if plugin is not None:
        _loaded[_key(spec)] = plugin
    return report


def warm_plugin(spec: Any, version: str | None = None) -> None:
    """Preload target: import the plugin and run setup() once, so calls fork warm.

    `version` is not used here: it tells the portal's warm hosts for edited code apart.
    """
    spec = _spec_dict(spec)
    # Left cold then: each call refuses with the reason, where a failed warm-up would not say it.
    with contextlib.suppress(PluginUnavailable):
        _plugin_for_call(spec)


def warm_loader() -> None:
    """Preload target of the host that loads a plugin with the variables it declares: the
    warm-up is importing this module, done by the time this runs."""


def call_plugin(spec: Any, params: Mapping[str, Any]) -> Any:
    """Call the plugin's run(**params); its exceptions are the plugin's and propagate."""
    spec = _spec_dict(spec)
    plugin = _plugin_for_call(spec)
    if not isinstance(params, Mapping):
        raise PluginParamsError(
            f"Params of plugin '{plugin.declared['name']}' must be a mapping of names to values, "
            f"not {type(params).__name__}"
        )
    _check_params(plugin, dict(params))
    return plugin.run(**params)


# --- Loading ------------------------------------------------------------------------------


def _plugin_for_call(spec: dict[str, Any]) -> _Plugin:
    plugin = _loaded.get(_key(spec))
    if plugin is None:
        plugin, report = _load(spec, checks=CALL_CHECKS)
        if plugin is None:
            failed = PluginUnavailable if report["status"] == "unavailable" else PluginLoadError
            raise failed(report)
        _loaded[_key(spec)] = plugin
        return plugin
    requires = plugin.declared["requires"]
    missing = check_requirements(requires, base_dir=_base_dir(spec), kinds=CALL_CHECKS)
    if missing:
        raise PluginUnavailable(
            _report("unavailable", "requires", declared=plugin.declared, missing=missing)
        )
    return plugin


def _load(
    spec: dict[str, Any], *, checks: tuple[str, ...] = REQUIRE_KEYS
) -> tuple[_Plugin | None, dict]:
    module, failure = _import(spec)
    if failure:
        return None, failure
    declared, failure = _declarations(spec, module)
    if failure:
        return None, failure
    missing = check_requirements(declared["requires"], base_dir=_base_dir(spec), kinds=checks)
    if missing:
        return None, _report("unavailable", "requires", declared=declared, missing=missing)
    setup = getattr(module, "setup", None)
    if setup is not None:
        try:
            setup()
        except BaseException as exc:  # whatever setup() raises is its failure
            report = _failure("setup", exc, spec, declared=declared)
            library = _missing_library(exc)  # say, setup() importing cv2 lazily
            if library:
                report.update(status="unavailable", missing=[_item("library", library)])
            return None, report
    report = _report("ok", "setup", declared=declared)
    report["has_setup"] = setup is not None
    return _Plugin(module, declared), report


def _import(spec: dict[str, Any]) -> tuple[Any, dict[str, Any] | None]:
    kind = spec["kind"]
    if kind == "entry_point":
        return _import_entry_point(spec)
    path = spec["path"]
    if kind == "package":
        init = os.path.join(path, "__init__.py")
        if not os.path.isfile(init):
            return None, _missing_source(spec, init)
        locations = [path]
    else:
        init, locations = path, None
        if not os.path.isfile(path):
            return None, _missing_source(spec, path)
    module_name = f"{PACKAGE}.{spec['name']}"
    _ensure_parent_package()
    try:
        module_spec = importlib.util.spec_from_file_location(
            module_name, init, submodule_search_locations=locations
        )
        if module_spec is None or module_spec.loader is None:
            raise ImportError(f"cannot import {init}: not a Python module")
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[module_name] = module
        module_spec.loader.exec_module(module)
    except BaseException as exc:  # an import may raise anything
        sys.modules.pop(module_name, None)
        return None, _import_failure(exc, spec, own=module_name)
    return module, None


def _import_entry_point(spec: dict[str, Any]) -> tuple[Any, dict[str, Any] | None]:
    path = spec.get("path")
    if path and path not in sys.path:
        sys.path.append(path)  # the distribution's site directory, for hosts started elsewhere
    module_name = spec["module"]
    try:
        obj: Any = importlib.import_module(module_name)
        for part in filter(None, (spec.get("attr") or "").split(".")):
            obj = getattr(obj, part)
    except BaseException as exc:  # an import may raise anything
        return None, _import_failure(exc, spec, own=module_name)
    return obj, None


def _ensure_parent_package() -> None:
    if PACKAGE not in sys.modules:
        parent = types.ModuleType(PACKAGE, "Plugins imported by the portal's plugin host.")
        parent.__path__ = []
        sys.modules[PACKAGE] = parent


def _import_failure(exc: BaseException, spec: dict[str, Any], *, own: str) -> dict[str, Any]:
    library = _missing_library(exc)
    if library:
        # The environment lacks a system library: installing it fixes this, not the code.
        report = _failure("import", exc, spec)
        report.update(status="unavailable", missing=[_item("library", library)])
        return report
    missing_name = getattr(exc, "name", None) if isinstance(exc, ModuleNotFoundError) else None
    if missing_name and not _is_internal(missing_name):
        if missing_name == own or own.startswith(missing_name + "."):
            # The plugin's own module is gone: the entry point names a module not installed.
            report = _failure("import", exc, spec)
            report.update(status="unavailable", missing=[_item("entry_point", own)])
            return report
        if not missing_name.startswith(own + "."):
            # A library the plugin imports is not installed (its own submodules are bugs).
            report = _failure("import", exc, spec)
            report.update(status="unavailable", missing=[_item("module", missing_name)])
            return report
    return _failure("import", exc, spec)


def _missing_library(exc: BaseException) -> str | None:
    if not isinstance(exc, ImportError | OSError):
        return None
    match = _MISSING_LIBRARY.search(str(exc))
    return match.group(1) if match else None


def _is_internal(module: str) -> bool:
    """A relative import that escaped the plugin (say, `from . import x` in a single file)."""
    return module == PACKAGE or module.startswith(PACKAGE + ".")


def _missing_source(spec: dict[str, Any], path: str) -> dict[str, Any]:
    report = _report("unavailable", "import", name=spec["name"])
    report["missing"] = [_item("source", path)]
    return report


def _declarations(spec: dict[str, Any], module: Any) -> tuple[dict, dict | None]:
    """What the module declares, with defaults; or a failure naming the bad declaration."""
    default_name = spec["name"]
    doc = getattr(module, "__doc__", None)
    declared = {
        "name": getattr(module, "name", default_name),
        "version": getattr(module, "version", ""),
        "description": getattr(module, "description", None),
        "requires": getattr(module, "requires", None) or {},
        "limits": getattr(module, "limits", None) or {},
    }
    problem = _declaration_problem(declared, module)
    if problem:
        report = _report("failed", "declarations", name=default_name)
        field, message = problem
        report.update(error_type="InvalidDeclaration", field=field, message=message)
        return declared, report
    if isinstance(declared["version"], int | float):
        declared["version"] = str(declared["version"])
    if declared["description"] is None:
        declared["description"] = inspect.cleandoc(doc) if isinstance(doc, str) else ""
    declared["requires"] = _normalised_requires(declared["requires"])
    declared["limits"] = dict(declared["limits"])
    return declared, None


def _declaration_problem(declared: dict[str, Any], module: Any) -> tuple[str, str] | None:
    name = declared["name"]
    if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME_CHARS:
        return "name", (
            f"name must be a non-empty string of at most {MAX_NAME_CHARS} characters, "
            f"not {name!r:.{MAX_NAME_CHARS}}"
        )
    if not NAME_PATTERN.fullmatch(name):
        return "name", (
            "name must start with a letter or digit and hold only letters, digits, _ and - "
            f"(it is part of the plugin's URLs), not {name!r}"
        )
    version = declared["version"]
    if not isinstance(version, str | int | float):
        return "version", f"version must be a string, not {type(version).__name__}"
    if len(str(version)) > MAX_VERSION_CHARS:
        return "version", (
            f"version must be a string of at most {MAX_VERSION_CHARS} characters, "
            f"not one of {len(str(version))} characters"
        )
    description = declared["description"]
    if description is not None and not isinstance(description, str):
        return "description", f"description must be a string, not {type(description).__name__}"
    run = getattr(module, "run", None)
    if not callable(run):
        return "run", "it defines no run(**params) function"
    setup = getattr(module, "setup", None)
    if setup is not None and not callable(setup):
        return "setup", f"setup must be a function, not {type(setup).__name__}"
    return _requires_problem(declared["requires"]) or _limits_problem(declared["limits"])


def _requires_problem(requires: Any) -> tuple[str, str] | None:
    if not isinstance(requires, Mapping):
        return "requires", (
            "requires must be a dict with any of modules, gpu, files, env, "
            f"not {type(requires).__name__}"
        )
    unknown = sorted(str(key) for key in requires if key not in REQUIRE_KEYS)
    if unknown:
        return "requires", (
            f"requires has unknown key(s) {', '.join(unknown)} (known: {', '.join(REQUIRE_KEYS)})"
        )
    if "gpu" in requires and not isinstance(requires["gpu"], bool):
        return "requires", f"requires['gpu'] must be True or False, not {requires['gpu']!r}"
    for key in ("modules", "files", "env"):
        value = requires.get(key, [])
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list | tuple) or not all(isinstance(i, str) for i in items):
            return "requires", f"requires['{key}'] must be a list of strings, not {value!r}"
    return None


def _limits_problem(limits: Any) -> tuple[str, str] | None:
    if not isinstance(limits, Mapping) or not all(isinstance(k, str) for k in limits):
        return "limits", f"limits must be a dict of limit names to numbers, not {limits!r}"
    return None


def _normalised_requires(requires: Mapping[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key in ("modules", "files", "env"):
        if key in requires:
            value = requires[key]
            result[key] = [value] if isinstance(value, str) else list(value)
    if "gpu" in requires:
        result["gpu"] = requires["gpu"]
    return result


# --- Requirements -------------------------------------------------------------------------


def check_requirements(
    requires: Mapping[str, Any], *, base_dir: str | None, kinds: tuple[str, ...] = REQUIRE_KEYS
) -> list[dict]:
    """Every missing item of a `requires` declaration, in the order modules, env, files, gpu
    (only those of `kinds`)."""
    wanted = {key: requires.get(key, []) if key in kinds else [] for key in REQUIRE_KEYS}
    missing = [_item("module", m) for m in wanted["modules"] if not _importable(m)]
    missing += [_item("env", var) for var in wanted["env"] if not os.environ.get(var)]
    for declared_path in wanted["files"]:
        problem = _file_problem(declared_path, base_dir)
        if problem:
            missing.append(problem)
    if wanted["gpu"]:
        found, checked = gpu_check()
        if not found:
            missing.append(_item("gpu", "CUDA GPU", checked=checked))
    return missing


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package is missing or broken
        return False


def _file_problem(declared: str, base_dir: str | None) -> dict[str, Any] | None:
    path = os.path.expanduser(os.path.expandvars(declared))
    if "$" in path:
        return _item("file", declared, problem="unset_variable", path=path)
    if not os.path.isabs(path) and base_dir:
        path = os.path.join(base_dir, path)  # relative paths sit next to the plugin
    path = os.path.normpath(path)
    if not os.path.exists(path):
        return _item("file", declared, problem="not_found", path=path)
    if os.path.isdir(path):
        return None if os.listdir(path) else _item("file", declared, problem="empty", path=path)
    if not os.access(path, os.R_OK):
        return _item("file", declared, problem="unreadable", path=path)
    if os.path.getsize(path) == 0:
        return _item("file", declared, problem="empty", path=path)
    return None


def gpu_check() -> tuple[bool, str]:
    """Whether a CUDA GPU is usable, and what was checked, in words for the reason.

    When torch is installed its answer decides (a CPU-only torch cannot use the GPU anyway);
    otherwise a GPU listed by nvidia-smi, or an NVIDIA device node, counts.
    """
    checked: list[str] = []
    torch_says: bool | None = None
    if _importable("torch"):
        try:
            import torch  # the plugin host may import heavy libraries; the portal never does

            torch_says = bool(torch.cuda.is_available())
            checked.append(f"torch.cuda.is_available() is {torch_says}")
        except Exception as exc:  # a broken torch is a finding, not a crash
            checked.append(f"importing torch failed ({type(exc).__name__}: {exc})")
    smi_says = _nvidia_smi(checked)
    devices = sorted(glob.glob("/dev/nvidia[0-9]*"))
    if smi_says is None:
        checked.append(f"{devices[0]} exists" if devices else "no /dev/nvidia* device exists")
    found = torch_says if torch_says is not None else bool(smi_says or devices)
    return found, " and ".join(checked)


def _nvidia_smi(checked: list[str]) -> bool | None:
    smi = shutil.which("nvidia-smi")
    if smi is None:
        checked.append("nvidia-smi is absent")
        return None
    try:
        listing = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError) as exc:
        checked.append(f"nvidia-smi -L failed ({type(exc).__name__})")
        return False
    gpus = [line for line in listing.stdout.splitlines() if line.startswith("GPU ")]
    if listing.returncode != 0 or not gpus:
        checked.append(f"nvidia-smi -L lists no GPU (exit code {listing.returncode})")
        return False
    checked.append(f"nvidia-smi -L lists {len(gpus)} GPU(s)")
    return True


# --- Calls --------------------------------------------------------------------------------


def _check_params(plugin: _Plugin, params: dict[str, Any]) -> None:
    try:
        signature = inspect.signature(plugin.run)
    except (TypeError, ValueError):  # some callables have no signature; let run() decide
        return
    try:
        signature.bind(**params)
    except TypeError as exc:
        given = ", ".join(sorted(params)) or "none"
        raise PluginParamsError(
            f"run() of plugin '{plugin.declared['name']}' cannot take the given params "
            f"({given}): {exc}; it accepts run{signature}"
        ) from None


# --- Reports ------------------------------------------------------------------------------


def _report(status: str, stage: str, *, declared: dict | None = None, **fields: Any) -> dict:
    report: dict[str, Any] = {
        "status": status,
        "stage": stage,
        "name": None,
        "version": "",
        "description": "",
        "requires": {},
        "limits": {},
        "has_setup": False,
        "missing": [],
        "error_type": None,
        "message": None,
        "where": None,
        "traceback": None,
        "field": None,
    }
    report.update(declared or {})
    report.update(fields)
    return report


def _failure(
    stage: str, exc: BaseException, spec: dict[str, Any], *, declared: dict | None = None
) -> dict[str, Any]:
    report = _report("failed", stage, declared=declared)
    if declared is None:
        report["name"] = spec["name"]
    report.update(
        error_type=type(exc).__name__,
        message=_message(exc),
        where=_where(exc, spec),
        traceback="".join(traceback.format_exception(exc)),
    )
    return report


def _message(exc: BaseException) -> str:
    if isinstance(exc, SyntaxError) and exc.msg:
        return exc.msg
    return str(exc) or repr(exc)


def _where(exc: BaseException, spec: dict[str, Any]) -> str | None:
    """The line that raised: the deepest frame in the plugin's own files, else the deepest."""
    if isinstance(exc, SyntaxError) and exc.filename:
        return f"{exc.filename}:{exc.lineno}" if exc.lineno else exc.filename
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return None
    root = spec.get("path") or ""
    own = [f for f in frames if root and os.path.abspath(f.filename).startswith(root)]
    frame = (own or frames)[-1]
    return f"{frame.filename}:{frame.lineno} in {frame.name}"


def _describe(report: dict[str, Any]) -> str:
    """A load report in one line, for a call whose plugin could not be loaded."""
    if report.get("missing"):
        return "; ".join(
            f"missing {m['kind']} {m.get('path') or m['item']}" for m in report["missing"]
        )
    stage = {"setup": "setup() raised", "declarations": "invalid declaration:"}.get(
        report.get("stage") or "", "import raised"
    )
    where = f" at {report['where']}" if report.get("where") else ""
    error = ": ".join(filter(None, [report.get("error_type"), report.get("message")]))
    return f"{stage} {error}{where}"


def _item(kind: str, item: str, **details: Any) -> dict[str, Any]:
    return {"kind": kind, "item": item, **details}


def _spec_dict(spec: Any) -> dict[str, Any]:
    return dict(spec) if not isinstance(spec, dict) else spec


def _key(spec: dict[str, Any]) -> tuple:
    return tuple(sorted(spec.items()))


def _base_dir(spec: dict[str, Any]) -> str | None:
    if spec["kind"] == "file":
        return os.path.dirname(spec["path"])
    if spec["kind"] == "package":
        return spec["path"]
    return None
