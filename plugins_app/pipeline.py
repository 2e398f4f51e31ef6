"""The plugin pipeline: discover, load and run plugins through the sandbox, record outcomes.

Plugin code runs only in sandbox processes (plugin_contract/loader.py); this module turns what
comes back into registry states, reasons and run records through plugins_app.services.

    load_plugins(names=None, actor=...)        discover and (re)load; one LoadReport per plugin
    reload_plugin(name=..., actor=...)         re-check one plugin (UNAVAILABLE recovers here)
    run_plugin(name=..., params=..., actor=...) run synchronously, return the finished run
    submit_run(name=..., params=..., actor=...) queue for the background executor
    wait_for_run(run_id=..., timeout_s=...)    the run, finished or still going after timeout_s
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import re
import threading
import time
import traceback
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import DatabaseError, transaction
from django.db.models import CharField

from plugins_app import plugin_env, reasons, services, untrusted
from plugins_app.discovery import (
    ENTRY_POINT_GROUP,
    ENTRY_POINT_PREFIX,
    Discovery,
    PluginSpec,
    discover,
    is_plugin_name,
    spec_for_source,
)
from plugins_app.errors import IllegalTransition, InvalidParams, PluginNotFound, RunNotFound
from plugins_app.executor import get_executor, heartbeat, reconcile_interrupted, worker_id
from plugins_app.models import Plugin, PluginRun, RunOutcomeKind, RunStatus
from sandbox import Limits, Outcome, Preload, SandboxResult, discard_preload, run_plugin_sandboxed
from sandbox.limits import MAXIMA

__all__ = [
    "LoadReport",
    "discard_warm_hosts",
    "execute_run",
    "load_plugins",
    "outcome_from_result",
    "reconcile_interrupted",
    "reload_plugin",
    "run_plugin",
    "submit_run",
    "wait_for_run",
]

logger = logging.getLogger(__name__)

LOAD_TARGET = "plugin_contract.loader:load_plugin"
CALL_TARGET = "plugin_contract.loader:call_plugin"
WARM_TARGET = "plugin_contract.loader:warm_plugin"
LOADER_TARGET = "plugin_contract.loader:warm_loader"
CALL_UNAVAILABLE = "PluginUnavailable"  # plugin_contract.loader's refusal of a call
LOAD_CONCURRENCY = 4
RESULT_STORE_CHARS = 64 * 1024  # results above this are stored as a truncated JSON text
OUTPUT_TAIL_CHARS = 4000  # of stdout and of stderr, kept on the run row
MESSAGE_CHARS = 500  # of an exception message, quoted in a reason
MAX_TIMEOUT_S = MAXIMA["timeout_s"]  # 7 days: longer is a typo, and overflows the sandbox's timers
TRACEBACK_CHARS = 64 * 1024  # of a plugin's traceback, kept from its end (where it raised)
DESCRIPTION_CHARS = 10_000  # of a plugin's description (its docstring, by default)
# Where a load's process is lost, a neighbour in the shared host may be the cause: retry alone.
LOST_LOAD_OUTCOMES = frozenset({Outcome.SANDBOX_FAILURE, Outcome.CRASHED})
# The warm-up of a load's own sandbox host does nothing: only its Preload key, unique, matters.
ALONE_WARMUP = "builtins:hash"
# What a database or its driver may still refuse in a row the boundary made storable.
REFUSED_WRITES = (DatabaseError, UnicodeError, OverflowError)
BAD_LIMITS = (TypeError, ValueError, OverflowError)  # Limits.from_mapping on a declaration


def _max_chars(model: type[Plugin] | type[PluginRun], name: str) -> int:
    field = model._meta.get_field(name)
    assert isinstance(field, CharField), f"{model.__name__}.{name} is not a CharField"
    assert field.max_length is not None
    return field.max_length


ERROR_TYPE_CHARS = _max_chars(PluginRun, "error_type")
SIGNAL_CHARS = _max_chars(PluginRun, "signal")
VERSION_CHARS = _max_chars(Plugin, "version")
REPORT_CHARS = {
    "version": VERSION_CHARS,
    "description": DESCRIPTION_CHARS,
    "error_type": ERROR_TYPE_CHARS,
    "where": MESSAGE_CHARS,
}
EXIT_CODE_RANGE = (-(2**31), 2**31 - 1)  # PluginRun.exit_code, an IntegerField
PEAK_RSS_RANGE = (0, 2**63 - 1)  # PluginRun.peak_rss_kb, a PositiveBigIntegerField
DURATION_MS_RANGE = (0.0, 1e12)  # about 30 years: beyond it a duration is not a measurement


@dataclass(frozen=True)
class LoadReport:
    """How one plugin's load ended: its state and reason in the registry, and its source."""

    name: str
    state: str
    reason: str
    source: str


