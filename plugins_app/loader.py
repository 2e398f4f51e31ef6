"""Discovery to registry: load plugins in the sandbox and record their states and reasons.

load_plugins(names=None, actor=...)   discover and (re)load; one LoadReport per plugin
reload_plugin(name=..., actor=...)    re-check one plugin (UNAVAILABLE recovers here)
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import DatabaseError, transaction

from plugins_app import params_check, plugin_env, plugin_python, reasons, services, untrusted
from plugins_app.discovery import (
    Discovery,
    PluginSpec,
    discover,
    is_plugin_name,
)
from plugins_app.errors import IllegalTransition, PluginNotFound, TooManyVanished
from plugins_app.executor import reconcile_interrupted
from plugins_app.models import Plugin, PluginState, SourceKind
from plugins_app.run_outcomes import (
    ERROR_TYPE_CHARS,
    MESSAGE_CHARS,
    OUTPUT_TAIL_CHARS,
    TRACEBACK_CHARS,
    max_chars,
    shorten,
)
from plugins_app.schedules.writes import declared_schedule_problem, sync_declared
from plugins_app.sources import PluginSource
from plugins_app.warm_hosts import discard_warm_host
from sandbox import Limits, Outcome, Preload, SandboxResult, discard_preload, run_plugin_sandboxed

logger = logging.getLogger(__name__)


LOAD_TARGET = "plugin_contract.loader:load_plugin"
LOADER_TARGET = "plugin_contract.loader:warm_loader"
LOAD_CONCURRENCY = 4

# More plugins than this vanishing in one load is a wrong PORTAL_PLUGIN_DIRS, not removals.
VANISH_LIMIT = 2

DESCRIPTION_CHARS = 10_000  # of a plugin's description (its docstring, by default)

# Where a load's process is lost, a neighbour in the shared host may be the cause: retry alone.
LOST_LOAD_OUTCOMES = frozenset({Outcome.SANDBOX_FAILURE, Outcome.CRASHED})

# The warm-up of a load's own sandbox host does nothing: only its Preload key, unique, matters.
ALONE_WARMUP = "builtins:hash"

# What a database or its driver may still refuse in a row the boundary made storable.
REFUSED_WRITES = (DatabaseError, UnicodeError, OverflowError)

BAD_LIMITS = (TypeError, ValueError, OverflowError)  # Limits.from_mapping on a declaration
VERSION_CHARS = max_chars(Plugin, "version")
SOURCE_CHARS = max_chars(Plugin, "source")

REPORT_CHARS = {
    "version": VERSION_CHARS,
    "description": DESCRIPTION_CHARS,
    "error_type": ERROR_TYPE_CHARS,
    "where": MESSAGE_CHARS,
    "traceback": TRACEBACK_CHARS,
}


@dataclass(frozen=True)
class LoadReport:
    """How one plugin's load ended: its state and reason in the registry, and its source
    (Plugin.source: empty for a name conflict, whose sources are Plugin.conflicting_sources)."""

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
    traceback: str = ""  # of the import or setup() that raised


def load_plugins(
    *, names: Sequence[str] | None = None, actor: str, prune: bool = False
) -> list[LoadReport]:
    """Discover and (re)load plugins: all of them, or the named ones (PluginNotFound if a name
    is neither registered nor discovered). Plugins registered but no longer found are marked
    UNAVAILABLE with a reason; two sources giving one name make it UNAVAILABLE, naming both.

    More than VANISH_LIMIT available plugins no longer found raise TooManyVanished before
    anything is written, unless `prune` says they were removed on purpose."""
    reconcile_interrupted()  # runs orphaned by a dead process must not block the reload
    found = discover()
    wanted = None if names is None else list(dict.fromkeys(names))
    specs = found.specs if wanted is None else _candidates(wanted, found)
    loads = _load_all(specs)
    groups: dict[str, list[_Load]] = {}
    for load in loads:
        groups.setdefault(load.name, []).append(load)
    registered = Plugin.objects.values_list("name", flat=True)
    expected = set(wanted) if wanted is not None else set(registered)
    if not prune:
        refuse_mass_vanishing(sorted(expected - groups.keys()), found)
    reports = [_record(name, group, actor) for name, group in groups.items()]
    for name in sorted(expected - groups.keys()):
        report = record_vanished(name, found, actor)
        if report is not None:
            reports.append(report)
    return sorted(reports, key=lambda report: report.name)


def refuse_mass_vanishing(missing: list[str], found: Discovery) -> None:
    gone = Plugin.objects.filter(name__in=missing).exclude(state=PluginState.UNAVAILABLE)
    vanishing = sorted(gone.values_list("name", flat=True))
    if len(vanishing) > VANISH_LIMIT:
        raise TooManyVanished(
            reasons.too_many_vanished(
                names=", ".join(vanishing), count=len(vanishing), searched=found.searched
            )
        )


def reload_plugin(
    *, name: str, actor: str, load: Callable[..., list[LoadReport]] | None = None
) -> Plugin:
    """Re-check one plugin (import, requirements, setup) and return its registry row; `load`
    does the loading (default: load_plugins here; the celery executor's: on a worker node).

    Raises PluginNotFound, or IllegalTransition while runs of the plugin are in progress.
    """
    reconcile_interrupted()  # after a restart, orphaned runs would otherwise say "wait"
    running = Plugin.objects.filter(name=name).values_list("running_count", flat=True).first()
    if running:
        raise IllegalTransition(reasons.reload_while_running(plugin=name, running=running))
    (load or load_plugins)(names=[name], actor=actor)
    try:
        return Plugin.objects.get(name=name)
    except Plugin.DoesNotExist:
        raise PluginNotFound(name) from None


def _candidates(wanted: list[str], found: Discovery) -> list[PluginSpec]:
    sources: set[str] = set()
    registered: set[str] = set()
    recorded = Plugin.objects.filter(name__in=wanted)
    for name, source, conflicting in recorded.values_list("name", "source", "conflicting_sources"):
        registered.add(name)
        sources.add(source)
        sources.update(conflicting)  # a name conflict reloads every source that claimed it
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
        reason = reasons.load_internal_error(plugin=spec.name, error_type=type(exc).__name__)
        return _Load(spec, spec.name, "failed", reason)


def _load_limits() -> Limits:
    # Import and setup() are bounded by time: a warm host runs them with no rlimits either,
    # and heavy libraries (torch, CUDA) reserve far more address space than they use.
    return Limits(timeout_s=settings.PORTAL_PLUGIN_LOAD_TIMEOUT_S, cpu_s=None, memory_mb=None)


def _load_one(spec: PluginSpec, *, preload: Preload | None = None) -> _Load:
    python = plugin_python.python_for(spec.name, spec)
    if python.reason:
        return _Load(spec, spec.name, "unavailable", python.reason)
    if python.path is not None and preload is None:  # a host of its own: no load shares it
        own = Preload(ALONE_WARMUP, ((spec.source, time.monotonic_ns()),), python=python.path)
        try:
            return _load_in(spec, own, python.path)
        finally:
            discard_preload(own)
    return _load_in(spec, preload, python.path)


def _load_in(spec: PluginSpec, preload: Preload | None, python: str | None) -> _Load:
    limits = _load_limits()
    result = run_plugin_sandboxed(LOAD_TARGET, spec.host_spec(), limits=limits, preload=preload)
    alone = preload is not None
    env = plugin_env.env_to_load_with(result)
    if env:  # the plugin declared variables the shared host withholds: load it with them
        loader = Preload(LOADER_TARGET, env=env, python=python)
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
        reason = reasons.load_report_malformed(
            plugin=spec.name, problem=shorten(str(exc)), source=spec.source
        )
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
            source=PluginSource.of_spec(spec),
            description=report.description,
            version=report.version,
            requirements=report.requires,
            limits=report.limits,
            run_params=report.run_params,
            params_schema=report.params_schema,
            declared_queue=report.queue,
            retry=report.retry,
            quarantine_after=report.quarantine_after,
            schedule=report.schedule,
            resident=report.resident,
        )
    if report.status == "ok":
        schema_problem = (
            None
            if report.params_schema is None
            else params_check.schema_problem(report.params_schema)
        )
        schema_problem = schema_problem or (
            None if report.schedule is None else declared_schedule_problem(report.schedule)
        )
        if schema_problem:
            reason = reasons.invalid_declaration(
                plugin=name, message=shorten(schema_problem), source=spec.source
            )
            return _Load(spec, name, "failed", reason, metadata)
        try:
            declared_limits(report.limits)
        except BAD_LIMITS as exc:
            reason = reasons.invalid_declaration(
                plugin=name, message=shorten(f"limits: {exc}"), source=spec.source
            )
            return _Load(spec, name, "failed", reason, metadata)
        return _Load(spec, name, "ok", "", metadata)
    reason = _report_reason(name, spec, report)
    return _Load(spec, name, report.status, reason, metadata, traceback=report.traceback)


def declared_limits(declared: dict[str, Any]) -> Limits:
    """The sandbox limits a plugin declares; ValueError for unknown or out-of-range ones
    (timeout_s above MAX_TIMEOUT_S, say: Limits.from_mapping checks sandbox.limits.MAXIMA)."""
    return Limits.from_mapping(declared)


def _report_reason(name: str, spec: PluginSpec, report: untrusted.LoaderReport) -> str:
    """The reason for a load the plugin host reported as unavailable or failed."""
    if report.status == "unavailable":
        return unavailable_reason(name, spec, report.missing)
    message = shorten(report.message)
    error_type = report.error_type or "Exception"
    where = report.where or None
    if report.stage == "declarations":
        return reasons.invalid_declaration(plugin=name, message=message, source=spec.source)
    if report.stage == "setup":
        return reasons.setup_failed(
            plugin=name, error_type=error_type, message=message, where=where
        )
    return reasons.import_failed(plugin=name, error_type=error_type, message=message, where=where)


def unavailable_reason(
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
        return reasons.missing_module(plugin=name, module=item)
    if kind == "library":
        return reasons.missing_library(plugin=name, library=item)
    if kind == "entry_point":
        return reasons.missing_entry_point_module(plugin=name, module=item, source=spec.source)
    if kind == "source":
        return reasons.source_missing(plugin=name, path=item)
    if kind == "env":
        return reasons.env_missing(plugin=name, var=item, withheld=plugin_env.withheld(item))
    if kind == "gpu":
        return reasons.gpu_missing(plugin=name, checked=missing.checked)
    path = missing.path or item
    if missing.problem == "unset_variable":
        return reasons.model_file_unset_variable(plugin=name, declared=item)
    if missing.problem == "empty":
        return reasons.model_file_empty(plugin=name, path=path)
    if missing.problem == "unreadable":
        return reasons.model_file_unreadable(plugin=name, path=path)
    return reasons.model_file_missing(plugin=name, path=path)


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
        return reasons.load_timed_out(plugin=name, timeout_s=limits.timeout_s)
    if result.outcome == Outcome.CRASHED:
        how = f"crashed the process with {result.signal or 'a signal'}"
        return reasons.load_crashed(plugin=name, how=how)
    if result.outcome == Outcome.MEMORY:
        return reasons.load_crashed(plugin=name, how="ran out of memory")
    if result.outcome == Outcome.EXITED:
        how = f"ended the process with exit code {result.exit_code}"
        return reasons.load_crashed(plugin=name, how=how)
    if result.outcome == Outcome.DISK_LIMIT:
        how = f"wrote more than its {limits.disk_mb} MB disk budget (limits.disk_mb)"
        return reasons.load_crashed(plugin=name, how=how)
    detail = shorten(result.error or str(result.outcome))
    if alone and result.outcome == Outcome.SANDBOX_FAILURE:
        return reasons.load_lost_host(plugin=name, detail=detail)
    return reasons.load_sandbox_failure(plugin=name, detail=detail)


def _record(name: str, group: list[_Load], actor: str) -> LoadReport:
    if len(group) > 1:
        sources = [load.spec.source for load in group]
        reason = reasons.name_conflict(plugin=name, sources=sources)
        logger.warning("%s", reason)
        conflict = PluginSource(conflicting=tuple(sources))
        return _write(
            name,
            lambda: services.plugin_mark_unavailable(
                name=name, reason=reason, actor=actor, source=conflict
            ),
            source=conflict,
            actor=actor,
        )
    load = group[0]
    source = PluginSource.of_spec(load.spec)
    if load.status == "ok":
        return _write(
            name,
            lambda: _register_initialized(name, load, actor),
            source=source,
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
            source=source,
            metadata=load.metadata,
            load_traceback=load.traceback,
        ),
        source=source,
        actor=actor,
    )


@transaction.atomic
def _register_initialized(name: str, load: _Load, actor: str) -> Plugin:
    # One transaction: no run can slip in between LOADED and INITIALIZED.
    assert load.metadata is not None
    services.plugin_register(name=name, metadata=load.metadata, actor=actor)
    sync_declared(name=name, declared=load.metadata.schedule)
    return services.plugin_mark_initialized(name=name, actor=actor)


def _write(name: str, write: Any, *, source: PluginSource, actor: str) -> LoadReport:
    try:
        plugin = write()
    except IllegalTransition as exc:  # runs in progress: the reload waits for them
        plugin = Plugin.objects.get(name=name)
        return LoadReport(name, plugin.state, str(exc), plugin.source)
    except ValidationError as exc:  # a declared value the registry refuses: this plugin only
        problems = "; ".join(
            f"{field}: {' '.join(messages)}" for field, messages in exc.message_dict.items()
        )
        reason = reasons.invalid_declaration(
            plugin=name, message=shorten(problems), source=source.shown
        )
        return _record_failed(name, reason, source=source, actor=actor)
    except REFUSED_WRITES as exc:  # the database refused it: this plugin only, the rest load
        logger.exception("Storing the load of plugin %s failed", name)
        problem = shorten(f"{type(exc).__name__}: {exc}")
        reason = reasons.load_not_stored(plugin=name, problem=problem)
        return _record_failed(name, reason, source=source, actor=actor)
    discard_warm_host(name)
    return LoadReport(name, plugin.state, plugin.reason, plugin.source)


def _record_failed(name: str, reason: str, *, source: PluginSource, actor: str) -> LoadReport:
    """Record FAILED without the refused metadata, for a write the registry refused."""
    logger.warning("%s", reason)
    fitted = dataclasses.replace(source, location=source.location[:SOURCE_CHARS])
    try:
        plugin = services.plugin_mark_failed(name=name, reason=reason, actor=actor, source=fitted)
    except (ValidationError, IllegalTransition, *REFUSED_WRITES):
        # Not even the name or source fits: report it, the other plugins still load.
        logger.exception("Plugin %s could not be recorded", name)
        return LoadReport(name, "FAILED", reason, source.location)
    discard_warm_host(name)
    return LoadReport(name, plugin.state, plugin.reason, plugin.source)


def record_vanished(name: str, found: Discovery, actor: str) -> LoadReport | None:
    plugin = Plugin.objects.filter(name=name).first()
    if plugin is None:
        return None
    source = PluginSource.of_plugin(plugin)
    file_or_package = source.kind in (SourceKind.FILE, SourceKind.PACKAGE)
    if file_or_package and source.spec(discovery=found) is None:
        reason = reasons.source_missing(plugin=name, path=source.location)
    else:
        reason = reasons.plugin_vanished(plugin=name, source=source.shown, searched=found.searched)
    return _write(
        name,
        lambda: services.plugin_mark_unavailable(name=name, reason=reason, actor=actor),
        source=source,
        actor=actor,
    )
