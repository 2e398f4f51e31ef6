"""Every reason the portal writes is built here, from its parts: what failed, why, what next.

One sentence each, so the admin, the API and the commands show the same words, and a test
can walk every builder and reject vague ones. Builders take keyword-only arguments, the
plugin's name first as `plugin=`, so two swapped strings are a TypeError, not a wrong reason.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

# Words that say nothing on their own; a reason made only of these is rejected by the tests.
VAGUE_REASONS = frozenset({"error", "failed", "failure", "unknown", "crash", "crashed", "none"})


def plugin_disabled(*, plugin: str, by: str, note: str) -> str:
    why = f": {note}" if note else ""
    return (
        f"Plugin '{plugin}' is disabled by {by or 'an operator'}{why} "
        "(enable it in the admin or through the API to run it again)"
    )


def plugin_unavailable_refusal(*, plugin: str, reason: str) -> str:
    why = reason or "its environment check failed"
    return (
        f"Plugin '{plugin}' is UNAVAILABLE and cannot run: {why}"
        " (fix the environment, then reload the plugin)"
    )


def rerun_needs_reload(*, plugin: str, reason: str) -> str:
    why = f": {reason}" if reason else ""
    return (
        f"Plugin '{plugin}' did not load, so a rerun would fail the same way{why} "
        "(fix the cause its reason names, then reload it; reruns are offered again once it loads)"
    )


def reloaded_after_failed_run(*, plugin: str, failures: int, last_reason: str) -> str:
    why = f": {last_reason}" if last_reason else ""
    return (
        f"Plugin '{plugin}' reloaded fine, but its last run failed{why} "
        f"({failures} consecutive failure{'' if failures == 1 else 's'}; rerun it to check "
        "the fix)"
    )


def reload_while_running(*, plugin: str, running: int) -> str:
    return (
        f"Plugin '{plugin}' has {running} run(s) in progress and cannot be reloaded now "
        "(wait for them to finish, then reload)"
    )


def run_interrupted(*, plugin: str, run_id: int, worker: str, last_seen: datetime | None) -> str:
    seen = last_seen.strftime("%Y-%m-%d %H:%M:%S UTC") if last_seen else "an unknown time"
    return (
        f"Run {run_id} of plugin '{plugin}' was interrupted: the process running it "
        f"({worker or 'unknown worker'}) stopped responding, last seen at {seen} "
        "(the server or worker was killed or restarted; rerun the plugin)"
    )


def run_interrupted_here(*, plugin: str, run_id: int, cause: str) -> str:
    return (
        f"Run {run_id} of plugin '{plugin}' was interrupted in the process running it "
        f"({cause}, such as Ctrl-C or a shutdown) before it finished (rerun the plugin)"
    )


def counters_reset(*, successes: int, errors: int, consecutive: int, note: str) -> str:
    why = f": {note}" if note else ""
    return (
        f"Counters reset from {successes} successes, {errors} errors, "
        f"{consecutive} consecutive failures{why}"
    )


def is_actionable(reason: str) -> bool:
    """A reason is actionable when it is a sentence, not a bare word, and names a next step."""
    text = reason.strip()
    if len(text) < 30 or text.lower().strip(".!") in VAGUE_REASONS:
        return False
    return len(text.split()) >= 6


# --- Loading (built from the plugin host's reports) ----------------------------------------

# Import names whose pip distribution is called something else.
PIP_NAMES = {
    "attr": "attrs",
    "bs4": "beautifulsoup4",
    "cv2": "opencv-python",
    "dateutil": "python-dateutil",
    "docx": "python-docx",
    "dotenv": "python-dotenv",
    "fitz": "PyMuPDF",
    "jwt": "PyJWT",
    "magic": "python-magic",
    "PIL": "Pillow",
    "serial": "pyserial",
    "skimage": "scikit-image",
    "sklearn": "scikit-learn",
    "yaml": "PyYAML",
    "zmq": "pyzmq",
}


def pip_name(module: str) -> str:
    top = module.split(".")[0]
    return PIP_NAMES.get(top, top)


def missing_module(*, plugin: str, module: str) -> str:
    return (
        f"Missing Python module '{module}' required by plugin '{plugin}' "
        f"(install with: pip install {pip_name(module)})"
    )


def missing_library(*, plugin: str, library: str) -> str:
    return (
        f"Missing system library '{library}' required by plugin '{plugin}' (install the system "
        f"library {library}, e.g. with your OS package manager, then reload)"
    )


def missing_entry_point_module(*, plugin: str, module: str, source: str) -> str:
    return (
        f"Plugin '{plugin}' comes from {source}, but its module '{module}' is not installed "
        "(reinstall the distribution that provides it, then reload the plugin)"
    )


def gpu_missing(*, plugin: str, checked: str) -> str:
    return (
        f"Plugin '{plugin}' requires a CUDA GPU but none was found ({checked}); "
        "run the portal on a machine with a CUDA GPU and its driver, then reload the plugin"
    )


def model_file_missing(*, plugin: str, path: str) -> str:
    return (
        f"Model file not found: {path} (declared in requires.files of plugin '{plugin}'); "
        "put the file there, then reload the plugin"
    )


def model_file_empty(*, plugin: str, path: str) -> str:
    return (
        f"Model file is empty: {path} (declared in requires.files of plugin '{plugin}'); "
        "download or copy the complete file again, then reload the plugin"
    )


def model_file_unreadable(*, plugin: str, path: str) -> str:
    return (
        f"Model file is not readable by the portal: {path} (declared in requires.files of "
        f"plugin '{plugin}'); fix its permissions, then reload the plugin"
    )


def model_file_unset_variable(*, plugin: str, declared: str) -> str:
    return (
        f"Model file path '{declared}' of plugin '{plugin}' uses an environment variable that "
        "is not set (set it in the portal's environment, then reload the plugin)"
    )


def env_missing(
    *, plugin: str, var: str, withheld: Literal["secret", "denied"] | None = None
) -> str:
    if withheld == "secret":
        return (
            f"Environment variable '{var}' required by plugin '{plugin}' is set in the portal "
            "but withheld from plugins because it looks like a secret "
            f"(allow it with SANDBOX_ENV_ALLOW={var}, then reload the plugin)"
        )
    if withheld == "denied":
        return (
            f"Environment variable '{var}' required by plugin '{plugin}' is set in the portal "
            "but SANDBOX_ENV_DENY withholds it from plugins (remove it from SANDBOX_ENV_DENY "
            "if the plugin may see it, then reload the plugin)"
        )
    return (
        f"Environment variable '{var}' required by plugin '{plugin}' is not set "
        "(set it in the portal's environment, then reload the plugin)"
    )


def source_missing(*, plugin: str, path: str) -> str:
    return (
        f"Plugin '{plugin}' is gone: {path} no longer exists (restore it and reload; "
        "the plugin's history is kept meanwhile)"
    )


def plugin_vanished(*, plugin: str, source: str, searched: str) -> str:
    was = f" (it was loaded from {source})" if source else ""
    return (
        f"Plugin '{plugin}' was not found in {searched}{was}; restore it or fix "
        "PORTAL_PLUGIN_DIRS, then reload (its history is kept meanwhile)"
    )


def name_conflict(*, plugin: str, sources: list[str]) -> str:
    return (
        f"Plugin name '{plugin}' is provided by {len(sources)} sources: {'; '.join(sources)}; "
        "none of them is used (rename or remove all but one, then reload)"
    )


def _at(where: str | None) -> str:
    return f" at {where}" if where else ""


def import_failed(*, plugin: str, error_type: str, message: str, where: str | None) -> str:
    return (
        f"Plugin '{plugin}' failed to import: {error_type}: {message}{_at(where)} "
        "(fix the code, then reload the plugin)"
    )


def setup_failed(*, plugin: str, error_type: str, message: str, where: str | None) -> str:
    return (
        f"setup() of plugin '{plugin}' raised {error_type}: {message}{_at(where)} "
        "(fix the cause, then reload the plugin)"
    )


def invalid_declaration(*, plugin: str, message: str, source: str) -> str:
    return (
        f"Plugin '{plugin}' has an invalid declaration: {message} "
        f"(fix it in {source}, then reload the plugin)"
    )


def load_timed_out(*, plugin: str, timeout_s: float) -> str:
    return (
        f"Loading plugin '{plugin}' did not finish within {timeout_s:g} s: its import or "
        "setup() hangs or is very slow (fix it, or raise PORTAL_PLUGIN_LOAD_TIMEOUT_S, "
        "then reload the plugin)"
    )


def load_crashed(*, plugin: str, how: str) -> str:
    return (
        f"Loading plugin '{plugin}' {how} during its import or setup() "
        "(see the portal log for its stderr, fix the plugin, then reload it)"
    )


def load_lost_host(*, plugin: str, detail: str) -> str:
    return (
        f"Loading plugin '{plugin}' lost the sandbox host that ran it, also in a host of its "
        f"own: {detail} (its import or setup() may be killing the process that loads it: fix "
        "the plugin, then reload it)"
    )


def load_report_malformed(*, plugin: str, problem: str, source: str) -> str:
    return (
        f"The sandbox's load report for plugin '{plugin}' is malformed: {problem} (its code "
        f"may tamper with the portal's loader: check {source or 'its source'}, fix it, then "
        "reload the plugin)"
    )


def load_not_stored(*, plugin: str, problem: str) -> str:
    return (
        f"What loading plugin '{plugin}' found could not be stored: the database refused it "
        f"({problem}) (it is recorded as FAILED without what it declared; see the portal log "
        "for the error, then reload the plugin)"
    )


def load_internal_error(*, plugin: str, error_type: str) -> str:
    return (
        f"The portal failed to process the load of plugin '{plugin}' ({error_type}; a bug in "
        "the portal or a report it did not expect): see the portal log for the traceback, "
        "then reload the plugin"
    )


def load_sandbox_failure(*, plugin: str, detail: str) -> str:
    return (
        f"The sandbox could not load plugin '{plugin}': {detail} "
        "(check the portal log, then reload the plugin)"
    )


# --- Runs (built from the sandbox's result) -------------------------------------------------


def run_raised(*, plugin: str, error_type: str, message: str, where: str | None) -> str:
    return (
        f"Plugin '{plugin}' raised {error_type} in run(): {message}{_at(where)} "
        "(see the run's traceback; fix the plugin or its input, then rerun)"
    )


def run_bad_params(*, plugin: str, message: str) -> str:
    return f"Bad params for plugin '{plugin}': {message} (fix the params, then run it again)"


def run_load_failed(*, plugin: str, message: str) -> str:
    return (
        f"Plugin '{plugin}' could not be imported or set up for this run: {message} "
        "(fix it, then reload the plugin)"
    )


def run_warmup_failed(*, plugin: str, detail: str) -> str:
    return (
        f"Plugin '{plugin}' could not be prepared for this run: its import or setup() in the "
        f"warm host {detail} (fix the plugin's import or setup(), then reload the plugin)"
    )


def run_timed_out(*, plugin: str, timeout_s: float) -> str:
    return (
        f"Plugin '{plugin}' did not finish within its {timeout_s:g} s timeout and was stopped "
        "(raise limits.timeout_s in the plugin, or pass a longer timeout, if the work needs it)"
    )


def run_cpu_exceeded(*, plugin: str, cpu_s: float | None) -> str:
    limit = f"{cpu_s:g} s" if cpu_s else "its"
    return (
        f"Plugin '{plugin}' used more than {limit} of CPU time and was stopped "
        "(raise limits.cpu_s in the plugin if the work needs it, or look for a busy loop)"
    )


def run_out_of_memory(*, plugin: str, memory_mb: int | None, peak_rss_kb: int | None) -> str:
    limit = f"its {memory_mb} MB memory limit" if memory_mb else "the available memory"
    peak = f" (peak {peak_rss_kb // 1024} MB resident)" if peak_rss_kb else ""
    return (
        f"Plugin '{plugin}' ran out of {limit}{peak} and was stopped "
        "(raise limits.memory_mb in the plugin, or give it smaller input)"
    )


def run_crashed(*, plugin: str, signal: str | None, exit_code: int | None) -> str:
    if signal:
        how = f"signal {signal}"
    else:
        how = f"exit code {exit_code}" if exit_code is not None else "an unknown signal"
    return (
        f"Plugin '{plugin}' crashed with {how} during run() "
        "(see the run's stderr tail; a native extension or the plugin's own code failed)"
    )


def run_exited(*, plugin: str, exit_code: int | None) -> str:
    code = f" with exit code {exit_code}" if exit_code is not None else ""
    return (
        f"Plugin '{plugin}' ended its process{code} during run() without returning a result "
        "(remove the sys.exit()/os._exit() call from the plugin)"
    )


def run_result_too_large(*, plugin: str, detail: str) -> str:
    return (
        f"Plugin '{plugin}' returned a result that is too large: {detail} "
        "(return less data, or raise limits.result_bytes)"
    )


def run_disk_exceeded(*, plugin: str, disk_mb: int | None, used_kb: int | None) -> str:
    written = f"wrote {used_kb // 1024} MB" if used_kb is not None else "wrote more"
    budget = f"its {disk_mb} MB disk budget" if disk_mb else "its disk budget"
    return (
        f"Plugin '{plugin}' {written} in its working directory, more than {budget}, and was "
        "stopped; its files there were removed (raise limits.disk_mb in the plugin, write "
        "less, or write large output elsewhere and return a reference)"
    )


def run_unserialisable(*, plugin: str, detail: str) -> str:
    return (
        f"Plugin '{plugin}' returned a value that is not JSON-serialisable: {detail} "
        "(return dicts, lists, strings, numbers, booleans or None)"
    )


def run_sandbox_failure(*, plugin: str, detail: str) -> str:
    return (
        f"The sandbox failed while running plugin '{plugin}': {detail} "
        "(check the portal log, then rerun)"
    )


def run_outcome_not_stored(*, plugin: str, run_id: int, status: str, problem: str) -> str:
    return (
        f"The outcome of run {run_id} of plugin '{plugin}' ({status or 'unknown'}) could not "
        f"be stored: the database refused it ({problem}) (the run is recorded as failed "
        "without its result and output; see the portal log for the error, then rerun the "
        "plugin)"
    )


def run_output_changed(*, plugin: str, changes: list[str]) -> str:
    """A run's warning: what the portal changed in a plugin's output so it could store it."""
    return (
        f"Plugin '{plugin}' produced values the registry cannot store as they are; they were "
        f"changed before storing: {'; '.join(changes) or 'some values'} (the stored values "
        "differ there from what the plugin produced; have it return such data encoded, for "
        "example as base64 text)"
    )


def run_internal_error(*, plugin: str, error_type: str) -> str:
    return (
        f"The portal failed to run plugin '{plugin}' ({error_type}; a bug in the portal, "
        "not the plugin): see the portal log for the traceback, then rerun"
    )


def invalid_params(*, problem: str) -> str:
    return f'Invalid params: {problem} (pass a JSON object such as {{"seconds": 2}})'


def params_do_not_fit_run(*, plugin: str, problems: str, accepted: str) -> str:
    return (
        f"Params for plugin '{plugin}' do not fit its run(): {problems}; run() accepts: "
        f"{accepted or 'no params'} (fix the params, then run it again; nothing was run)"
    )


def params_do_not_fit_schema(*, plugin: str, where: str, message: str, rule: str) -> str:
    return (
        f"Params for plugin '{plugin}' do not fit its params_schema: {where}: {message} "
        f"(rule: {rule}) (fix the params, then run it again; nothing was run)"
    )


def run_params_refused(*, plugin: str, message: str) -> str:
    return (
        f"Bad params for plugin '{plugin}': {message}; run() no longer takes what the last "
        "load recorded, so nothing was counted (fix the params, or reload the plugin if its "
        "run() changed, then run it again)"
    )


def too_many_vanished(*, names: str, count: int, searched: str) -> str:
    return (
        f"Refusing to mark {count} plugins UNAVAILABLE at once: {names} were not found in "
        f"{searched}, which usually means this process's PORTAL_PLUGIN_DIRS lacks their "
        "directories; nothing was changed (run loadplugins with the PORTAL_PLUGIN_DIRS the "
        "server uses, or, if they were removed on purpose, run loadplugins --prune to mark "
        "them UNAVAILABLE)"
    )


def _start_worker(queue: str) -> str:
    return f"start one with: manage.py runworker --queues {queue}"


def queue_changed(*, plugin: str, previous: str, queue: str) -> str:
    before, after = (f"queue '{q}'" if q else "its default queue" for q in (previous, queue))
    return f"Plugin '{plugin}' now runs on {after} instead of {before} ({_start_worker('NAME')})"


def no_live_worker(*, plugin: str, queue: str) -> str:
    waits = (
        f"its runs wait there, queued and not counted, until one starts ({_start_worker(queue)})"
    )
    return f"No worker is serving queue '{queue}' of plugin '{plugin}': {waits}"


def queue_unserved(*, queue: str, plugins: str) -> str:
    waits = f"runs of its plugins ({plugins}) wait there, queued and not counted, until one starts"
    return f"No worker is serving queue '{queue}': {waits} ({_start_worker(queue)})"


def load_without_worker(*, plugin: str, queue: str) -> str:
    where = f"no worker is serving its queue '{queue}', where it must be checked"
    return f"Cannot load plugin '{plugin}': {where} ({_start_worker(queue)}, then reload it)"


def load_not_answered(*, plugin: str, queue: str, waited_s: int) -> str:
    return (
        f"The load of plugin '{plugin}' on queue '{queue}' got no answer in {waited_s} s: its "
        "worker node may have died (see GET /v1/workers; restart it, then reload the plugin)"
    )


def broker_unreachable(*, plugin: str, what: str, problem: str) -> str:
    """`what`: "Run 12" or "The load"; neither reached a worker node."""
    return (
        f"{what} of plugin '{plugin}' could not be sent to the worker nodes: the broker is "
        f"unreachable ({problem}); check PORTAL_BROKER_URL and that RabbitMQ runs, then retry"
    )