@dataclass(frozen=True)
class _Load:
    spec: PluginSpec
    name: str  # the declared name, or the discovered one when the module did not import
    status: str  # "ok", "unavailable" or "failed"
    reason: str = ""
    metadata: services.PluginMetadata | None = None
    lost: bool = False  # its sandbox process was lost, in a host other loads shared


# --- Loading -------------------------------------------------------------------------------


def load_plugins(*, names: Sequence[str] | None = None, actor: str) -> list[LoadReport]:
    """Discover and (re)load plugins: all of them, or the named ones (PluginNotFound if a name
    is neither registered nor discovered). Plugins registered but no longer found are marked
    UNAVAILABLE with a reason; two sources giving one name make it UNAVAILABLE, naming both."""
    reconcile_interrupted()  # runs orphaned by a dead process must not block the reload
    found = discover()
    wanted = None if names is None else list(dict.fromkeys(names))
    specs = found.specs if wanted is None else _candidates(wanted, found)
    loads = _load_all(specs)
    groups: dict[str, list[_Load]] = {}
    for load in loads:
        groups.setdefault(load.name, []).append(load)
    reports = [_record(name, group, actor) for name, group in groups.items()]
    registered = Plugin.objects.values_list("name", flat=True)
    expected = set(wanted) if wanted is not None else set(registered)
    for name in sorted(expected - groups.keys()):
        report = _record_vanished(name, found, actor)
        if report is not None:
            reports.append(report)
    return sorted(reports, key=lambda report: report.name)


def reload_plugin(*, name: str, actor: str) -> Plugin:
    """Re-check one plugin (import, requirements, setup) and return its registry row.

    Raises PluginNotFound, or IllegalTransition while runs of the plugin are in progress.
    """
    reconcile_interrupted()  # after a restart, orphaned runs would otherwise say "wait"
    running = Plugin.objects.filter(name=name).values_list("running_count", flat=True).first()
    if running:
        raise IllegalTransition(reasons.reload_while_running(name, running))
    load_plugins(names=[name], actor=actor)
    try:
        return Plugin.objects.get(name=name)
    except Plugin.DoesNotExist:
        raise PluginNotFound(name) from None


def _candidates(wanted: list[str], found: Discovery) -> list[PluginSpec]:
    sources: set[str] = set()
    registered: set[str] = set()
    for name, source in Plugin.objects.filter(name__in=wanted).values_list("name", "source"):
        registered.add(name)
        sources.update(source.split("; "))  # a name conflict records every source
    for name in wanted:
        if name not in registered and not any(spec.name == name for spec in found.specs):
            raise PluginNotFound(name)
    return [spec for spec in found.specs if spec.name in wanted or spec.source in sources]


def _load_all(specs: list[PluginSpec]) -> list[_Load]:
    if len(specs) <= 1:
        loads = [_load_guarded(spec) for spec in specs]
    else:
        # Loads wait on sandbox processes, not on this one; a few at a time bound a slow import.
        with ThreadPoolExecutor(
            max_workers=LOAD_CONCURRENCY, thread_name_prefix="portal-load"
        ) as pool:
            loads = list(pool.map(_load_guarded, specs))
    # Loads share one sandbox host, which any plugin's import can kill (or its neighbours'
    # processes with it): a load whose process was lost is retried once, one at a time, in a
    # host of its own, so a healthy plugin loads and only the culprit fails again.
    return [_load_alone(load.spec) if load.lost else load for load in loads]


def _load_alone(spec: PluginSpec) -> _Load:
    preload = Preload(ALONE_WARMUP, ((spec.source, time.monotonic_ns()),))
    try:
        return _load_guarded(spec, preload=preload)
    finally:
        discard_preload(preload)


def _load_guarded(spec: PluginSpec, *, preload: Preload | None = None) -> _Load:
    try:
        return _load_one(spec, preload=preload)
    except Exception as exc:
        # One plugin's load must not stop the others': record it and go on.
        logger.exception("Loading plugin %s failed in the portal", spec.name)
        return _Load(
            spec, spec.name, "failed", reasons.load_internal_error(spec.name, type(exc).__name__)
        )


def _load_limits() -> Limits:
    # Import and setup() are bounded by time: a warm host runs them with no rlimits either,
    # and heavy libraries (torch, CUDA) reserve far more address space than they use.
    return Limits(timeout_s=settings.PORTAL_PLUGIN_LOAD_TIMEOUT_S, cpu_s=None, memory_mb=None)


