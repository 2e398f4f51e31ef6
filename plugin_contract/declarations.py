"""What a plugin module declares (name, version, description, requires, limits, params_schema,
retry, quarantine_after, mode and resident, run and setup), read with defaults and checked
against the contract.

Runs only in sandbox processes, on a module the loader imported; standard library only.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from plugin_contract import (
    MAX_NAME_CHARS,
    MAX_VERSION_CHARS,
    MISSED_POLICIES,
    NAME_PATTERN,
    OVERLAP_POLICIES,
    QUEUE_PATTERN,
    REQUIRE_KEYS,
    SCHEDULE_KEYS,
    Declarations,
    RunParams,
)
from plugin_contract.policies import normalised_retry, quarantine_after_problem, retry_problem
from plugin_contract.resident import mode_problem, normalised_resident

Problem = tuple[str, str]  # (the declaration that is wrong, what is wrong with it)


def read_declarations(module: Any, default_name: str) -> tuple[Declarations, Problem | None]:
    """What the module declares, with defaults and normalised; or, as is, with the first
    problem found."""
    doc = getattr(module, "__doc__", None)
    declared: Declarations = {
        "name": getattr(module, "name", default_name),
        "version": getattr(module, "version", ""),
        "description": getattr(module, "description", None),
        "requires": getattr(module, "requires", None) or {},
        "limits": getattr(module, "limits", None) or {},
        "params_schema": getattr(module, "params_schema", None),
        "retry": getattr(module, "retry", None),
        "quarantine_after": getattr(module, "quarantine_after", None),
        "run_params": None,
        "schedule": getattr(module, "schedule", None),
        "queue": getattr(module, "queue", None),
        "mode": getattr(module, "mode", "fork"),
        "resident": getattr(module, "resident", None),
    }
    problem = _problem(declared, module)
    if problem:
        return declared, problem
    if isinstance(declared["version"], int | float):
        declared["version"] = str(declared["version"])
    if declared["description"] is None:
        declared["description"] = inspect.cleandoc(doc) if isinstance(doc, str) else ""
    declared["requires"] = _normalised_requires(declared["requires"])
    declared["limits"] = dict(declared["limits"])
    if declared["params_schema"] is not None:
        declared["params_schema"] = dict(declared["params_schema"])
    if declared["retry"] is not None:
        declared["retry"] = normalised_retry(declared["retry"])
    if declared["schedule"] is not None:
        declared["schedule"] = _normalised_schedule(declared["schedule"])
    if declared["mode"] == "resident":  # every knob filled in, so the portal stores them all
        declared["resident"] = normalised_resident(declared["resident"] or {})
    declared["run_params"] = run_params(module.run)
    return declared, None


def run_params(run: Any) -> RunParams | None:
    """The keyword arguments run() takes, from its signature; None when it has none readable."""
    try:
        signature = inspect.signature(run)
    except (TypeError, ValueError):  # some callables have no signature; the call decides
        return None
    accepted: list[str] = []
    required: list[str] = []
    var_keyword = False
    for parameter in signature.parameters.values():
        if parameter.kind is inspect.Parameter.VAR_KEYWORD:
            var_keyword = True
        elif parameter.kind is inspect.Parameter.VAR_POSITIONAL:
            continue
        else:
            if parameter.kind is not inspect.Parameter.POSITIONAL_ONLY:
                accepted.append(parameter.name)
            if parameter.default is inspect.Parameter.empty:
                required.append(parameter.name)
    return {"accepted": accepted, "required": required, "var_keyword": var_keyword}


def _problem(declared: Declarations, module: Any) -> Problem | None:
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
    schema = declared["params_schema"]
    if schema is not None and not isinstance(schema, Mapping):
        return "params_schema", (
            "params_schema must be a dict (a JSON Schema for the params), "
            f"not {type(schema).__name__}"
        )
    queue = declared["queue"]
    if queue is not None and not (isinstance(queue, str) and QUEUE_PATTERN.fullmatch(queue)):
        return "queue", (
            "queue must name a worker queue in lowercase letters, digits, '.', '_' or '-' "
            f"(at most 64), such as 'gpu', not {queue!r}"
        )
    if declared["retry"] is not None and retry_problem(declared["retry"]):
        return "retry", str(retry_problem(declared["retry"]))
    after = declared["quarantine_after"]
    if after is not None and quarantine_after_problem(after):
        return "quarantine_after", str(quarantine_after_problem(after))
    problem = mode_problem(declared["mode"], declared["resident"])
    if problem:
        return ("mode" if problem.startswith("mode") else "resident"), problem
    return (
        _requires_problem(declared["requires"])
        or _limits_problem(declared["limits"])
        or _schedule_problem(declared["schedule"])
    )


def _schedule_problem(schedule: Any) -> Problem | None:
    """The shape of a declared schedule; the portal checks the cron expression itself."""
    if schedule is None:
        return None
    example = "e.g. schedule = {'cron': '*/15 * * * *'} or {'every_s': 300}"
    if not isinstance(schedule, Mapping):
        return "schedule", f"schedule must be a dict ({example}), not {type(schedule).__name__}"
    unknown = sorted(str(key) for key in schedule if key not in SCHEDULE_KEYS)
    if unknown:
        return "schedule", (
            f"schedule has unknown key(s) {', '.join(unknown)} (known: {', '.join(SCHEDULE_KEYS)})"
        )
    if ("cron" in schedule) == ("every_s" in schedule):
        return "schedule", f"schedule must have exactly one of 'cron' and 'every_s' ({example})"
    cron = schedule.get("cron")
    if "cron" in schedule and (not isinstance(cron, str) or len(cron.split()) != 5):
        return "schedule", (
            f"schedule['cron'] must be a cron expression of 5 fields "
            f"(minute hour day month weekday), not {cron!r:.100}"
        )
    every = schedule.get("every_s")
    if "every_s" in schedule and (
        isinstance(every, bool) or not isinstance(every, int | float) or not every >= 1
    ):
        return "schedule", f"schedule['every_s'] must be a number of seconds >= 1, not {every!r}"
    if not isinstance(schedule.get("params", {}), Mapping):
        return "schedule", "schedule['params'] must be a dict of run() params"
    for key, allowed in (("overlap", OVERLAP_POLICIES), ("missed", MISSED_POLICIES)):
        if key in schedule and schedule[key] not in allowed:
            return "schedule", (
                f"schedule['{key}'] must be one of {', '.join(allowed)}, not {schedule[key]!r}"
            )
    return None


def _normalised_schedule(schedule: Mapping[str, Any]) -> dict[str, Any]:
    result = dict(schedule)
    result["params"] = dict(schedule.get("params", {}))
    result.setdefault("overlap", OVERLAP_POLICIES[0])
    result.setdefault("missed", MISSED_POLICIES[0])
    return result


def _requires_problem(requires: Any) -> Problem | None:
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


def _limits_problem(limits: Any) -> Problem | None:
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
