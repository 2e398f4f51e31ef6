"""Runs: queue, execute in the sandbox, wait; every outcome recorded through the services.

run_plugin(name=..., params=..., actor=...)  run synchronously, return the finished run
submit_run(name=..., params=..., actor=...)  queue for the background executor
wait_for_run(run_id=..., timeout_s=...)      the run, finished or as it stands after timeout_s
execute_run(run_id)                          the executor's job: start, call, record
"""

from __future__ import annotations

import json
import logging
import math
import traceback
from dataclasses import dataclass
from typing import Any

from plugins_app import (
    plugin_env,
    plugin_python,
    reasons,
    reasons_environment,
    run_waits,
    services,
    untrusted,
)
from plugins_app.cancel_watch import cancel_watch
from plugins_app.discovery import ENTRY_POINT_GROUP, is_plugin_name
from plugins_app.errors import IllegalTransition, InvalidParams, RunNotFound
from plugins_app.executor import get_executor, heartbeat, runs_elsewhere, worker_id
from plugins_app.loader import (
    REFUSED_WRITES,
    REPORT_CHARS,
    declared_limits,
    unavailable_reason,
)
from plugins_app.models import Plugin, PluginRun, RunOutcomeKind, RunStatus, SourceKind
from plugins_app.run_outcomes import outcome_from_result, shorten
from plugins_app.sources import PluginSource
from plugins_app.warm_hosts import discard_if_replaced, discard_warm_host, warm_host_for
from sandbox import CancelToken, Fault, Outcome, Phase, SandboxResult, run_plugin_sandboxed
from sandbox.limits import MAXIMA

logger = logging.getLogger(__name__)


CALL_TARGET = "plugin_contract.loader:call_plugin"


MAX_TIMEOUT_S = MAXIMA["timeout_s"]  # 7 days: longer is a typo, and overflows the sandbox's timers


def run_plugin(
    *,
    name: str,
    params: dict,
    actor: str,
    timeout_s: float | None = None,
    local: bool = False,
) -> PluginRun:
    """Run a plugin now and return the finished run (its status says how it went).

    With the celery executor the run goes to a worker node of the plugin's queue and this
    waits for it; `local` runs it in this process's sandbox instead (debugging on one machine).
    Raises PluginNotFound, PluginRefused (disabled or UNAVAILABLE: nothing is counted) or
    InvalidParams (params not a JSON object or not fitting run() or the params_schema, or a
    timeout that is not a positive number; a run the call's own check refused is recorded,
    uncounted).
    """
    params = _checked_params(params)
    _checked_timeout(timeout_s)
    if not local and runs_elsewhere():
        if timeout_s is not None:
            raise InvalidParams(
                "A timeout for one run needs the run in this process: add --local, or declare "
                "the timeout in the plugin's limits (worker nodes apply those)"
            )
        run = submit_run(name=name, params=params, actor=actor)
        run = wait_for_run(run_id=run.pk, timeout_s=math.inf)
    else:
        _unavailable_if_gone(name, actor)
        run = services.run_queue(name=name, params=params, actor=actor)
        run = execute_run(run.pk, timeout_s=timeout_s)
    if run.outcome == RunOutcomeKind.REFUSED and run.error_type == services.PARAMS_REFUSED:
        raise InvalidParams(run.reason)
    return run


def submit_run(*, name: str, params: dict, actor: str) -> PluginRun:
    """Queue a run for the background executor and return it at once (status queued)."""
    params = _checked_params(params)
    if not runs_elsewhere():
        _unavailable_if_gone(name, actor)  # worker nodes check the source where they run it
    run = services.run_queue(name=name, params=params, actor=actor)
    get_executor(execute_run).submit(run.pk)
    run.refresh_from_db()
    return run


def wait_for_run(*, run_id: int, timeout_s: float) -> PluginRun:
    """The run once it finished, or as it stands after timeout_s seconds (woken by the finish:
    plugins_app/run_waits.py)."""

    def read() -> PluginRun:
        try:
            return PluginRun.objects.select_related("plugin").get(pk=run_id)
        except PluginRun.DoesNotExist:
            raise RunNotFound(run_id) from None

    return run_waits.wait_until_finished(
        run_id, timeout_s=timeout_s, read=read, finished=lambda run: run.is_finished
    )


