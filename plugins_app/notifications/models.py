"""Webhooks and their deliveries (the outbox, and the log of what was sent)."""

from __future__ import annotations

import secrets

from django.db import models
from django.utils import timezone


def new_secret() -> str:
    return secrets.token_urlsafe(32)


class Webhook(models.Model):
    name = models.CharField("name", max_length=100)
    url = models.URLField(
        "URL", max_length=1000, help_text="Where the portal POSTs the JSON body (http or https)."
    )
    plugin = models.ForeignKey(
        "plugins_app.Plugin",
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="webhooks",
        verbose_name="plugin",
        help_text="Only this plugin's changes; empty for every plugin.",
    )
    events = models.JSONField(
        "events",
        default=list,
        blank=True,
        help_text="The event kinds to send; empty for all of them.",
    )
    secret = models.CharField(
        "signing secret",
        max_length=200,
        default=new_secret,
        help_text="The key of the X-Portal-Signature HMAC; give it to the receiver "
        "(docs/notifications.md says how it verifies).",
    )
    enabled = models.BooleanField("enabled", default=True)
    created_at = models.DateTimeField("created at", default=timezone.now, editable=False)

    class Meta:
        verbose_name = "webhook"
        verbose_name_plural = "webhooks"
        ordering = ["name", "id"]

    def __str__(self) -> str:
        return self.name


class DeliveryStatus(models.TextChoices):
    PENDING = "pending", "pending"
    DELIVERED = "delivered", "delivered"
    FAILED = "failed", "gave up"


class WebhookDelivery(models.Model):
    """One event for one webhook: written in the transaction of the change, then sent."""

    webhook = models.ForeignKey(
        Webhook, on_delete=models.CASCADE, related_name="deliveries", verbose_name="webhook"
    )
    plugin_name = models.CharField("plugin", max_length=200)
    event = models.CharField("event", max_length=40)
    body = models.TextField("body", help_text="The exact JSON sent (and signed).")
    status = models.CharField(
        "status", max_length=10, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING
    )
    attempts = models.PositiveIntegerField("attempts", default=0)
    next_attempt_at = models.DateTimeField("next attempt at", default=timezone.now)
    claimed_until = models.DateTimeField(
        "claimed until",
        null=True,
        blank=True,
        help_text="A deliverer is sending it; another may take it after this time.",
    )
    last_status_code = models.IntegerField("last HTTP status", null=True, blank=True)
    last_error = models.TextField("last error", blank=True, default="")
    log = models.JSONField(
        "attempt log", default=list, blank=True, help_text="Each attempt: when, status, error."
    )
    created_at = models.DateTimeField("created at", default=timezone.now)
    delivered_at = models.DateTimeField("delivered at", null=True, blank=True)

    class Meta:
        verbose_name = "webhook delivery"
        verbose_name_plural = "webhook deliveries"
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["status", "next_attempt_at"], name="delivery_due_idx"),
        ]

    def __str__(self) -> str:
        return f"'{self.event}' of plugin '{self.plugin_name}' to {self.webhook}"
