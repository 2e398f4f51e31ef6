"""Admin pages of webhooks (configured here) and their deliveries (read-only log)."""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.contrib import admin
from django.utils.html import format_html, format_html_join

from plugins_app.admin import display as show
from plugins_app.notifications.events import EVENT_KINDS
from plugins_app.notifications.models import Webhook, WebhookDelivery
from plugins_app.schedules.admin import PluginByName


class WebhookForm(forms.ModelForm):
    url = forms.URLField(
        label="URL",
        max_length=1000,
        assume_scheme="https",
        widget=forms.URLInput(attrs={"class": "vURLField", "size": 80}),
        help_text="Where the portal POSTs the JSON body (http or https).",
    )
    events = forms.MultipleChoiceField(
        choices=(),
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="Leave all unticked to receive every kind.",
    )

    class Meta:
        model = Webhook
        fields = ("name", "url", "plugin", "events", "enabled")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Read at form time: a feature may have registered a kind since import.
        events = self.fields["events"]
        assert isinstance(events, forms.MultipleChoiceField)
        events.choices = [(kind, kind) for kind in EVENT_KINDS]
        events.help_text = "Leave all unticked to receive every kind. " + "; ".join(
            f"{kind}: {description}" for kind, description in EVENT_KINDS.items()
        )


@admin.register(Webhook)
class WebhookAdmin(PluginByName, admin.ModelAdmin):
    form = WebhookForm
    raw_id_fields = ("plugin",)
    list_display = ("name", "url", "scope", "events_shown", "enabled", "created_at")
    list_filter = ("enabled",)
    list_select_related = ("plugin",)
    search_fields = ("name", "url")
    readonly_fields = ("secret_shown",)
    fields = ("name", "url", "plugin", "events", "enabled", "secret_shown")

    @admin.display(description="plugins")
    def scope(self, webhook: Webhook) -> str:
        return webhook.plugin.name if webhook.plugin is not None else "all plugins"

    @admin.display(description="events")
    def events_shown(self, webhook: Webhook) -> str:
        return ", ".join(webhook.events) if webhook.events else "all"

    @admin.display(description="signing secret")
    def secret_shown(self, webhook: Webhook):
        if not webhook.pk:
            return "generated when you save"
        return format_html(
            "<code>{}</code><br>The receiver checks the X-Portal-Signature header with it "
            "(docs/notifications.md).",
            webhook.secret,
        )


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "webhook",
        "plugin_name",
        "event",
        "status",
        "attempts",
        "last_status_code",
        "error_short",
        "created",
    )
    list_filter = ("status", "event")
    list_select_related = ("webhook",)
    search_fields = ("plugin_name",)
    fields = (
        "webhook",
        "plugin_name",
        "event",
        "status",
        "attempts",
        "next_attempt_at",
        "delivered_at",
        "last_status_code",
        "last_error",
        "attempt_log",
        "body_shown",
        "created_at",
    )
    readonly_fields = fields

    @admin.display(description="last error")
    def error_short(self, delivery: WebhookDelivery):
        return show.short_text(delivery.last_error) if delivery.last_error else "—"

    @admin.display(description="created", ordering="created_at")
    def created(self, delivery: WebhookDelivery):
        return show.age(delivery.created_at)

    @admin.display(description="attempts, newest last")
    def attempt_log(self, delivery: WebhookDelivery):
        if not delivery.log:
            return "none yet"
        return format_html_join(
            "",
            "<p>{} · {} · {} ms{}</p>",
            (
                (
                    entry.get("at", "")[:19].replace("T", " "),
                    f"HTTP {entry['status_code']}" if entry.get("status_code") else "no answer",
                    entry.get("ms", "?"),
                    f" · {entry['error']}" if entry.get("error") else "",
                )
                for entry in delivery.log
            ),
        )

    @admin.display(description="body sent")
    def body_shown(self, delivery: WebhookDelivery):
        try:
            return show.pretty_json(json.loads(delivery.body))
        except ValueError:
            return show.preformatted(delivery.body)

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
