"""The history lists: every run and every event, read-only, built for a million rows."""

from __future__ import annotations

import json

from django.contrib import admin, messages
from django.utils.html import format_html

from plugins_app import selectors, services
from plugins_app.admin import display as show
from plugins_app.admin.display import (
    RunColumns,
    event_transition,
    fieldset_fields,
    plugin_link,
    run_link,
)
from plugins_app.admin.large_tables import LargeHistoryAdmin, PluginNameFilter
from plugins_app.errors import PluginError
from plugins_app.models import PluginEvent, PluginRun, RunOutcomeKind


class SandboxOutcomeFilter(admin.SimpleListFilter):
    """The field's choices: the stock filter would read DISTINCT outcome over the runs table."""

    title = "sandbox outcome"
    parameter_name = "outcome"

    def lookups(self, request, model_admin):
        return RunOutcomeKind.choices

    def queryset(self, request, queryset):
        return queryset.filter(outcome=self.value()) if self.value() else queryset


@admin.register(PluginRun)
class PluginRunAdmin(RunColumns, LargeHistoryAdmin):
    # Status and outcome share a cell, and the time is compact: all ten facts fit at 1280 px.
    list_display = (
        "id",
        "plugin_name",
        "status_and_outcome",
        "error_type",
        "reason_short",
        "duration",
        "peak_memory",
        "queued",
        "actor",
    )
    list_display_links = ("id",)
    actions = ("cancel_selected",)  # the one change a run takes: stopping it
    list_filter = ("status", SandboxOutcomeFilter, PluginNameFilter)
    date_hierarchy = "queued_at"
    search_fields = ("reason", "error_type")
    search_help_text = "Search the error type and reason of failed runs."
    # Newest by last sign of life: (status, heartbeat_at) is indexed, so SQLite reads only the
    # failed runs and sorts the matches, instead of walking all runs in queued_at order.
    search_recency = ("-heartbeat_at", "-pk")
    # Only columns with an index behind them: sorting a million rows by duration would not be.
    sortable_by = ("id", "queued")
    fieldsets = (
        (
            "Run",
            {
                "fields": (
                    "plugin_name",
                    "status_badge",
                    "outcome",
                    "actor",
                    "attempt",
                    "retry_of_link",
                    "not_before",
                    "worker",
                    "queued_at",
                    "started_at",
                    "finished_at",
                    "heartbeat_at",
                    "duration",
                    "peak_memory",
                    "warnings_text",
                )
            },
        ),
        (
            "Failure",
            {"fields": ("error_type", "reason_full", "traceback_text", "exit_code", "signal")},
        ),
        (
            "Environment",
            {"fields": ("mode", "memory_mechanism", "environment_changes", "environment_json")},
        ),
        (
            "Input and output",
            {
                "fields": (
                    "params_json",
                    "result_json",
                    "result_truncated",
                    "stdout_text",
                    "stderr_text",
                )
            },
        ),
    )
    readonly_fields = fieldset_fields(fieldsets)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        run = self.get_object(request, object_id)
        if run is not None:
            title = f"Run #{run.pk} of plugin '{run.plugin.name}': {run.get_status_display()}"
            extra_context = {**(extra_context or {}), "subtitle": title}
        return super().change_view(request, object_id, form_url, extra_context)

    def has_run_permission(self, request) -> bool:
        return request.user.has_perm("plugins_app.run_plugin")

    @admin.action(description="Cancel selected runs (queued or running)", permissions=["run"])
    def cancel_selected(self, request, queryset):
        actor = f"user:{request.user.get_username()}"
        for run_id, name in queryset.order_by("-pk").values_list("pk", "plugin__name"):
            try:
                services.run_cancel(run_id=run_id, actor=actor)
            except PluginError as error:
                message = f"Could not cancel run #{run_id}: {error}"
                self.message_user(request, message, messages.ERROR)
                continue
            self.message_user(request, f"Cancelled run #{run_id} of '{name}'.", messages.SUCCESS)

    def get_search_results(self, request, queryset, search_term):
        # Only failed runs carry an error: the status filter keeps a search off all the others.
        if search_term.strip():
            queryset = queryset.filter(status__in=selectors.FAILED_RUN_STATUSES)
        return super().get_search_results(request, queryset, search_term)

    @admin.display(description="plugin", ordering="plugin__name")
    def plugin_name(self, obj: PluginRun):
        return plugin_link(obj.plugin_id, obj.plugin.name)

    @admin.display(description="retry of")
    def retry_of_link(self, obj: PluginRun):
        return run_link(obj.retry_of_id) if obj.retry_of_id else "— (a first run)"

    @admin.display(description="status", ordering="status")
    def status_and_outcome(self, obj: PluginRun):
        badge = self.status_badge(obj)
        if not obj.outcome:
            return badge
        return format_html(
            '{}<div class="run-outcome" title="sandbox outcome">{}</div>',
            badge,
            obj.get_outcome_display(),
        )

    @admin.display(description="queued at", ordering="queued_at")
    def queued(self, obj: PluginRun):
        return show.timestamp(obj.queued_at)

    @admin.display(description="reason")
    def reason_short(self, obj: PluginRun):
        return show.short_text(obj.reason, 60)

    @admin.display(description="reason")
    def reason_full(self, obj: PluginRun):
        return show.preformatted(obj.reason)

    @admin.display(description="changed since the last successful run")
    def environment_changes(self, obj: PluginRun):
        return show.preformatted("\n".join(selectors.environment_changes(obj)) or "nothing")

    @admin.display(description="environment")
    def environment_json(self, obj: PluginRun):
        return show.preformatted(json.dumps(obj.environment, indent=2, sort_keys=True))

    @admin.display(description="peak memory", ordering="peak_rss_kb")
    def peak_memory(self, obj: PluginRun):
        return show.kibibytes(obj.peak_rss_kb)

    @admin.display(description="warnings")
    def warnings_text(self, obj: PluginRun):
        return show.preformatted("\n".join(obj.warnings or ()))

    @admin.display(description="traceback")
    def traceback_text(self, obj: PluginRun):
        return show.preformatted(obj.traceback)

    @admin.display(description="params")
    def params_json(self, obj: PluginRun):
        return show.pretty_json(obj.params)

    @admin.display(description="result")
    def result_json(self, obj: PluginRun):
        return show.pretty_json(obj.result)

    @admin.display(description="stdout (tail)")
    def stdout_text(self, obj: PluginRun):
        return show.preformatted(obj.stdout_tail)

    @admin.display(description="stderr (tail)")
    def stderr_text(self, obj: PluginRun):
        return show.preformatted(obj.stderr_tail)


@admin.register(PluginEvent)
class PluginEventAdmin(LargeHistoryAdmin):
    list_display = (
        "created_at",
        "plugin_name",
        "kind",
        "transition",
        "reason_short",
        "actor",
        "caused_by",
    )
    list_display_links = ("created_at",)
    list_filter = ("kind", "to_state", PluginNameFilter)
    date_hierarchy = "created_at"
    search_fields = ("reason", "actor")
    sortable_by = ("created_at",)
    fields = (
        "created_at",
        "plugin_name",
        "kind",
        "transition",
        "reason",
        "actor",
        "caused_by",
    )
    readonly_fields = fields

    @admin.display(description="plugin", ordering="plugin__name")
    def plugin_name(self, obj: PluginEvent):
        return plugin_link(obj.plugin_id, obj.plugin.name)

    @admin.display(description="change")
    def transition(self, obj: PluginEvent):
        return event_transition(obj)

    @admin.display(description="reason")
    def reason_short(self, obj: PluginEvent):
        return show.short_text(obj.reason, 60)

    @admin.display(description="run")
    def caused_by(self, obj: PluginEvent):
        return run_link(obj.run_id)
