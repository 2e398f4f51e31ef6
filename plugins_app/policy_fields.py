"""The registry columns of retries, quarantine and resident mode, as mixins of Plugin and
PluginRun.

Kept apart from models.py so that module stays one readable page; only the services
(services/retries.py, services/quarantine.py, services/policies.py) write them.
"""

from __future__ import annotations

from django.db import models


class PluginPolicyFields(models.Model):
    """A plugin's retry policy and quarantine threshold (declared, overridden) and its
    quarantine (circuit breaker) state."""

    retry_declared = models.JSONField(
        "declared retry policy",
        null=True,
        blank=True,
        default=None,
        help_text="The plugin's `retry` at its last load (max_attempts, backoff_s, "
        "max_backoff_s, on_error); null when it declares none (no retries).",
    )
    retry_override = models.JSONField(
        "retry policy override",
        null=True,
        blank=True,
        default=None,
        help_text="An operator's retry policy, used instead of the declared one; null: none.",
    )
    quarantine_after_declared = models.PositiveIntegerField(
        "declared quarantine threshold",
        null=True,
        blank=True,
        help_text="The plugin's `quarantine_after`; null when it declares none (default 5).",
    )
    quarantine_after_override = models.PositiveIntegerField(
        "quarantine threshold override",
        null=True,
        blank=True,
        help_text="An operator's threshold (0 turns quarantine off); null: none.",
    )
    next_retry_at = models.DateTimeField(
        "next retry at",
        null=True,
        blank=True,
        help_text="When the plugin's earliest queued retry may start; null: none queued.",
    )
    quarantined_at = models.DateTimeField("quarantined at", null=True, blank=True)
    quarantined_until = models.DateTimeField(
        "quarantined until",
        null=True,
        blank=True,
        help_text="Runs are refused until then; after it one probe run is let through. "
        "Null while the plugin is not quarantined.",
    )
    quarantine_reason = models.TextField("quarantine reason", blank=True, default="")
    quarantine_cooldown_s = models.FloatField(
        "quarantine cooldown (s)",
        null=True,
        blank=True,
        help_text="The current cooldown; a failed probe doubles it, up to the cap.",
    )
    resident = models.JSONField(
        "resident mode",
        null=True,
        blank=True,
        default=None,
        help_text="The plugin's `resident` knobs when it declares mode = 'resident' (its runs "
        "go to long-lived processes that ran setup() once); null: a fresh process per run.",
    )
    quarantine_probe_run = models.ForeignKey(
        "plugins_app.PluginRun",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        verbose_name="probe run",
        help_text="The one run let through after the cooldown (half-open), while it goes.",
    )

    class Meta:
        abstract = True


class RunAttemptFields(models.Model):
    """Which attempt a run is, of which first run, and when it may start."""

    attempt = models.PositiveIntegerField(
        "attempt", default=1, help_text="1 for a first run; 2 and up for its retries."
    )
    retry_of = models.ForeignKey(
        "self",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="retries",
        verbose_name="retry of",
        help_text="The first run of which this run is a retry.",
    )
    not_before = models.DateTimeField(
        "not before",
        null=True,
        blank=True,
        help_text="A retry waits in the queue until then (its backoff); null: at once.",
    )
    dispatched_at = models.DateTimeField(
        "sent to its queue at",
        null=True,
        blank=True,
        help_text="When a worker node sent this due retry to its queue: the one claim that "
        "keeps other nodes from sending it again; null: not sent yet.",
    )
    mode = models.CharField(  # beside the attempt: how this attempt's call ran
        "mode",
        max_length=16,
        blank=True,
        default="",
        help_text="How the sandbox ran the call: fork (a fresh process) or resident (a "
        "long-lived process of the plugin); empty when it was never called.",
    )

    class Meta:
        abstract = True


class RunLifeFields(models.Model):
    """How long a running run may stay silent before it counts as lost, and who cancelled it."""

    stale_after = models.DurationField(
        "stale limit",
        null=True,
        blank=True,
        help_text="PORTAL_RUN_STALE_AFTER_S of the process that started it: every reconciler "
        "judges the run by this, not by its own setting; null for runs started before it was "
        "recorded (the reconciler's setting applies).",
    )
    cancelled_by = models.CharField(
        "cancelled by",
        max_length=200,
        blank=True,
        default="",
        help_text="Who cancelled the run (user:NAME, api:NAME); empty unless it was cancelled.",
    )

    class Meta:
        abstract = True
