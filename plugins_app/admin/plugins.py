"""The plugins page: what is broken and why, and the one-click fixes (rerun, reload, disable,
enable, reset counters), each an action that calls the pipeline or a service."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponseRedirect
from django.urls import reverse
from django.utils.html import format_html

from plugins_app import executor, pipeline, reasons, selectors, services
from plugins_app.admin import display as show
from plugins_app.admin.display import (
    ADMIN_CSS,
    RunColumns,
    event_transition,
    fieldset_fields,
    history_url,
    run_link,
)
from plugins_app.admin.fleet import QueueOverride
from plugins_app.admin.policy import (
    POLICY_ACTIONS,
    POLICY_FIELDSET,
    NoteForm,
    PolicyAdmin,
    quarantine_marker,
)
from plugins_app.admin.rerun import RerunWithParams, queued_message, rerun_refusal
from plugins_app.errors import PluginError
from plugins_app.models import Plugin, PluginEvent, PluginRun, PluginState

# Runs and events shown on a plugin's page; the full history is one link away.
LATEST_RUNS = 10
LATEST_EVENTS = 15


def actor_of(request: HttpRequest) -> str:
    return f"user:{request.user.get_username()}"


def listed(names: list[str], limit: int = 10) -> str:
    shown = ", ".join(names[:limit])
    return f"{shown} and {len(names) - limit} more" if len(names) > limit else shown


def plural(count: int, word: str = "plugin") -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


class ProblemFilter(admin.SimpleListFilter):
    """Derived health: what needs an operator (FAILED, UNAVAILABLE or disabled) and the rest."""

    title = "health"
    parameter_name = "health"

    def lookups(self, request, model_admin):
        return (
            ("problems", "Needs attention (failed, unavailable or disabled)"),
            ("healthy", "Healthy"),
        )

    def queryset(self, request, queryset):
        if self.value() == "problems":
            return queryset.filter(selectors.plugin_problems_q())
        if self.value() == "healthy":
            return queryset.exclude(selectors.plugin_problems_q())
        return queryset


class LatestRowsFormSet(forms.BaseInlineFormSet):
    """Only the newest `limit` rows: a plugin with a million runs still opens at once."""

    limit = 10

    def get_queryset(self):
        if not hasattr(self, "_latest"):
            self._latest = list(super().get_queryset()[: self.limit])
        return self._latest


class ReadOnlyInline(admin.TabularInline):
    extra = 0
    max_num = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class LatestRunsInline(RunColumns, ReadOnlyInline):
    model = PluginRun
    verbose_name = "run"
    verbose_name_plural = f"latest runs (newest {LATEST_RUNS})"
    formset = type("LatestRunsFormSet", (LatestRowsFormSet,), {"limit": LATEST_RUNS})
    fields = ("run", "status_badge", "outcome", "queued_at", "duration", "actor", "reason_short")
    readonly_fields = fields

    @admin.display(description="run")
    def run(self, obj: PluginRun):
        return run_link(obj.pk)

    @admin.display(description="reason")
    def reason_short(self, obj: PluginRun):
        return show.short_text(obj.reason)


class EventTimelineInline(ReadOnlyInline):
    model = PluginEvent
    fk_name = "plugin"
    verbose_name = "event"
    verbose_name_plural = f"event timeline (newest {LATEST_EVENTS})"
    formset = type("LatestEventsFormSet", (LatestRowsFormSet,), {"limit": LATEST_EVENTS})
    fields = ("created_at", "kind", "transition", "event_reason", "actor", "caused_by")
    readonly_fields = fields

    @admin.display(description="change")
    def transition(self, obj: PluginEvent):
        return event_transition(obj)

    @admin.display(description="reason")
    def event_reason(self, obj: PluginEvent):
        return obj.reason or "—"

    @admin.display(description="run")
    def caused_by(self, obj: PluginEvent):
        return run_link(obj.run_id)


@admin.register(Plugin)
class PluginAdmin(PolicyAdmin, QueueOverride, RerunWithParams):
    list_display = (
        "name",
        "state_badge",
        "reason_short",
        "success_count",
        "error_count",
        "consecutive_failures_display",
        "uptime",
        "last_run",
        "enabled",
    )
    list_display_links = ("name",)
    list_filter = (ProblemFilter, "state", "enabled")
    search_fields = ("name", "reason")
    list_per_page = 100
    show_facets = admin.ShowFacets.NEVER
    actions = (
        "rerun_selected",
        "reload_selected",
        "disable_selected",
        "enable_selected",
        "reset_counters_selected",
        *POLICY_ACTIONS,
    )
    change_form_template = "admin/plugins_app/plugin/change_form.html"
    inlines = (LatestRunsInline, EventTimelineInline)
    fieldsets = (
        (
            "Status",
            {
                "fields": (
                    "state_badge",
                    "reason_full",
                    "load_traceback_text",
                    "enabled",
                    "disabled_by",
                    "disabled_at",
                    "disabled_note",
                    "state_changed_at",
                    "uptime",
                )
            },
        ),
        (
            "Runs",
            {
                "fields": (
                    "all_runs",
                    "latest_failed_run",
                    "success_count",
                    "error_count",
                    "consecutive_failures",
                    "running_count",
                    "last_run_at",
                    "last_success_at",
                    "last_error_at",
                    "last_duration",
                    "avg_duration",
                )
            },
        ),
        POLICY_FIELDSET,
        (
            "Plugin",
            {
                "fields": (
                    "name",
                    "description",
                    "version",
                    "source",
                    "source_kind",
                    "entry_point_name",
                    "conflicting_sources_list",
                    "requirements_json",
                    "limits_json",
                    "run_params_shown",
                    "params_schema_json",
                    "queue_shown",
                    "created_at",
                    "updated_at",
                )
            },
        ),
    )
    readonly_fields = fieldset_fields(fieldsets)

    class Media:
        css = ADMIN_CSS

    def get_queryset(self, request):
        return selectors.with_latest_failure(selectors.plugin_list_problems_first())

    def changelist_view(self, request, extra_context=None):
        executor.sweep_if_due()  # after a restart, runs of a dead process must not show RUNNING
        pipeline.resume_background_runs()  # and due retries start, though nobody submits a run
        return super().changelist_view(request, extra_context)

    def get_ordering(self, request):
        return ("problem_rank", "name")

    # Nobody edits a plugin row by hand: state, reason and counters move only via services.
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def has_operate_permission(self, request) -> bool:
        return request.user.has_perm("plugins_app.operate_plugin")

    def change_view(self, request, object_id, form_url="", extra_context=None):
        extra_context = {
            **(extra_context or {}),
            "can_run": self.has_run_permission(request),
            "rerun_refusal": self._refusal_of(object_id),
            "can_operate": self.has_operate_permission(request),
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
        }
        return super().change_view(request, object_id, form_url, extra_context)

    def _refusal_of(self, object_id: str) -> str | None:
        plugin = Plugin.objects.filter(pk=object_id).first() if object_id.isdigit() else None
        return rerun_refusal(plugin, with_reason=False) if plugin is not None else None

    # ----------------------------------------------------------------- columns

    @admin.display(description="state", ordering="problem_rank")
    def state_badge(self, obj: Plugin):
        return show.state_badge(obj.state, obj.get_state_display()) + quarantine_marker(obj)

    @admin.display(description="reason", ordering="reason")
    def reason_short(self, obj: Plugin):
        return show.short_text(self._shown_reason(obj))

    @admin.display(description="reason")
    def reason_full(self, obj: Plugin):
        return show.preformatted(self._shown_reason(obj))

    def _shown_reason(self, obj: Plugin) -> str:
        """The plugin's reason; for one reloaded after a failed run (ready, with consecutive
        failures), that it reloaded fine but its last run failed, and why."""
        ready = obj.state in (PluginState.LOADED, PluginState.INITIALIZED)
        last_reason = getattr(obj, "latest_failed_reason", None)
        if obj.reason or not ready or not obj.consecutive_failures or last_reason is None:
            return obj.reason
        return reasons.reloaded_after_failed_run(
            plugin=obj.name, failures=obj.consecutive_failures, last_reason=last_reason
        )

    @admin.display(description="load traceback")
    def load_traceback_text(self, obj: Plugin):
        return show.preformatted(obj.load_traceback)

    @admin.display(description="latest failed run")
    def latest_failed_run(self, obj: Plugin):
        run_id = getattr(obj, "latest_failed_run_id", None)
        if run_id is None:
            run = selectors.plugin_latest_failed_run(plugin_id=obj.pk)
            if run is None:
                return "none"
            run_id = run.pk
        return run_link(run_id)

    @admin.display(description="consecutive failures", ordering="consecutive_failures")
    def consecutive_failures_display(self, obj: Plugin):
        if obj.consecutive_failures:
            count = obj.consecutive_failures
            return format_html('<strong class="counter-alert">{}</strong>', count)
        return 0

    @admin.display(description="uptime", ordering="available_since")
    def uptime(self, obj: Plugin):
        return show.human_duration(obj.uptime_seconds())

    @admin.display(description="last run", ordering="last_run_at")
    def last_run(self, obj: Plugin):
        return show.age(obj.last_run_at)

    @admin.display(description="last run duration")
    def last_duration(self, obj: Plugin):
        return show.milliseconds(obj.last_duration_ms)

    @admin.display(description="average run duration")
    def avg_duration(self, obj: Plugin):
        return show.milliseconds(obj.avg_duration_ms)

    @admin.display(description="history")
    def all_runs(self, obj: Plugin):
        return format_html(
            '<a href="{}">All runs of {}</a> · <a href="{}">all events</a>',
            history_url("pluginrun", obj.name),
            obj.name,
            history_url("pluginevent", obj.name),
        )

    @admin.display(description="conflicting sources")
    def conflicting_sources_list(self, obj: Plugin):
        return show.one_per_line(obj.conflicting_sources)

    @admin.display(description="declared requirements")
    def requirements_json(self, obj: Plugin):
        return show.pretty_json(obj.requirements)

    @admin.display(description="declared limits")
    def limits_json(self, obj: Plugin):
        return show.pretty_json(obj.limits)

    @admin.display(description="run() accepts")
    def run_params_shown(self, obj: Plugin):
        return show.run_params(obj.run_params)

    @admin.display(description="params schema")
    def params_schema_json(self, obj: Plugin):
        if obj.params_schema is None:
            return "none declared (params are checked against run()'s signature only)"
        return show.pretty_json(obj.params_schema)

    # ----------------------------------------------------------------- actions

    @admin.action(
        description="Rerun selected plugins (queued, runs in the background)", permissions=["run"]
    )
    def rerun_selected(self, request, queryset):
        actor = actor_of(request)
        for plugin in queryset.order_by("name"):
            name = plugin.name
            refusal = rerun_refusal(plugin)  # not queued: it would be refused or fail to load
            if refusal:
                self.message_user(request, f"Could not rerun '{name}': {refusal}", messages.ERROR)
                continue
            params = selectors.plugin_last_run_params(name=name)
            try:
                run = pipeline.submit_run(name=name, params=params, actor=actor)
            except PluginError as error:
                self.message_user(request, f"Could not rerun '{name}': {error}", messages.ERROR)
                continue
            self.message_user(request, queued_message(run.pk, name), messages.SUCCESS)
        return self._back_to_detail(request)

    @admin.action(
        description="Reload selected plugins (re-check their environment)", permissions=["run"]
    )
    def reload_selected(self, request, queryset):
        # Plugins with runs in progress are refused (as reload_plugin does); the rest are
        # reloaded together: one discovery, a few sandboxed loads at a time.
        pipeline.reconcile_interrupted()  # runs of a killed process are not "in progress"
        busy = dict(queryset.filter(running_count__gt=0).values_list("name", "running_count"))
        for name, running in sorted(busy.items()):
            why = reasons.reload_while_running(plugin=name, running=running)
            self.message_user(request, f"Could not reload '{name}': {why}", messages.ERROR)
        names = [name for name in self._names(queryset) if name not in busy]
        if names:
            try:
                pipeline.load_plugins(names=names, actor=actor_of(request))
            except PluginError as error:
                self.message_user(request, f"Could not reload: {error}", messages.ERROR)
                return self._back_to_detail(request)
        for plugin in queryset.filter(name__in=names).order_by("name"):
            self._report_reload(request, plugin)
        return self._back_to_detail(request)

    def _report_reload(self, request, plugin: Plugin) -> None:
        if plugin.is_available:
            self.message_user(
                request, f"Reloaded '{plugin.name}': it is {plugin.state} now.", messages.SUCCESS
            )
        else:
            self.message_user(
                request,
                f"Reloaded '{plugin.name}': it is still {plugin.state}: {plugin.reason}",
                messages.ERROR,
            )

    @admin.action(description="Disable selected plugins (with a note)", permissions=["operate"])
    def disable_selected(self, request, queryset):
        return self._with_note(
            request, queryset, "disable_selected", "Disable", "Disabled", services.plugin_disable
        )

    @admin.action(description="Enable selected plugins (with a note)", permissions=["operate"])
    def enable_selected(self, request, queryset):
        return self._with_note(
            request, queryset, "enable_selected", "Enable", "Enabled", services.plugin_enable
        )

    @admin.action(description="Reset counters of selected plugins", permissions=["operate"])
    def reset_counters_selected(self, request, queryset):
        return self._with_note(
            request,
            queryset,
            "reset_counters_selected",
            "Reset the counters of",
            "Reset the counters of",
            services.plugin_reset_counters,
        )

    def _names(self, queryset: QuerySet[Plugin]) -> list[str]:
        return list(queryset.order_by("name").values_list("name", flat=True))

    def _with_note(self, request, queryset, action: str, verb: str, done_verb: str, service):
        """Ask for a note on an intermediate page, then call the service for each plugin."""
        form = NoteForm(request.POST if request.POST.get("_confirm") else None)
        if form.is_valid():
            note = form.cleaned_data["note"].strip()
            done = []
            for name in self._names(queryset):
                try:
                    service(name=name, note=note, actor=actor_of(request))
                except PluginError as error:
                    self.message_user(
                        request, f"Could not {verb.lower()} '{name}': {error}", messages.ERROR
                    )
                    continue
                done.append(name)
            if done:
                why = f" Note: {note}" if note else ""
                self.message_user(
                    request,
                    f"{done_verb} {plural(len(done))}: {listed(done)}.{why}",
                    messages.SUCCESS,
                )
            return self._back_to_detail(request)
        return self._form_page(request, queryset, form, action, verb)

    def _back_to_detail(self, request):
        """Actions started from a plugin's page return there; from the list, to the list."""
        pk = request.POST.get("_from_detail", "")
        if pk.isdigit() and pk in request.POST.getlist(helpers.ACTION_CHECKBOX_NAME):
            return HttpResponseRedirect(reverse("admin:plugins_app_plugin_change", args=[pk]))
        return None