def execute_run(run_id: int, *, timeout_s: float | None = None) -> PluginRun:
    """Start a queued run, call the plugin in the sandbox and record the outcome.

    A plugin whose source vanished becomes UNAVAILABLE first, so the run closes uncounted;
    a run already going when its source vanishes ends FAILED (see docs/state-machine.md).
    """
    queued = PluginRun.objects.select_related("plugin").filter(pk=run_id).first()
    if queued is not None and queued.status == RunStatus.QUEUED:
        _unavailable_if_gone(queued.plugin.name, queued.actor, plugin=queued.plugin)
    try:
        run = services.run_start(run_id=run_id, worker=worker_id())
    except IllegalTransition:
        # Another process started it first (an adopted orphan): nothing to do here.
        return PluginRun.objects.select_related("plugin").get(pk=run_id)
    if run.status != RunStatus.RUNNING:
        return run  # disabled or made UNAVAILABLE while it waited: closed, uncounted
    plugin = run.plugin  # as locked by the claim
    with heartbeat().tracking(run.pk):
        try:
            # Watched for a cancel while the call runs only: its own finish below is no cancel.
            with cancel_watch().watching(run.pk) as cancel:
                outcome = _call(plugin, run.params, timeout_s, cancel)
            if isinstance(outcome, _Unavailable):
                return _refuse_unavailable(run.pk, plugin.name, outcome.reason)
            if isinstance(outcome, _BadParams):
                return services.run_refuse_params(run_id=run.pk, reason=outcome.reason)
        except Exception as exc:
            # A portal bug must not leave the run RUNNING forever; record it and go on.
            logger.exception("Running plugin %s failed in the portal", plugin.name)
            outcome = services.RunOutcome(
                status=RunStatus.FAILED,
                outcome=Outcome.SANDBOX_FAILURE.value,
                error_type=type(exc).__name__,
                reason=reasons.run_internal_error(
                    plugin=plugin.name, error_type=type(exc).__name__
                ),
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
        problem = shorten(f"{type(exc).__name__}: {exc}")
        stored = services.RunOutcome(
            status=RunStatus.FAILED,
            outcome=outcome.outcome,
            error_type="OutcomeNotStored",
            reason=reasons.run_outcome_not_stored(
                plugin=name, run_id=run_id, status=outcome.status.value, problem=problem
            ),
            duration_ms=outcome.duration_ms,
        )
        # A second refusal means the database itself is failing: the caller sees that error.
        return services.run_finish(run_id=run_id, outcome=stored)


def _finish_interrupted(run_id: int, name: str, exc: BaseException) -> None:
    outcome = services.RunOutcome(
        status=RunStatus.INTERRUPTED,
        outcome=RunOutcomeKind.INTERRUPTED,
        error_type=type(exc).__name__,
        reason=reasons.run_interrupted_here(plugin=name, run_id=run_id, cause=type(exc).__name__),
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


@dataclass(frozen=True)
class _BadParams:
    """The call's process found the params do not fit run(): the caller's mistake."""

    reason: str


def _refuse_unavailable(run_id: int, name: str, reason: str) -> PluginRun:
    run = services.run_refuse_unavailable(run_id=run_id, reason=reason)
    discard_warm_host(name)
    return run


def _unavailable_if_gone(name: str, actor: str, *, plugin: Plugin | None = None) -> None:
    """Mark the plugin UNAVAILABLE when its recorded source no longer exists (as a load would);
    `plugin`: its row, when the caller just read it."""
    if plugin is None:
        plugin = Plugin.objects.filter(name=name).first()
    if plugin is None:
        return  # unknown: run_queue says so
    source = PluginSource.of_plugin(plugin)
    if source.kind is None or source.spec() is not None:
        return  # no single source (a name conflict is UNAVAILABLE already), or it is there
    if source.kind == SourceKind.ENTRY_POINT:
        searched = f"the '{ENTRY_POINT_GROUP}' entry points"
        reason = reasons.plugin_vanished(plugin=name, source=source.location, searched=searched)
    else:
        reason = reasons.source_missing(plugin=name, path=source.location)
    try:
        services.plugin_mark_unavailable(name=name, reason=reason, actor=actor)
    except IllegalTransition:
        return  # runs in progress: this one runs and fails, naming the missing source
    discard_warm_host(name)


def _call(
    plugin: Plugin, params: dict[str, Any], timeout_s: float | None, cancel: CancelToken
) -> services.RunOutcome | _Unavailable | _BadParams:
    spec = PluginSource.of_plugin(plugin).spec()
    if spec is None:
        return services.RunOutcome(
            status=RunStatus.FAILED,
            outcome=RunOutcomeKind.MISSING,
            error_type="PluginSourceMissing",
            reason=reasons.source_missing(plugin=plugin.name, path=plugin.source),
        )
    try:
        limits = declared_limits(plugin.limits or {})
    except (TypeError, ValueError) as exc:
        return services.RunOutcome(
            status=RunStatus.FAILED,
            outcome=RunOutcomeKind.INVALID_DECLARATION,
            error_type="InvalidDeclaration",
            reason=reasons.invalid_declaration(
                plugin=plugin.name, message=f"limits: {exc}", source=plugin.source
            ),
        )
    if timeout_s is not None:
        limits = limits.replace(timeout_s=timeout_s)
    python = plugin_python.python_for(plugin.name, spec)
    if python.reason:  # its interpreter is gone or broken since the load
        return _Unavailable(python.reason)
    declared_env = plugin_env.declared(plugin.requirements or {})
    preload = warm_host_for(
        plugin.name, spec, declared_env, python=python.path, resident=plugin.resident
    )
    result = run_plugin_sandboxed(
        CALL_TARGET, spec.host_spec(), params, limits=limits, preload=preload, cancel=cancel
    )
    discard_if_replaced(plugin.name, preload)
    missing = _missing_at_call(result)
    if missing:
        return _Unavailable(unavailable_reason(plugin.name, spec, missing))
    if _forked_after_cuda(result):  # its declaration is wrong: unavailable until it changes
        return _Unavailable(reasons_environment.fork_after_cuda(plugin=plugin.name))
    if result.outcome == Outcome.ERROR and result.fault == Fault.PARAMS:
        message = shorten(result.message or result.error or "")
        return _BadParams(reasons.run_params_refused(plugin=plugin.name, message=message))
    return outcome_from_result(plugin.name, result, limits, plugin_root=spec.path)


def _missing_at_call(result: SandboxResult) -> tuple[untrusted.MissingItem, ...]:
    """What the call's process lacked of the plugin's requirements, from the load report
    plugin_contract.loader.PluginUnavailable carries as the result's detail; () for any other
    outcome."""
    if result.outcome != Outcome.ERROR or result.fault != Fault.UNAVAILABLE:
        return ()
    try:
        report = untrusted.load_report(
            result.detail, is_name=is_plugin_name, max_chars=REPORT_CHARS
        )
    except (ValueError, RecursionError):  # not that report: an ordinary failure of the run
        return ()
    return report.missing if report.status == "unavailable" else ()


def _forked_after_cuda(result: SandboxResult) -> bool:
    """The warm host refused fork mode: the plugin's warm-up initialised CUDA."""
    return (
        result.phase == Phase.WARM_UP
        and result.fault == Fault.UNAVAILABLE
        and result.detail == {"cuda_initialized": True}
    )


def _checked_params(params: Any) -> dict[str, Any]:
    if not isinstance(params, dict):
        problem = f"got {type(params).__name__}, not an object"
        raise InvalidParams(reasons.invalid_params(problem=problem))
    bad_keys = [key for key in params if not isinstance(key, str) or not key.isidentifier()]
    if bad_keys:
        listed = ", ".join(map(repr, bad_keys))
        problem = f"parameter names must be Python identifiers, not {listed}"
        raise InvalidParams(reasons.invalid_params(problem=problem))
    try:
        return json.loads(json.dumps(params, allow_nan=False))
    except (TypeError, ValueError) as exc:
        problem = f"not JSON-serialisable ({exc})"
        raise InvalidParams(reasons.invalid_params(problem=problem)) from None


def _checked_timeout(timeout_s: Any) -> None:
    if timeout_s is None:
        return
    number = isinstance(timeout_s, int | float) and not isinstance(timeout_s, bool)
    if not number or not math.isfinite(timeout_s) or not 0 < timeout_s <= MAX_TIMEOUT_S:
        raise InvalidParams(
            f"Invalid timeout: {timeout_s!r} (give a positive number of seconds, such as 30, "
            f"at most {MAX_TIMEOUT_S} seconds (7 days))"
        )
