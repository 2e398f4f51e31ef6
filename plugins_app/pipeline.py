"""The plugin pipeline's entry points, for the interfaces (views, admin, commands, tests).

Plugin code runs only in sandbox processes (plugin_contract/loader.py). The work is done by:
    loader        discovery to registry: load_plugins, reload_plugin
    runner        runs: run_plugin, submit_run, wait_for_run, execute_run
    run_outcomes  a SandboxResult to a services.RunOutcome (pure functions)
    warm_hosts    each plugin's warm sandbox host in this process
"""

from django.conf import settings

from plugins_app.executor import get_executor, reconcile_interrupted
from plugins_app.loader import LoadReport, load_plugins, reload_plugin
from plugins_app.run_outcomes import OUTPUT_TAIL_CHARS, RESULT_STORE_CHARS, outcome_from_result
from plugins_app.runner import execute_run, run_plugin, submit_run, wait_for_run
from plugins_app.warm_hosts import WARM_TARGET, discard_warm_hosts


def resume_background_runs() -> None:
    """Start this process's background executor if it has none yet: its start and its sweeps
    pick up the retries whose backoff ended and the runs queued by a process that stopped (a
    restarted server has none until the first run is submitted or an operator looks)."""
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
    "submit_run",
    "wait_for_run",
]