def _load_one(spec: PluginSpec, *, preload: Preload | None = None) -> _Load:
    limits = _load_limits()
    result = run_plugin_sandboxed(LOAD_TARGET, spec.host_spec(), limits=limits, preload=preload)
    alone = preload is not None
    env = plugin_env.env_to_load_with(result)
    if env:  # the plugin declared variables the shared host withholds: load it with them
        loader = Preload(LOADER_TARGET, env=env)
        result = run_plugin_sandboxed(LOAD_TARGET, spec.host_spec(), limits=limits, preload=loader)
        discard_preload(loader)
    if not result.ok:
        logger.warning(
            "Loading plugin %s from %s: %s\nstderr tail:\n%s",
            spec.name,
            spec.source,
            result.error,
            result.stderr[-OUTPUT_TAIL_CHARS:],
        )
        reason = _load_failure_reason(spec.name, result, limits, alone=alone)
        lost = result.outcome in LOST_LOAD_OUTCOMES and not alone
        return _Load(spec, spec.name, "failed", reason, lost=lost)
    try:
        report = untrusted.load_report(result.value, is_name=is_plugin_name, max_chars=REPORT_CHARS)
    except untrusted.MalformedReport as exc:
        reason = reasons.load_report_malformed(spec.name, _shorten(str(exc)), spec.source)
        logger.warning("%s", reason)
        return _Load(spec, spec.name, "failed", reason)
    name = report.name or spec.name
    if report.changes:
        logger.warning(
            "Plugin %s: its load report was changed to be stored: %s",
            name,
            "; ".join(report.changes),
        )
    metadata = None
    if report.stage not in ("import", "declarations"):
        metadata = services.PluginMetadata(
            source=spec.source,
            description=report.description,
            version=report.version,
            requirements=report.requires,
            limits=report.limits,
        )
    if report.status == "ok":
        try:
            _declared_limits(report.limits)
        except BAD_LIMITS as exc:
            reason = reasons.invalid_declaration(name, _shorten(f"limits: {exc}"), spec.source)
            return _Load(spec, name, "failed", reason, metadata)
        return _Load(spec, name, "ok", "", metadata)
    return _Load(spec, name, report.status, _report_reason(name, spec, report), metadata)


def _declared_limits(declared: dict[str, Any]) -> Limits:
    """The sandbox limits a plugin declares; ValueError for unknown or out-of-range ones
    (timeout_s above MAX_TIMEOUT_S, say: Limits.from_mapping checks sandbox.limits.MAXIMA)."""
    return Limits.from_mapping(declared)


def _report_reason(name: str, spec: PluginSpec, report: untrusted.LoaderReport) -> str:
    """The reason for a load the plugin host reported as unavailable or failed."""
    if report.status == "unavailable":
        return _unavailable_reason(name, spec, report.missing)
    message = _shorten(report.message)
    error_type = report.error_type or "Exception"
    where = report.where or None
    if report.stage == "declarations":
        return reasons.invalid_declaration(name, message, spec.source)
    if report.stage == "setup":
        return reasons.setup_failed(name, error_type, message, where)
    return reasons.import_failed(name, error_type, message, where)


def _unavailable_reason(
    name: str, spec: PluginSpec, missing: tuple[untrusted.MissingItem, ...]
) -> str:
    first, *others = missing
    reason = _missing_reason(name, spec, first)
    if others:
        reason += "; also missing: " + ", ".join(_missing_words(item) for item in others)
    return reason


def _missing_reason(name: str, spec: PluginSpec, missing: untrusted.MissingItem) -> str:
    kind, item = missing.kind, missing.item
    if kind == "module":
        return reasons.missing_module(item, name)
    if kind == "library":
        return reasons.missing_library(item, name)
    if kind == "entry_point":
        return reasons.missing_entry_point_module(item, name, spec.source)
    if kind == "source":
        return reasons.source_missing(name, item)
    if kind == "env":
        return reasons.env_missing(item, name, withheld=plugin_env.withheld(item))
    if kind == "gpu":
        return reasons.gpu_missing(name, missing.checked)
    path = missing.path or item
    if missing.problem == "unset_variable":
        return reasons.model_file_unset_variable(item, name)
    if missing.problem == "empty":
        return reasons.model_file_empty(path, name)
    if missing.problem == "unreadable":
        return reasons.model_file_unreadable(path, name)
    return reasons.model_file_missing(path, name)


def _missing_words(missing: untrusted.MissingItem) -> str:
    words = {
        "module": "module",
        "library": "system library",
        "env": "environment variable",
        "file": "file",
        "gpu": "a",
    }
    return f"{words.get(missing.kind, missing.kind)} {missing.path or missing.item}"


