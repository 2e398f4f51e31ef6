"""The plugin contract, declared once for both sides of the Django boundary.

The plugin-side loader (``plugin_contract.loader``, run only in sandbox processes) checks a
plugin's declarations against these and writes its load report as a ``LoadReport``; the
portal (discovery, the registry's columns, the checks of the loader's report in
plugins_app/untrusted.py) uses the same values and types. Standard library only and
import-light: the sandbox host imports it with the loader, and this file imports nothing of
the loader.
"""

import re
from typing import Any, Literal, NotRequired, TypedDict, get_args

# Names become module names in the plugin host and parts of the portal's URLs.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
MAX_NAME_CHARS = 200  # Plugin.name's max_length
MAX_VERSION_CHARS = 100  # Plugin.version's max_length
REQUIRE_KEYS = ("modules", "gpu", "files", "env")  # what `requires` may declare
# A declared `schedule`: exactly one of cron / every_s, and optional params and policies.
SCHEDULE_KEYS = ("cron", "every_s", "params", "overlap", "missed")
OVERLAP_POLICIES = ("skip", "queue_one", "allow")  # when the schedule's last run is still going
MISSED_POLICIES = ("run_once", "skip")  # when occurrences passed while no scheduler ran
# A worker queue a plugin may declare (`queue = "gpu"`); also a broker routing key.
QUEUE_PATTERN = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")

# The loader's report (plugin_contract.loader.load_plugin): its statuses, stages, the kinds
# of missing item, and every key the portal reads.
LoadStatus = Literal["ok", "unavailable", "failed"]
LoadStage = Literal["import", "declarations", "requires", "setup"]
MissingKind = Literal["module", "library", "entry_point", "source", "env", "gpu", "file"]
LOAD_STATUSES: tuple[str, ...] = get_args(LoadStatus)
LOAD_STAGES: tuple[str, ...] = get_args(LoadStage)
MISSING_KINDS: tuple[str, ...] = get_args(MissingKind)


class MissingItem(TypedDict):
    """One thing the plugin's process lacks."""

    kind: MissingKind
    item: str  # the module, library, variable, file (as declared), ...
    path: NotRequired[str]  # a file: where it was looked for
    problem: NotRequired[str]  # a file: unset_variable, not_found, empty or unreadable
    checked: NotRequired[str]  # a GPU: what was checked, in words


class RunParams(TypedDict):
    """What run() takes as keyword arguments, read from its signature at load."""

    accepted: list[str]  # the names a caller may pass
    required: list[str]  # those without a default (positional-only ones: never satisfiable)
    var_keyword: bool  # run(**params): any name is accepted


class Declarations(TypedDict):
    """What a plugin module declares, with defaults (normalised once they are checked)."""

    name: Any  # a plugin name (checked against NAME_PATTERN)
    version: Any  # a string once checked (a number is taken as its text)
    description: Any  # a string once checked (the module's docstring by default)
    requires: Any  # {"modules": [...], "files": [...], "env": [...], "gpu": bool} once checked
    limits: Any  # {limit name: number} once checked
    params_schema: Any  # a JSON Schema (dict) for the params, or None; the portal validates it
    retry: Any  # plugin_contract.policies.RetryPolicy once checked, or None (no retry)
    quarantine_after: Any  # consecutive failures before quarantine (0: never), or None (default)
    run_params: Any  # RunParams once checked; None when run() has no readable signature
    schedule: Any  # {"cron" or "every_s", "params", "overlap", "missed"} or None
    queue: Any  # the worker queue its runs go to (QUEUE_PATTERN), or None for the default
    mode: Any  # "fork" (the default) or "resident" (plugin_contract/resident.py)
    resident: Any  # ResidentPolicy with every knob once checked; None in fork mode


class LoadReport(TypedDict):
    """How loading one plugin went, as the loader returns it (JSON data)."""

    status: LoadStatus
    stage: LoadStage  # how far the load got: where it failed, or "setup" when it loaded
    name: str | None  # the declared name; the discovered one when the module did not load
    version: str
    description: str
    requires: dict[str, Any]
    limits: dict[str, Any]
    has_setup: bool
    params_schema: NotRequired[dict[str, Any] | None]  # as declared (older hosts: absent)
    run_params: NotRequired[RunParams | None]  # run()'s signature (older hosts: absent)
    queue: NotRequired[str | None]  # as declared (older hosts: absent)
    retry: NotRequired[dict[str, Any] | None]  # as declared and normalised (older hosts: absent)
    quarantine_after: NotRequired[int | None]  # as declared (older hosts: absent)
    schedule: NotRequired[dict[str, Any] | None]  # as declared, shape-checked (older: absent)
    mode: NotRequired[str]  # as declared: "fork" or "resident" (older hosts: absent)
    resident: NotRequired[dict[str, Any] | None]  # its knobs; None: fork (older: absent)
    missing: list[MissingItem]  # status "unavailable": what the process lacks
    error_type: str | None  # status "failed": the exception's type, or InvalidDeclaration
    message: str | None
    where: str | None  # "file:line in function": the plugin's own line, when it has one
    traceback: str | None
    field: str | None  # stage "declarations": the declaration that is wrong


REPORT_KEYS = frozenset(
    {
        "status",
        "stage",
        "name",
        "version",
        "description",
        "requires",
        "limits",
        "missing",
        "error_type",
        "message",
        "where",
    }
)

__all__ = [
    "LOAD_STAGES",
    "LOAD_STATUSES",
    "MAX_NAME_CHARS",
    "MAX_VERSION_CHARS",
    "MISSED_POLICIES",
    "MISSING_KINDS",
    "NAME_PATTERN",
    "OVERLAP_POLICIES",
    "QUEUE_PATTERN",
    "REPORT_KEYS",
    "REQUIRE_KEYS",
    "SCHEDULE_KEYS",
    "Declarations",
    "LoadReport",
    "LoadStage",
    "LoadStatus",
    "MissingItem",
    "MissingKind",
    "RunParams",
]
