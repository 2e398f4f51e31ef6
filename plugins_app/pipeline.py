"""The plugin pipeline's entry points, for the interfaces (views, admin, commands, tests).

Plugin code runs only in sandbox processes (plugin_contract/loader.py). The work is done by:
    loader        discovery to registry: load_plugins, reload_plugin
    runner        runs: run_plugin, submit_run, wait_for_run, execute_run
    fleet.loads   under the celery executor (runs_elsewhere), loads on a worker node
    run_outcomes  a SandboxResult to a services.RunOutcome (pure functions)
    warm_hosts    each plugin's warm sandbox host in this process
"""

from collections.abc import Sequence

from django.conf import settings

from plugins_app import loader
from plugins_app.executor import get_executor, reconcile_interrupted, runs_elsewhere
from plugins_app.fleet.loads import load_all_on_workers, load_on_workers
from plugins_app.loader import LoadReport
from plugins_app.models import Plugin
from plugins_app.run_outcomes import OUTPUT_TAIL_CHARS, RESULT_STORE_CHARS, outcome_from_result
from plugins_app.runner import execute_run, run_plugin, submit_run, wait_for_run
from plugins_app.warm_hosts import WARM_TARGET, discard_warm_hosts


def resume_background_runs() -> None:
    """Start this process's background executor if it has none yet: its start and its sweeps
    pick up the retries whose backoff ended and the runs queued by a process that stopped (a
    web process starts it at its start; this covers a process that did not, e.g. a test's)."""
    if settings.PORTAL_RUN_EXECUTOR == "thread":
        get_executor(execute_run)


__all__ = [
    "OUTPUT_TAIL_CHARS",
    "RESULT_STORE_CHARS",
    "WARM_TARGET",
    "LoadReport",
    "discard_warm_hosts",
    "execute_run",
    "load_plugins",
    "outcome_from_result",
    "reconcile_interrupted",
    "reload_plugin",
    "resume_background_runs",
    "run_plugin",
    "runs_elsewhere",
    "submit_run",
    "wait_for_run",
]


def load_plugins(
    *, names: Sequence[str] | None = None, actor: str, prune: bool = False
) -> list[LoadReport]:
    """loader.load_plugins; under the celery executor, each plugin loads on a worker node of
    its queue (a load of every plugin only discovers the files here)."""
    if runs_elsewhere():
        if names is None:
            return load_all_on_workers(actor=actor, prune=prune)
        return load_on_workers(names=names, actor=actor)
    return loader.load_plugins(names=names, actor=actor, prune=prune)


def reload_plugin(*, name: str, actor: str) -> Plugin:
    """loader.reload_plugin; under the celery executor, on a worker node of its queue."""
    load = load_on_workers if runs_elsewhere() else None
    return loader.reload_plugin(name=name, actor=actor, load=load)