def _load_failure_reason(
    name: str, result: SandboxResult, limits: Limits, *, alone: bool = False
) -> str:
    """The reason for a load whose sandbox process itself failed (crash, hang, exit).

    `alone`: the load ran in a sandbox host of its own, shared with no other load.
    """
    if result.outcome == Outcome.TIMEOUT:
        return reasons.load_timed_out(name, limits.timeout_s)
    if result.outcome == Outcome.CRASHED:
        return reasons.load_crashed(name, f"crashed the process with {result.signal or 'a signal'}")
    if result.outcome == Outcome.MEMORY:
        return reasons.load_crashed(name, "ran out of memory")
    if result.outcome == Outcome.EXITED:
        return reasons.load_crashed(name, f"ended the process with exit code {result.exit_code}")
    if result.outcome == Outcome.DISK_LIMIT:
        return reasons.load_crashed(
            name, f"wrote more than its {limits.disk_mb} MB disk budget (limits.disk_mb)"
        )
    detail = _shorten(result.error or str(result.outcome))
    if alone and result.outcome == Outcome.SANDBOX_FAILURE:
        return reasons.load_lost_host(name, detail)
    return reasons.load_sandbox_failure(name, detail)


def _record(name: str, group: list[_Load], actor: str) -> LoadReport:
    if len(group) > 1:
        sources = [load.spec.source for load in group]
        reason = reasons.name_conflict(name, sources)
        logger.warning("%s", reason)
        return _write(
            name,
            lambda: services.plugin_mark_unavailable(
                name=name, reason=reason, actor=actor, source="; ".join(sources)[:1000]
            ),
            source="; ".join(sources),
            actor=actor,
        )
    load = group[0]
    if load.status == "ok":
        return _write(
            name,
            lambda: _register_initialized(name, load, actor),
            source=load.spec.source,
            actor=actor,
        )
    mark = (
        services.plugin_mark_unavailable
        if load.status == "unavailable"
        else services.plugin_mark_failed
    )
    return _write(
        name,
        lambda: mark(
            name=name,
            reason=load.reason,
            actor=actor,
            source=load.spec.source,
            metadata=load.metadata,
        ),
        source=load.spec.source,
        actor=actor,
    )


@transaction.atomic
def _register_initialized(name: str, load: _Load, actor: str) -> Plugin:
    # One transaction: no run can slip in between LOADED and INITIALIZED.
    assert load.metadata is not None
    services.plugin_register(name=name, metadata=load.metadata, actor=actor)
    return services.plugin_mark_initialized(name=name, actor=actor)


def _write(name: str, write: Any, *, source: str, actor: str) -> LoadReport:
    try:
        plugin = write()
    except IllegalTransition as exc:  # runs in progress: the reload waits for them
        plugin = Plugin.objects.get(name=name)
        return LoadReport(name, plugin.state, str(exc), plugin.source)
    except ValidationError as exc:  # a declared value the registry refuses: this plugin only
        problems = "; ".join(
            f"{field}: {' '.join(messages)}" for field, messages in exc.message_dict.items()
        )
        reason = reasons.invalid_declaration(name, _shorten(problems), source)
        return _record_failed(name, reason, source=source, actor=actor)
    except REFUSED_WRITES as exc:  # the database refused it: this plugin only, the rest load
        logger.exception("Storing the load of plugin %s failed", name)
        reason = reasons.load_not_stored(name, _shorten(f"{type(exc).__name__}: {exc}"))
        return _record_failed(name, reason, source=source, actor=actor)
    _discard_warm_host(name)
    return LoadReport(name, plugin.state, plugin.reason, plugin.source)


def _record_failed(name: str, reason: str, *, source: str, actor: str) -> LoadReport:
    """Record FAILED without the refused metadata, for a write the registry refused."""
    logger.warning("%s", reason)
    try:
        plugin = services.plugin_mark_failed(
            name=name, reason=reason, actor=actor, source=source[:1000]
        )
    except (ValidationError, IllegalTransition, *REFUSED_WRITES):
        # Not even the name or source fits: report it, the other plugins still load.
        logger.exception("Plugin %s could not be recorded", name)
        return LoadReport(name, "FAILED", reason, source)
    _discard_warm_host(name)
    return LoadReport(name, plugin.state, plugin.reason, plugin.source)


def _record_vanished(name: str, found: Discovery, actor: str) -> LoadReport | None:
    plugin = Plugin.objects.filter(name=name).first()
    if plugin is None:
        return None
    source = plugin.source
    gone = source and "; " not in source and spec_for_source(source, discovery=found) is None
    if gone and not source.startswith("entry point: "):
        reason = reasons.source_missing(name, source)
    else:
        reason = reasons.plugin_vanished(name, source, found.searched)
    return _write(
        name,
        lambda: services.plugin_mark_unavailable(name=name, reason=reason, actor=actor),
        source=source,
        actor=actor,
    )


