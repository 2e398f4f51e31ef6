"""The registry of record: plugins, their state-change history and their runs.

Nothing here changes state: every write goes through `plugins_app.services`.
"""

from __future__ import annotations

from django.db import models
from django.utils import timezone

from plugin_contract import MAX_NAME_CHARS, MAX_VERSION_CHARS
from plugins_app.policy_fields import PluginPolicyFields, RunAttemptFields, RunLifeFields


class PluginState(models.TextChoices):
    LOADED = "LOADED", "Loaded"
    INITIALIZED = "INITIALIZED", "Initialized"
    RUNNING = "RUNNING", "Running"
    FAILED = "FAILED", "Failed"
    UNAVAILABLE = "UNAVAILABLE", "Unavailable"


# States in which the plugin can serve calls; uptime counts from entering one of them.
AVAILABLE_STATES = frozenset({PluginState.LOADED, PluginState.INITIALIZED, PluginState.RUNNING})


class SourceKind(models.TextChoices):
    """What a plugin's source is (plugins_app.discovery finds each kind its own way)."""

    FILE = "file", "file"
    PACKAGE = "package", "package"
    ENTRY_POINT = "entry_point", "entry point"


class Plugin(PluginPolicyFields, models.Model):
    name = models.CharField(
        "name",
        max_length=MAX_NAME_CHARS,
        unique=True,
        help_text="Plugin name, unique across the portal.",
    )
    state = models.CharField(
        "state",
        max_length=16,
        choices=PluginState.choices,
        default=PluginState.LOADED,
        help_text="Registry state; changed only by the service functions.",
    )
    reason = models.TextField(
        "reason",
        blank=True,
        default="",
        help_text="Why the plugin is in this state: what failed, why, and what to do next.",
    )
    description = models.TextField("description", blank=True, default="")
    version = models.CharField("version", max_length=MAX_VERSION_CHARS, blank=True, default="")
    source = models.CharField(
        "source",
        max_length=1000,
        blank=True,
        default="",
        help_text="The plugin module's file or package path, or 'entry point: NAME = module "
        "(distribution)'; empty while a name conflict leaves no single source.",
    )
    source_kind = models.CharField(
        "source kind",
        max_length=12,
        choices=SourceKind.choices,
        blank=True,
        default="",
        help_text="Whether the source is a module file, a package directory or an entry point; "
        "empty when there is no single source.",
    )
    entry_point_name = models.CharField(
        "entry point name",
        max_length=1000,
        blank=True,
        default="",
        help_text="For a plugin from an entry point: its name in the 'portal.plugins' group, "
        "by which it is found again (the plugin may declare another name).",
    )
    conflicting_sources = models.JSONField(
        "conflicting sources",
        default=list,
        blank=True,
        help_text="Every source that provides this plugin's name while more than one does: "
        "none of them is used until all but one are gone.",
    )
    requirements = models.JSONField(
        "declared requirements",
        default=dict,
        blank=True,
        help_text="The plugin's `requires`: modules, gpu, files, env.",
    )
    limits = models.JSONField(
        "declared limits",
        default=dict,
        blank=True,
        help_text="The plugin's `limits`, overriding the sandbox defaults.",
    )
    run_params = models.JSONField(
        "run() parameters",
        null=True,
        blank=True,
        default=None,
        help_text="What run() takes, read from its signature at the last load: the accepted "
        "names, the required ones and whether it takes **params; params are checked against "
        "it before a run is queued. Null when unknown (not loaded yet, or no signature).",
    )
    params_schema = models.JSONField(
        "params schema",
        null=True,
        blank=True,
        default=None,
        help_text="The plugin's declared `params_schema` (a JSON Schema), checked at load; "
        "params are validated against it before a run is queued. Null when none is declared.",
    )
    load_failed = models.BooleanField(
        "last load failed",
        default=False,
        help_text="The plugin's last load broke (import, declarations, setup() or its "
        "process): a rerun would fail the same way, so the admin offers a reload instead.",
    )
    load_traceback = models.TextField(
        "load traceback",
        blank=True,
        default="",
        help_text="The traceback of the last load's import or setup(), when it raised; "
        "cleared by a load that succeeds.",
    )
    enabled = models.BooleanField(
        "enabled", default=True, help_text="A disabled plugin is refused for runs."
    )
    disabled_by = models.CharField("disabled by", max_length=200, blank=True, default="")
    disabled_at = models.DateTimeField("disabled at", null=True, blank=True)
    disabled_note = models.TextField("why disabled", blank=True, default="")
    state_changed_at = models.DateTimeField("state changed at", default=timezone.now)
    available_since = models.DateTimeField(
        "available since",
        null=True,
        blank=True,
        help_text="When the plugin last became available; null while FAILED or UNAVAILABLE.",
    )
    running_count = models.PositiveIntegerField(
        "runs in progress", default=0, help_text="RUNNING holds while this is above zero."
    )
    success_count = models.PositiveBigIntegerField("successful runs", default=0)
    error_count = models.PositiveBigIntegerField("failed runs", default=0)
    consecutive_failures = models.PositiveIntegerField("consecutive failures", default=0)
    last_run_at = models.DateTimeField("last run at", null=True, blank=True)
    last_success_at = models.DateTimeField("last success at", null=True, blank=True)
    last_error_at = models.DateTimeField("last error at", null=True, blank=True)
    last_duration_ms = models.FloatField("last run duration (ms)", null=True, blank=True)
    avg_duration_ms = models.FloatField(
        "average run duration (ms)",
        null=True,
        blank=True,
        help_text="Running mean over the timed runs since the counters were last reset.",
    )
    next_scheduled_at = models.DateTimeField(
        "next scheduled run",
        null=True,
        blank=True,
        help_text="The earliest next run of the plugin's enabled schedules (kept by "
        "plugins_app.schedules).",
    )
    timed_run_count = models.PositiveBigIntegerField(
        "timed runs",
        default=0,
        help_text="Finished runs with a duration since the last reset: what the average is over.",
    )
    declared_queue = models.CharField(
        "declared queue",
        max_length=64,
        blank=True,
        default="",
        help_text="The worker queue its module declares (queue = ...); empty: none declared.",
    )
    queue = models.CharField(
        "queue",
        max_length=64,
        blank=True,
        default="",
        help_text="Operator's override of the worker queue its runs go to (celery executor); "
        "empty: the declared queue, else 'gpu' when it requires a GPU, else 'default'.",
    )
    created_at = models.DateTimeField("registered at", auto_now_add=True)
    updated_at = models.DateTimeField("updated at", auto_now=True)

    class Meta:
        verbose_name = "plugin"
        verbose_name_plural = "plugins"
        ordering = ["name"]
        permissions = [
            ("run_plugin", "Can run, rerun and reload plugins"),
            ("operate_plugin", "Can disable, enable and reset counters of plugins"),
        ]
        indexes = [
            models.Index(fields=["state", "name"], name="plugin_state_name_idx"),
            models.Index(fields=["enabled", "state"], name="plugin_enabled_state_idx"),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def is_available(self) -> bool:
        return self.state in AVAILABLE_STATES

    def uptime_seconds(self, now=None) -> float | None:
        if not self.is_available or self.available_since is None:
            return None
        return max(0.0, ((now or timezone.now()) - self.available_since).total_seconds())


class EventKind(models.TextChoices):
    STATE_CHANGED = "state_changed", "State changed"
    DISABLED = "disabled", "Disabled"
    ENABLED = "enabled", "Enabled"
    COUNTERS_RESET = "counters_reset", "Counters reset"
    QUEUE_CHANGED = "queue_changed", "Queue changed"
    POLICY_CHANGED = "policy_changed", "Retry/quarantine policy changed"
    RETRY_SCHEDULED = "retry_scheduled", "Retry scheduled"
    QUARANTINED = "quarantined", "Quarantined"
    QUARANTINE_PROBE = "quarantine_probe", "Quarantine probe"
    QUARANTINE_LIFTED = "quarantine_lifted", "Quarantine lifted"
    QUARANTINE_EXTENDED = "quarantine_extended", "Quarantine extended"
    RUN_CANCELLED = "run_cancelled", "Run cancelled"


class PluginEvent(models.Model):
    """Append-only: one row per state change or operator action."""

    plugin = models.ForeignKey(
        Plugin, on_delete=models.CASCADE, related_name="events", verbose_name="plugin"
    )
    kind = models.CharField(
        "kind", max_length=20, choices=EventKind.choices, default=EventKind.STATE_CHANGED
    )
    from_state = models.CharField(
        "from state", max_length=16, choices=PluginState.choices, blank=True, default=""
    )
    to_state = models.CharField(
        "to state", max_length=16, choices=PluginState.choices, blank=True, default=""
    )
    reason = models.TextField("reason", blank=True, default="")
    actor = models.CharField(
        "actor",
        max_length=200,
        blank=True,
        default="",
        help_text="Who or what caused it: user:NAME, command:NAME, api:NAME, schedule, system.",
    )
    run = models.ForeignKey(
        "PluginRun",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        verbose_name="run",
        help_text="The run whose outcome caused this change, if any.",
    )
    created_at = models.DateTimeField("at", default=timezone.now)

    class Meta:
        verbose_name = "plugin event"
        verbose_name_plural = "plugin events"
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["plugin", "-created_at"], name="event_plugin_time_idx"),
            models.Index(fields=["-created_at"], name="event_time_idx"),
        ]

    def __str__(self) -> str:
        if self.kind == EventKind.STATE_CHANGED:
            return f"{self.plugin_id}: {self.from_state or '∅'} → {self.to_state}"
        return f"{self.plugin_id}: {self.get_kind_display()}"


class RunStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    TIMED_OUT = "timed_out", "Timed out"
    CRASHED = "crashed", "Crashed"
    INTERRUPTED = "interrupted", "Interrupted"
    CANCELLED = "cancelled", "Cancelled"  # stopped by an operator: not a plugin failure


FINISHED_RUN_STATUSES = frozenset(
    {
        RunStatus.SUCCEEDED,
        RunStatus.FAILED,
        RunStatus.TIMED_OUT,
        RunStatus.CRASHED,
        RunStatus.INTERRUPTED,
        RunStatus.CANCELLED,
    }
)


class RunOutcomeKind(models.TextChoices):
    """How a run ended: what the sandbox saw (sandbox.Outcome), or what the portal decided."""

    OK = "ok", "ok"
    ERROR = "error", "error"
    TIMEOUT = "timeout", "timeout"
    MEMORY = "memory", "memory"
    CRASHED = "crashed", "crashed"
    EXITED = "exited", "exited"
    OUTPUT_LIMIT = "output_limit", "output limit"
    UNSERIALISABLE = "unserialisable", "unserialisable"
    SANDBOX_FAILURE = "sandbox_failure", "sandbox failure"
    DISK_LIMIT = "disk_limit", "disk limit"
    # The portal's own: the sandbox was never called, or the run's process went away.
    INTERRUPTED = "interrupted", "interrupted (worker stopped or died)"
    CANCELLED = "cancelled", "cancelled (stopped by an operator; not counted)"
    REFUSED = "refused", "refused (disabled, quarantined or unavailable)"
    MISSING = "missing", "source missing"
    INVALID_DECLARATION = "invalid_declaration", "invalid declaration"


