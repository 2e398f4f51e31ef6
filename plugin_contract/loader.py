"""The plugin side of the portal: runs inside a sandbox process, never in a portal process.

It imports one plugin (a file, a package directory or an entry point), reads its
declarations (plugin_contract/declarations.py), checks what it `requires`
(plugin_contract/requirements.py), runs `setup()` and calls `run(**params)`. Standard
library only, no Django. A load returns a `LoadReport` (JSON data) and never raises for
anything a plugin does; the portal turns the report into a registry state and reason. A
call's own failures are exceptions that declare their kind to the sandbox
(`sandbox_fault`: params, load, unavailable), so the portal needs no class names.

A spec names one plugin, as a dict or as a tuple of (key, value) pairs (hashable, so it can
key a warm host): kind ("file" | "package" | "entry_point"), name (the discovered name),
path (the .py file, the package directory, or the sys.path entry of an entry point's
distribution), module and attr (what an entry point names).
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import json
import os
import re
import sys
import traceback
import types
from collections.abc import Mapping
from typing import Any

from plugin_contract import (
    REQUIRE_KEYS,
    Declarations,
    LoadReport,
    LoadStage,
    LoadStatus,
    MissingItem,
)
from plugin_contract.declarations import read_declarations
from plugin_contract.fingerprint import fingerprint
from plugin_contract.requirements import check_requirements, missing_item

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

    sandbox_fault = "load"  # sandbox.Fault.LOAD: the portal asks to fix and reload it

    def __init__(self, report: LoadReport) -> None:
        super().__init__(_describe(report))
        self.report = report


class PluginUnavailable(PluginLoadError):
    """The process of a call lacks what the plugin requires: the load report travels as the
    sandbox's detail, so the portal gives the reason a load gives and counts no failure."""

    sandbox_fault = "unavailable"  # sandbox.Fault.UNAVAILABLE

    def __init__(self, report: LoadReport) -> None:
        super().__init__(report)
        self.sandbox_detail = json.loads(json.dumps(report, default=repr))  # JSON data only


class PluginParamsError(TypeError):
    """The params of a call do not fit the plugin's run() signature."""

    sandbox_fault = "params"  # sandbox.Fault.PARAMS: the caller's mistake, not the plugin's


class _Plugin:
    """An imported plugin and what it declared."""

    def __init__(self, module: Any, declared: Declarations) -> None:
        self.module = module
        self.declared = declared
        self.run = module.run


# --- Entry points called by the sandbox ---------------------------------------------------


def load_plugin(spec: Any) -> LoadReport:
    """Import, read declarations, check requirements and run setup(): the load report."""
    spec = _spec_dict(spec)
    plugin, report = _load(spec)
    if plugin is not None:
        _loaded[_key(spec)] = plugin
    return report


def warm_plugin(spec: Any, version: str | None = None) -> dict[str, Any] | None:
    """Preload target: import the plugin and run setup() once, so calls fork warm; returns
    the environment's fingerprint (plugin_contract/fingerprint.py), which the portal records
    with every run of this host.

    `version` is not used here: it tells the portal's warm hosts for edited code apart.
    """
    spec = _spec_dict(spec)
    try:
        plugin = _plugin_for_call(spec)
    except PluginUnavailable:
        # Left cold then: each call refuses with the reason, where a failed warm-up would not.
        return None
    # An entry point's path is its distribution's whole site directory: hash its module only.
    source = spec["path"] if spec["kind"] != "entry_point" else None
    source = source or getattr(plugin.module, "__file__", None) or ""
    return fingerprint(plugin.module, dict(plugin.declared), source)


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
) -> tuple[_Plugin | None, LoadReport]:
    module, failure = _import(spec)
    if failure:
        return None, failure
    declared, problem = read_declarations(module, spec["name"])
    if problem:
        report = _report("failed", "declarations", name=spec["name"])
        report["error_type"] = "InvalidDeclaration"
        report["field"], report["message"] = problem
        return None, report
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
                _unavailable(report, missing_item("library", library))
            return None, report
    report = _report("ok", "setup", declared=declared)
    report["has_setup"] = setup is not None
    return _Plugin(module, declared), report


def _import(spec: dict[str, Any]) -> tuple[Any, LoadReport | None]:
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


def _import_entry_point(spec: dict[str, Any]) -> tuple[Any, LoadReport | None]:
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


def _import_failure(exc: BaseException, spec: dict[str, Any], *, own: str) -> LoadReport:
    report = _failure("import", exc, spec)
    library = _missing_library(exc)
    if library:
        # The environment lacks a system library: installing it fixes this, not the code.
        return _unavailable(report, missing_item("library", library))
    missing_name = getattr(exc, "name", None) if isinstance(exc, ModuleNotFoundError) else None
    if missing_name and not _is_internal(missing_name):
        if missing_name == own or own.startswith(missing_name + "."):
            # The plugin's own module is gone: the entry point names a module not installed.
            return _unavailable(report, missing_item("entry_point", own))
        if not missing_name.startswith(own + "."):
            # A library the plugin imports is not installed (its own submodules are bugs).
            return _unavailable(report, missing_item("module", missing_name))
    return report


def _unavailable(report: LoadReport, missing: MissingItem) -> LoadReport:
    report["status"] = "unavailable"
    report["missing"] = [missing]
    return report


def _missing_library(exc: BaseException) -> str | None:
    if not isinstance(exc, ImportError | OSError):
        return None
    match = _MISSING_LIBRARY.search(str(exc))
    return match.group(1) if match else None


def _is_internal(module: str) -> bool:
    """A relative import that escaped the plugin (say, `from . import x` in a single file)."""
    return module == PACKAGE or module.startswith(PACKAGE + ".")


def _missing_source(spec: dict[str, Any], path: str) -> LoadReport:
    return _report(
        "unavailable", "import", name=spec["name"], missing=[missing_item("source", path)]
    )


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


def _report(
    status: LoadStatus,
    stage: LoadStage,
    *,
    declared: Declarations | None = None,
    name: str | None = None,
    missing: list[MissingItem] | None = None,
) -> LoadReport:
    report: LoadReport = {
        "status": status,
        "stage": stage,
        "name": name,
        "version": "",
        "description": "",
        "requires": {},
        "limits": {},
        "has_setup": False,
        "missing": missing or [],
        "error_type": None,
        "message": None,
        "where": None,
        "traceback": None,
        "field": None,
    }
    if declared is not None:
        report.update(declared)
    return report


def _failure(
    stage: LoadStage,
    exc: BaseException,
    spec: dict[str, Any],
    *,
    declared: Declarations | None = None,
) -> LoadReport:
    name = None if declared is not None else spec["name"]
    report = _report("failed", stage, declared=declared, name=name)
    report["error_type"] = type(exc).__name__
    report["message"] = _message(exc)
    report["where"] = _where(exc, spec)
    report["traceback"] = "".join(traceback.format_exception(type(exc), exc, _plugin_tb(exc)))
    return report


def _plugin_tb(exc: BaseException) -> types.TracebackType | None:
    """The exception's traceback from the first frame outside this loader: an operator reads
    the plugin's frames, not the portal's that called into it."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None and tb.tb_frame.f_code.co_filename == __file__:
        tb = tb.tb_next
    return tb


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


def _describe(report: LoadReport) -> str:
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