# --- Warm hosts ----------------------------------------------------------------------------

_warm_hosts: dict[str, Preload] = {}
_warm_hosts_lock = threading.Lock()


def _warm_host(name: str, spec: PluginSpec, env: tuple[str, ...]) -> Preload:
    """The Preload whose warm host serves this plugin's runs in this process.

    Its key holds the code's version on disk, so edited plugin code gets a fresh warm host
    even when the reload happened in another process (say, `manage.py loadplugins`).
    """
    preload = Preload(WARM_TARGET, (spec.host_spec(), _code_version(spec)), env=env)
    with _warm_hosts_lock:
        previous = _warm_hosts.get(name)
        _warm_hosts[name] = preload
    if previous is not None and previous != preload:
        discard_preload(previous)
    return preload


def _discard_if_replaced(name: str, used: Preload) -> None:
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
        _discard_warm_host(name)


def _discard_warm_host(name: str) -> None:
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


# --- Runs ----------------------------------------------------------------------------------


def run_plugin(*, name: str, params: dict, actor: str, timeout_s: float | None = None) -> PluginRun:
    """Run a plugin now and return the finished run (its status says how it went).

    Raises PluginNotFound, PluginRefused (disabled or UNAVAILABLE: nothing is counted) or
    InvalidParams (params not a JSON object, or a timeout that is not a positive number).
    """
    params = _checked_params(params)
    _checked_timeout(timeout_s)
    _unavailable_if_gone(name, actor)
    run = services.run_queue(name=name, params=params, actor=actor)
    return execute_run(run.pk, timeout_s=timeout_s)


def submit_run(*, name: str, params: dict, actor: str) -> PluginRun:
    """Queue a run for the background executor and return it at once (status queued)."""
    params = _checked_params(params)
    _unavailable_if_gone(name, actor)
    run = services.run_queue(name=name, params=params, actor=actor)
    get_executor().submit(execute_run, run.pk)
    run.refresh_from_db()
    return run


def wait_for_run(*, run_id: int, timeout_s: float) -> PluginRun:
    """The run once it finished, or as it stands after timeout_s seconds."""
    deadline = time.monotonic() + max(0.0, timeout_s)
    while True:
        try:
            run = PluginRun.objects.select_related("plugin").get(pk=run_id)
        except PluginRun.DoesNotExist:
            raise RunNotFound(run_id) from None
        remaining = deadline - time.monotonic()
        if run.is_finished or remaining <= 0:
            return run
        time.sleep(min(0.1, remaining))


def execute_run(run_id: int, *, timeout_s: float | None = None) -> PluginRun:
    """Start a queued run, call the plugin in the sandbox and record the outcome.

    A plugin whose source vanished becomes UNAVAILABLE first, so the run closes uncounted;
    a run already going when its source vanishes ends FAILED (see docs/state-machine.md).
    """
    queued = PluginRun.objects.select_related("plugin").filter(pk=run_id).first()
    if queued is not None and queued.status == RunStatus.QUEUED:
        _unavailable_if_gone(queued.plugin.name, queued.actor)
    try:
        run = services.run_start(run_id=run_id, worker=worker_id())
    except IllegalTransition:
        # Another process started it first (an adopted orphan): nothing to do here.
        return PluginRun.objects.select_related("plugin").get(pk=run_id)
    if run.status != RunStatus.RUNNING:
        return run  # disabled or made UNAVAILABLE while it waited: closed, uncounted
    plugin = Plugin.objects.get(pk=run.plugin_id)
    with heartbeat().tracking(run.pk):
        try:
            outcome = _call(plugin, run.params, timeout_s)
            if isinstance(outcome, _Unavailable):
                return _refuse_unavailable(run.pk, plugin.name, outcome.reason)
        except Exception as exc:
            # A portal bug must not leave the run RUNNING forever; record it and go on.
            logger.exception("Running plugin %s failed in the portal", plugin.name)
            outcome = services.RunOutcome(
                status=RunStatus.FAILED,
                outcome=Outcome.SANDBOX_FAILURE.value,
                error_type=type(exc).__name__,
                reason=reasons.run_internal_error(plugin.name, type(exc).__name__),
                traceback=traceback.format_exc(),
            )
        except BaseException as exc:
            # Ctrl-C or SystemExit: close the run so it is not left RUNNING, then stop as asked.
            _finish_interrupted(run.pk, plugin.name, exc)
            raise
        return _finish(run.pk, plugin.name, outcome)


