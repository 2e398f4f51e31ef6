"""Schedules and the record of each occurrence a scheduler acted on."""

from __future__ import annotations

from django.db import models
from django.db.models import Q
from django.utils import timezone

from plugin_contract import MISSED_POLICIES, OVERLAP_POLICIES


class Overlap(models.TextChoices):
    """What an occurrence does while the schedule's previous run is still going."""

    SKIP = "skip", "skip the occurrence"
    QUEUE_ONE = "queue_one", "queue one run for when it ends"
    ALLOW = "allow", "run alongside"


class Missed(models.TextChoices):
    """What a scheduler does with the occurrences that passed while none was running."""

    RUN_ONCE = "run_once", "run once for all of them"
    SKIP = "skip", "skip them"


assert tuple(Overlap.values) == OVERLAP_POLICIES and tuple(Missed.values) == MISSED_POLICIES


class Origin(models.TextChoices):
    DECLARED = "declared", "declared by the plugin"
    ADMIN = "admin", "made in the admin"


class FiringOutcome(models.TextChoices):
    FIRED = "fired", "run queued"
    REFUSED = "refused", "refused (not counted)"
    SKIPPED = "skipped", "skipped: the last run was still going"
    DEFERRED = "deferred", "waiting for the last run to end"
    MISSED = "missed", "missed while no scheduler ran"


DECLARED_NAME = "declared"  # the name of the schedule a plugin module declares


class Schedule(models.Model):
    plugin = models.ForeignKey(
        "plugins_app.Plugin",
        on_delete=models.CASCADE,
        related_name="schedules",
        verbose_name="plugin",
    )
    name = models.CharField(
        "name",
        max_length=100,
        help_text="Unique per plugin; the one a plugin module declares is called 'declared'.",
    )
    origin = models.CharField(
        "origin", max_length=10, choices=Origin.choices, default=Origin.ADMIN, editable=False
    )
    cron = models.CharField(
        "cron expression",
        max_length=200,
        blank=True,
        default="",
        help_text="Five fields, minute hour day month weekday, in UTC: '*/15 * * * *' is "
        "every quarter hour. Leave empty to run at an interval instead.",
    )
    every_s = models.FloatField(
        "every (seconds)",
        null=True,
        blank=True,
        help_text="Run every so many seconds (at least 1); leave empty for a cron expression.",
    )
    params = models.JSONField(
        "params", default=dict, blank=True, help_text="The params of each run, a JSON object."
    )
    overlap = models.CharField(
        "while the last run is going",
        max_length=10,
        choices=Overlap.choices,
        default=Overlap.SKIP,
    )
    missed = models.CharField(
        "missed occurrences", max_length=10, choices=Missed.choices, default=Missed.RUN_ONCE
    )
    enabled = models.BooleanField("enabled", default=True)
    next_run_at = models.DateTimeField(
        "next run at", null=True, blank=True, help_text="The next occurrence; null when disabled."
    )
    last_occurrence_at = models.DateTimeField("last occurrence", null=True, blank=True)
    last_outcome = models.CharField(
        "last outcome", max_length=10, choices=FiringOutcome.choices, blank=True, default=""
    )
    last_note = models.TextField(
        "last note",
        blank=True,
        default="",
        help_text="Why the last occurrence did not run, and what to do.",
    )
    last_run = models.ForeignKey(
        "plugins_app.PluginRun",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        verbose_name="last run",
    )
    created_at = models.DateTimeField("created at", default=timezone.now, editable=False)

    class Meta:
        verbose_name = "schedule"
        verbose_name_plural = "schedules"
        ordering = ["plugin__name", "name"]
        constraints = [
            models.UniqueConstraint(fields=["plugin", "name"], name="schedule_plugin_name_uniq"),
            models.CheckConstraint(
                condition=(Q(cron="") & Q(every_s__isnull=False))
                | (~Q(cron="") & Q(every_s__isnull=True)),
                name="schedule_cron_xor_interval",
            ),
        ]
        indexes = [models.Index(fields=["enabled", "next_run_at"], name="schedule_due_idx")]

    def __str__(self) -> str:
        return f"{self.plugin} / {self.name}"

    @property
    def timing(self) -> str:
        return self.cron or f"every {self.every_s:g} s"


class ScheduleFiring(models.Model):
    """Append-only: one row per occurrence a scheduler acted on; the unique pair is the
    guarantee that, whatever the number of schedulers, an occurrence is acted on once."""

    schedule = models.ForeignKey(
        Schedule, on_delete=models.CASCADE, related_name="firings", verbose_name="schedule"
    )
    occurrence = models.DateTimeField("occurrence")
    outcome = models.CharField("outcome", max_length=10, choices=FiringOutcome.choices)
    run = models.ForeignKey(
        "plugins_app.PluginRun",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        verbose_name="run",
    )
    note = models.TextField("note", blank=True, default="")
    fired_by = models.CharField("scheduler", max_length=200, blank=True, default="")
    created_at = models.DateTimeField("at", default=timezone.now)

    class Meta:
        verbose_name = "schedule firing"
        verbose_name_plural = "schedule firings"
        ordering = ["-occurrence", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["schedule", "occurrence"], name="firing_schedule_occurrence_uniq"
            )
        ]
        indexes = [models.Index(fields=["outcome"], name="firing_outcome_idx")]

    def __str__(self) -> str:
        return f"{self.schedule} at {self.occurrence:%Y-%m-%d %H:%M:%S}: {self.outcome}"