class PluginRun(RunAttemptFields, RunLifeFields, models.Model):
    plugin = models.ForeignKey(
        Plugin, on_delete=models.CASCADE, related_name="runs", verbose_name="plugin"
    )
    status = models.CharField(
        "status", max_length=12, choices=RunStatus.choices, default=RunStatus.QUEUED
    )
    outcome = models.CharField(
        "sandbox outcome",
        max_length=20,
        choices=RunOutcomeKind.choices,
        blank=True,
        default="",
        help_text="What the sandbox saw (ok, error, timeout, ...) or why the portal did not "
        "call it (refused: not counted; invalid declaration, source missing: counted); empty "
        "until the run ends.",
    )
    params = models.JSONField("params", default=dict, blank=True)
    result = models.JSONField("result", null=True, blank=True, help_text="Size-capped.")
    result_truncated = models.BooleanField("result truncated", default=False)
    error_type = models.CharField("error type", max_length=200, blank=True, default="")
    reason = models.TextField("reason", blank=True, default="")
    traceback = models.TextField("traceback", blank=True, default="")
    exit_code = models.IntegerField("exit code", null=True, blank=True)
    signal = models.CharField("signal", max_length=20, blank=True, default="")
    peak_rss_kb = models.PositiveBigIntegerField("peak memory (KiB)", null=True, blank=True)
    memory_mechanism = models.CharField(
        "memory limit mechanism",
        max_length=32,
        blank=True,
        default="",
        help_text="How limits.memory_mb was enforced: rss-sampling (the sandbox host read "
        "the process tree's resident memory from /proc); empty without a memory limit.",
    )
    environment = models.JSONField(
        "environment",
        default=dict,
        blank=True,
        help_text="What the run ran with: interpreter and version, platform, the plugin's code "
        "hash, the versions of the packages it imports, its declared files, a GPU.",
    )
    duration_ms = models.FloatField("duration (ms)", null=True, blank=True)
    stdout_tail = models.TextField("stdout (tail)", blank=True, default="")
    stderr_tail = models.TextField("stderr (tail)", blank=True, default="")
    warnings = models.JSONField(
        "warnings",
        default=list,
        blank=True,
        help_text="What an operator should know that did not fail the run: values changed "
        "so they could be stored, output the sandbox cut.",
    )
    actor = models.CharField(
        "triggered by",
        max_length=200,
        blank=True,
        default="",
        help_text="user:NAME, command:NAME, api:NAME, schedule, system.",
    )
    worker = models.CharField(
        "worker", max_length=200, blank=True, default="", help_text="host:pid that ran it."
    )
    queued_at = models.DateTimeField("queued at", default=timezone.now)
    started_at = models.DateTimeField("started at", null=True, blank=True)
    finished_at = models.DateTimeField("finished at", null=True, blank=True)
    heartbeat_at = models.DateTimeField(
        "heartbeat at",
        null=True,
        blank=True,
        help_text="Refreshed while running; a stale heartbeat means the worker died.",
    )

    class Meta:
        verbose_name = "plugin run"
        verbose_name_plural = "plugin runs"
        ordering = ["-queued_at", "-id"]
        indexes = [
            models.Index(fields=["plugin", "-queued_at"], name="run_plugin_time_idx"),
            models.Index(fields=["-queued_at"], name="run_time_idx"),
            models.Index(fields=["status", "heartbeat_at"], name="run_status_heartbeat_idx"),
            models.Index(fields=["status", "not_before"], name="run_status_not_before_idx"),
        ]

    def __str__(self) -> str:
        return f"Run #{self.pk} of plugin '{self.plugin.name}'"

    @property
    def is_finished(self) -> bool:
        return self.status in FINISHED_RUN_STATUSES


