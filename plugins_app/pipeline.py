"""The plugin pipeline's entry points, for the interfaces (views, admin, commands, tests).

Plugin code runs only in sandbox processes (plugin_contract/loader.py). The work is done by:
    loader        discovery to registry: load_plugins, reload_plugin
    runner        runs: run_plugin, submit_run, wait_for_run, execute_run, runs_elsewhere
    run_outcomes  a SandboxResult to a services.RunOutcome (pure functions)
    warm_hosts    each plugin's warm sandbox host in this process
"""

from plugins_app.executor import reconcile_interrupted
from plugins_app.loader import LoadReport, load_plugins, reload_plugin
from plugins_app.run_outcomes import OUTPUT_TAIL_CHARS, RESULT_STORE_CHARS, outcome_from_result
from plugins_app.runner import execute_run, run_plugin, runs_elsewhere, submit_run, wait_for_run
from plugins_app.warm_hosts import WARM_TARGET, discard_warm_hosts

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
    "run_plugin",
    "runs_elsewhere",
    "submit_run",
    "wait_for_run",
]