def _finish(run_id: int, name: str, outcome: services.RunOutcome) -> PluginRun:
    """Record how the run ended; an outcome the database refuses is recorded as FAILED."""
    try:
        return services.run_finish(run_id=run_id, outcome=outcome)
    except REFUSED_WRITES as exc:
        logger.exception("Storing the outcome of run %s of plugin %s failed", run_id, name)
        problem = _shorten(f"{type(exc).__name__}: {exc}")
        stored = services.RunOutcome(
            status=RunStatus.FAILED,
            outcome=outcome.outcome,
            error_type="OutcomeNotStored",
            reason=reasons.run_outcome_not_stored(name, run_id, outcome.status.value, problem),
            duration_ms=outcome.duration_ms,
        )
        # A second refusal means the database itself is failing: the caller sees that error.
        return services.run_finish(run_id=run_id, outcome=stored)


def _finish_interrupted(run_id: int, name: str, exc: BaseException) -> None:
    outcome = services.RunOutcome(
        status=RunStatus.INTERRUPTED,
        outcome=RunOutcomeKind.INTERRUPTED,
        error_type=type(exc).__name__,
        reason=reasons.run_interrupted_here(name, run_id, type(exc).__name__),
    )
    try:
        services.run_finish(run_id=run_id, outcome=outcome)
    except Exception:
        # The sweep finishes it later (its heartbeat stops); the interruption still propagates.
        logger.exception("Recording the interruption of run %s failed", run_id)


@dataclass(frozen=True)
class _Unavailable:
    """The process that ran the call lacks what the plugin requires, in a load's words."""

    reason: str


def _refuse_unavailable(run_id: int, name: str, reason: str) -> PluginRun:
    run = services.run_refuse_unavailable(run_id=run_id, reason=reason)
    _discard_warm_host(name)
    return run


def _unavailable_if_gone(name: str, actor: str) -> None:
    """Mark the plugin UNAVAILABLE when its recorded source no longer exists (as a load would)."""
    source = Plugin.objects.filter(name=name).values_list("source", flat=True).first()
    if not source or "; " in source or spec_for_source(source) is not None:
        return  # unknown (run_queue says so), a name conflict (already UNAVAILABLE), or there
    if source.startswith(ENTRY_POINT_PREFIX):
        reason = reasons.plugin_vanished(name, source, f"the '{ENTRY_POINT_GROUP}' entry points")
    else:
        reason = reasons.source_missing(name, source)
    try:
        services.plugin_mark_unavailable(name=name, reason=reason, actor=actor)
    except IllegalTransition:
        return  # runs in progress: this one runs and fails, naming the missing source
    _discard_warm_host(name)


def _call(
    plugin: Plugin, params: dict[str, Any], timeout_s: float | None
) -> services.RunOutcome | _Unavailable:
    spec = spec_for_source(plugin.source)
    if spec is None:
        return services.RunOutcome(
            status=RunStatus.FAILED,
            outcome=RunOutcomeKind.MISSING,
            error_type="PluginSourceMissing",
            reason=reasons.source_missing(plugin.name, plugin.source),
        )
    try:
        limits = _declared_limits(plugin.limits or {})
    except (TypeError, ValueError) as exc:
        return services.RunOutcome(
            status=RunStatus.FAILED,
            outcome=RunOutcomeKind.INVALID_DECLARATION,
            error_type="InvalidDeclaration",
            reason=reasons.invalid_declaration(plugin.name, f"limits: {exc}", plugin.source),
        )
    if timeout_s is not None:
        limits = limits.replace(timeout_s=timeout_s)
    preload = _warm_host(plugin.name, spec, plugin_env.declared(plugin.requirements or {}))
    result = run_plugin_sandboxed(
        CALL_TARGET, spec.host_spec(), params, limits=limits, preload=preload
    )
    _discard_if_replaced(plugin.name, preload)
    missing = _missing_at_call(result)
    if missing:
        return _Unavailable(_unavailable_reason(plugin.name, spec, missing))
    return outcome_from_result(plugin.name, result, limits, plugin_root=spec.path)


def _missing_at_call(result: SandboxResult) -> tuple[untrusted.MissingItem, ...]:
    """What the call's process lacked of the plugin's requirements, from the load report that
    plugin_contract.loader.PluginUnavailable carries as JSON; () for any other outcome."""
    if result.outcome != Outcome.ERROR or result.error_type != CALL_UNAVAILABLE:
        return ()
    last_line = (result.traceback or "").rstrip().rpartition("\n")[2]
    try:
        value = json.loads(last_line.partition(": ")[2])
        report = untrusted.load_report(value, is_name=is_plugin_name, max_chars=REPORT_CHARS)
    except (ValueError, RecursionError):  # not that report: an ordinary failure of the run
        return ()
    return report.missing if report.status == "unavailable" else ()