# The run duration histogram's buckets: the tally column counting the runs that took at most
# so many seconds, and that bound. Cumulative, as Prometheus reads them; changing them takes a
# migration, since the counts are kept in the database.
DURATION_BUCKETS: tuple[tuple[str, float], ...] = (
    ("le_10ms", 0.01),
    ("le_50ms", 0.05),
    ("le_100ms", 0.1),
    ("le_250ms", 0.25),
    ("le_500ms", 0.5),
    ("le_1s", 1.0),
    ("le_2_5s", 2.5),
    ("le_5s", 5.0),
    ("le_10s", 10.0),
    ("le_30s", 30.0),
    ("le_60s", 60.0),
    ("le_120s", 120.0),
    ("le_300s", 300.0),
)


def _bucket(label: str) -> models.PositiveBigIntegerField:
    return models.PositiveBigIntegerField(f"timed runs {label}", default=0)


class RunTally(models.Model):
    """Every finished run of a plugin with one outcome, since the plugin was registered.

    What /metrics publishes as counters and the duration histogram: only ever incremented, in
    the transaction that finishes the run (plugins_app.run_tallies), never reset by an operator
    nor lowered by pruning runs, so Prometheus can take rate() and increase() of it.
    """

    plugin = models.ForeignKey(
        Plugin, on_delete=models.CASCADE, related_name="run_tallies", verbose_name="plugin"
    )
    outcome = models.CharField(
        "outcome",
        max_length=20,
        help_text="'ok' for the runs that succeeded; for failures their outcome (error, "
        "timeout, memory, ...), or their status when the outcome is unknown.",
    )
    runs = models.PositiveBigIntegerField("finished runs", default=0)
    timed_runs = models.PositiveBigIntegerField(
        "timed runs", default=0, help_text="Those with a duration (not interrupted ones)."
    )
    duration_s = models.FloatField("total duration (s)", default=0.0)
    le_10ms = _bucket("≤ 10 ms")
    le_50ms = _bucket("≤ 50 ms")
    le_100ms = _bucket("≤ 100 ms")
    le_250ms = _bucket("≤ 250 ms")
    le_500ms = _bucket("≤ 500 ms")
    le_1s = _bucket("≤ 1 s")
    le_2_5s = _bucket("≤ 2.5 s")
    le_5s = _bucket("≤ 5 s")
    le_10s = _bucket("≤ 10 s")
    le_30s = _bucket("≤ 30 s")
    le_60s = _bucket("≤ 60 s")
    le_120s = _bucket("≤ 120 s")
    le_300s = _bucket("≤ 300 s")

    class Meta:
        verbose_name = "run tally"
        verbose_name_plural = "run tallies"
        constraints = [
            models.UniqueConstraint(
                fields=["plugin", "outcome"], name="run_tally_plugin_outcome_uniq"
            )
        ]

    def __str__(self) -> str:
        return f"{self.plugin_id} {self.outcome}: {self.runs}"


# Models of the feature packages: imported here so Django registers them with this app (the
# worker nodes of the celery executor live with the fleet code).
from plugins_app.fleet.models import LoadRequest, Worker  # noqa: E402, F401
from plugins_app.notifications.models import (  # noqa: E402, F401
    DeliveryStatus,
    Webhook,
    WebhookDelivery,
)
from plugins_app.schedules.models import Schedule, ScheduleFiring  # noqa: E402, F401
