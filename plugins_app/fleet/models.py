"""The Worker record: one row per worker node (`manage.py runworker`), kept by its heartbeat."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db import models
from django.utils import timezone


class Worker(models.Model):
    name = models.CharField("name", max_length=200, unique=True)
    host = models.CharField("host", max_length=255)
    pid = models.PositiveIntegerField("process id")
    queues = models.JSONField("queues", default=list, help_text="The queues it consumes.")
    concurrency = models.PositiveIntegerField("concurrency", default=1)
    started_at = models.DateTimeField("started at", default=timezone.now)
    heartbeat_at = models.DateTimeField("heartbeat at", default=timezone.now)
    stopped_at = models.DateTimeField(
        "stopped at", null=True, blank=True, help_text="Set when it shut down gracefully."
    )
    runs_in_flight = models.PositiveIntegerField("runs in flight", default=0)
    python_version = models.CharField("Python version", max_length=40, blank=True, default="")
    platform = models.CharField("platform", max_length=200, blank=True, default="")
    gpu = models.BooleanField("GPU present", default=False)

    class Meta:
        verbose_name = "worker"
        verbose_name_plural = "workers"
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def is_alive(self, now=None) -> bool:
        """Running and heard from within the stale limit of runs."""
        stale_after = timedelta(seconds=settings.PORTAL_RUN_STALE_AFTER_S)
        return (
            self.stopped_at is None and self.heartbeat_at >= (now or timezone.now()) - stale_after
        )

    @property
    def status(self) -> str:
        if self.stopped_at is not None:
            return "stopped"
        return "alive" if self.is_alive() else "lost"


class LoadRequest(models.Model):
    """A load of named plugins asked of a worker node: the message carries its id, the node
    writes the outcome here (the reports, or the refusal) and the asker reads it back."""

    names = models.JSONField("plugins", default=list)
    actor = models.CharField("asked by", max_length=200, blank=True, default="")
    queue = models.CharField("queue", max_length=64)
    created_at = models.DateTimeField("asked at", default=timezone.now)
    finished_at = models.DateTimeField("finished at", null=True, blank=True)
    outcome = models.JSONField(
        "outcome", null=True, blank=True, help_text="{reports: [...]} or {error, message}."
    )
    attempts = models.PositiveIntegerField(
        "deliveries",
        default=0,
        help_text="Deliveries to a node so far; one that lost its node is not answered.",
    )
    forwarded_from = models.ForeignKey(
        "self",
        verbose_name="forwarded from",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="forwards",
        help_text="The load whose node found the plugin declares this queue and sent it here.",
    )

    class Meta:
        verbose_name = "load request"
        verbose_name_plural = "load requests"

    def __str__(self) -> str:
        return f"Load of {', '.join(self.names)} on queue '{self.queue}'"