def _checked_params(params: Any) -> dict[str, Any]:
    if not isinstance(params, dict):
        raise InvalidParams(reasons.invalid_params(f"got {type(params).__name__}, not an object"))
    bad_keys = [key for key in params if not isinstance(key, str) or not key.isidentifier()]
    if bad_keys:
        raise InvalidParams(
            reasons.invalid_params(
                f"parameter names must be Python identifiers, not {', '.join(map(repr, bad_keys))}"
            )
        )
    try:
        return json.loads(json.dumps(params, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise InvalidParams(reasons.invalid_params(f"not JSON-serialisable ({exc})")) from None


def _checked_timeout(timeout_s: Any) -> None:
    if timeout_s is None:
        return
    number = isinstance(timeout_s, int | float) and not isinstance(timeout_s, bool)
    if not number or not math.isfinite(timeout_s) or not 0 < timeout_s <= MAX_TIMEOUT_S:
        raise InvalidParams(
            f"Invalid timeout: {timeout_s!r} (give a positive number of seconds, such as 30, "
            f"at most {MAX_TIMEOUT_S} seconds (7 days))"
        )


# --- From a sandbox result to a run outcome -------------------------------------------------


def outcome_from_result(
    name: str, result: SandboxResult, limits: Limits, *, plugin_root: str = ""
) -> services.RunOutcome:
    """Map what the sandbox saw onto the registry's RunOutcome, forensic fields filled.

    timeout → TIMED_OUT; crashed and memory → CRASHED (the process had to be stopped); every
    other failure (exception, bad params, exit, unserialisable or oversized result) → FAILED.
    Every value from the plugin is made storable first (plugins_app.untrusted); what that
    changed is one of the run's warnings.
    """
    facts, changes = _run_facts(result)
    if result.ok:
        outcome, value_changes = _succeeded(name, result.value, facts)
        changes += value_changes
    else:
        # Reasons quote the numbers as stored; the texts are cleaned as the reason is built.
        numbers = {key: facts[key] for key in ("exit_code", "peak_rss_kb")}
        checked = dataclasses.replace(result, signal=facts["signal"] or None, **numbers)
        status, reason = _failed(name, checked, limits, plugin_root)
        outcome = services.RunOutcome(status=status, reason=untrusted.line(reason).value, **facts)
    warnings = [untrusted.line(warning, limit=MESSAGE_CHARS).value for warning in result.warnings]
    if changes:
        warnings.append(reasons.run_output_changed(name, changes))
    return dataclasses.replace(outcome, warnings=tuple(warnings))


def _run_facts(result: SandboxResult) -> tuple[dict[str, Any], list[str]]:
    """The run row's forensic fields from a sandbox result, storable, and what was changed."""
    cleaned: dict[str, untrusted.Cleaned[Any]] = {
        "error_type": untrusted.line(result.error_type, limit=ERROR_TYPE_CHARS),
        "traceback": untrusted.block(result.traceback, limit=TRACEBACK_CHARS, keep="end"),
        "exit_code": untrusted.integer(
            result.exit_code, low=EXIT_CODE_RANGE[0], high=EXIT_CODE_RANGE[1]
        ),
        "signal": untrusted.line(result.signal, limit=SIGNAL_CHARS),
        "peak_rss_kb": untrusted.integer(
            result.peak_rss_kb, low=PEAK_RSS_RANGE[0], high=PEAK_RSS_RANGE[1]
        ),
        "duration_ms": untrusted.number(
            result.duration_ms, low=DURATION_MS_RANGE[0], high=DURATION_MS_RANGE[1]
        ),
        "stdout_tail": untrusted.block(result.stdout[-OUTPUT_TAIL_CHARS:]),
        "stderr_tail": untrusted.block(result.stderr[-OUTPUT_TAIL_CHARS:]),
    }
    facts: dict[str, Any] = {"outcome": result.outcome.value}
    changes = []
    for field, (value, changed) in cleaned.items():
        facts[field] = value
        label = field.removesuffix("_tail")
        changes += [f"{label}: {change}" for change in changed]
    return facts, changes


def _succeeded(
    name: str, value: Any, facts: dict[str, Any]
) -> tuple[services.RunOutcome, list[str]]:
    changes: list[str] = []
    try:
        text = json.dumps(value, allow_nan=False)
        if untrusted.has_unstorable(text):
            value, changed = untrusted.data(value)
            changes = [f"result: {change}" for change in changed]
            text = json.dumps(value, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        facts.update(outcome=Outcome.UNSERIALISABLE.value, error_type=type(exc).__name__)
        reason = reasons.run_unserialisable(name, _shorten(str(exc)))
        return services.RunOutcome(status=RunStatus.FAILED, reason=reason, **facts), []
    if len(text) > RESULT_STORE_CHARS:
        truncated = services.RunOutcome(
            status=RunStatus.SUCCEEDED,
            result=text[:RESULT_STORE_CHARS],
            result_truncated=True,
            **facts,
        )
        return truncated, changes
    return services.RunOutcome(
        status=RunStatus.SUCCEEDED, result=json.loads(text), **facts
    ), changes


# How sandbox/portal/start_failure.py words a failed Preload warm-up (timeout, exit, crash
# or exception): "... could not run: the Preload warm-up 'target' <what happened> (<advice>)".
_WARMUP_FAILURE = re.compile(
    r"could not run: the Preload warm-up '[^']*' (?P<what>.*?)(?: \([^()]*\))?$"
)


def _failed(
    name: str, result: SandboxResult, limits: Limits, plugin_root: str
) -> tuple[RunStatus, str]:
    outcome = result.outcome
    warmup = _WARMUP_FAILURE.search(" ".join((result.error or "").split()))
    if warmup:
        # The warm host never got to run(): timeout_s or the run's params are not the cause.
        crashed = outcome in (Outcome.CRASHED, Outcome.MEMORY)
        status = RunStatus.CRASHED if crashed else RunStatus.FAILED
        return status, reasons.run_warmup_failed(name, _shorten(warmup["what"]))
    if outcome == Outcome.TIMEOUT:
        if result.error_type == "CPUTimeLimit":
            return RunStatus.TIMED_OUT, reasons.run_cpu_exceeded(name, limits.cpu_s)
        return RunStatus.TIMED_OUT, reasons.run_timed_out(name, limits.timeout_s)
    if outcome == Outcome.MEMORY:
        return RunStatus.CRASHED, reasons.run_out_of_memory(
            name, limits.memory_mb, result.peak_rss_kb
        )
    if outcome == Outcome.CRASHED:
        return RunStatus.CRASHED, reasons.run_crashed(name, result.signal, result.exit_code)
    if outcome == Outcome.EXITED:
        return RunStatus.FAILED, reasons.run_exited(name, result.exit_code)
    if outcome == Outcome.DISK_LIMIT:
        return RunStatus.FAILED, reasons.run_disk_exceeded(
            name, limits.disk_mb, result.disk_used_kb
        )
    if outcome == Outcome.OUTPUT_LIMIT:
        detail = f"more than limits.result_bytes ({limits.result_bytes} bytes) as JSON"
        return RunStatus.FAILED, reasons.run_result_too_large(name, detail)
    if outcome == Outcome.UNSERIALISABLE:
        return RunStatus.FAILED, reasons.run_unserialisable(name, _message(result))
    if outcome == Outcome.ERROR:
        return RunStatus.FAILED, _error_reason(name, result, plugin_root)
    return RunStatus.FAILED, reasons.run_sandbox_failure(
        name, _shorten(result.error or outcome.value)
    )


def _error_reason(name: str, result: SandboxResult, plugin_root: str) -> str:
    error_type = untrusted.line(result.error_type or "Exception", limit=ERROR_TYPE_CHARS).value
    if error_type == "PluginParamsError":
        return reasons.run_bad_params(name, _message(result))
    if error_type == "PluginLoadError":
        return reasons.run_load_failed(name, _message(result))
    where = _where(result.traceback or "", plugin_root)
    return reasons.run_raised(name, error_type, _message(result), where and _shorten(where))


def _message(result: SandboxResult) -> str:
    """The exception's message: the text after 'Type: ' on the traceback's last entry."""
    lines = (result.traceback or "").rstrip().splitlines()
    error_type = result.error_type or ""
    for index in range(len(lines) - 1, -1, -1):
        line = lines[index]
        head, separator, rest = line.partition(": ")
        if line[:1].strip() and head.rsplit(".", 1)[-1] == error_type:
            text = "\n".join([rest, *lines[index + 1 :]]) if separator else ""
            return _shorten(text) or "(no message)"
    return _shorten(result.error or "(no message)")


_FRAME = re.compile(r'^\s*File "(?P<file>[^"]+)", line (?P<line>\d+), in (?P<func>.+)$')


def _where(traceback_text: str, plugin_root: str) -> str | None:
    """The deepest traceback line inside the plugin's own files, as 'path:line in function'."""
    frames = [m for line in traceback_text.splitlines() if (m := _FRAME.match(line))]
    own = [m for m in frames if plugin_root and m["file"].startswith(plugin_root)]
    if not own:
        return None
    frame = own[-1]
    return f"{frame['file']}:{frame['line']} in {frame['func']}"


def _shorten(text: str) -> str:
    """A plugin's words for a reason: one terminal-safe line of at most MESSAGE_CHARS."""
    return untrusted.line(" ".join(text.split()), limit=MESSAGE_CHARS).value
