"""The only code that changes the registry: plugins (plugins.py), runs (runs.py) and retry and
quarantine policies (policies.py, retries.py, quarantine.py), each
through the row locks and state changes of rows.py.

Each service opens one transaction, locks the plugin row, checks the transition table, updates
counters with F() expressions in the database and appends the history row, so concurrent
threads and processes neither lose nor double-count an outcome.
"""

from __future__ import annotations

from plugins_app.services.cancels import run_cancel
from plugins_app.services.plugins import (
    PluginMetadata,
    plugin_disable,
    plugin_enable,
    plugin_mark_failed,
    plugin_mark_initialized,
    plugin_mark_unavailable,
    plugin_register,
    plugin_reset_counters,
)
from plugins_app.services.policies import (
    plugin_set_policy,
    quarantine_extend,
    quarantine_lift,
)
from plugins_app.services.runs import (
    PARAMS_REFUSED,
    SYSTEM_ACTOR,
    RunOutcome,
    run_finish,
    run_heartbeat,
    run_queue,
    run_refuse_params,
    run_refuse_queued,
    run_refuse_unavailable,
    run_start,
    runs_prune,
    runs_reconcile_interrupted,
)
from plugins_app.services.workers import (
    NodeEnvironment,
    load_request_claim,
    load_request_create,
    load_request_finish,
    plugin_set_queue,
    worker_heartbeat,
    worker_register,
    worker_stopped,
)

__all__ = [
    "PARAMS_REFUSED",
    "SYSTEM_ACTOR",
    "NodeEnvironment",
    "PluginMetadata",
    "RunOutcome",
    "load_request_claim",
    "load_request_create",
    "load_request_finish",
    "plugin_disable",
    "plugin_enable",
    "plugin_mark_failed",
    "plugin_mark_initialized",
    "plugin_mark_unavailable",
    "plugin_register",
    "plugin_reset_counters",
    "plugin_set_policy",
    "plugin_set_queue",
    "quarantine_extend",
    "quarantine_lift",
    "run_cancel",
    "run_finish",
    "run_heartbeat",
    "run_queue",
    "run_refuse_params",
    "run_refuse_queued",
    "run_refuse_unavailable",
    "run_start",
    "runs_prune",
    "runs_reconcile_interrupted",
    "worker_heartbeat",
    "worker_register",
    "worker_stopped",
]
