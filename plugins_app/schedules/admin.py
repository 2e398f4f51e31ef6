"""Admin pages of schedules: each schedule's timing, policies, next and last run; the
firings (one per occurrence acted on) read-only beneath it."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.utils.html import format_html

from plugins_app.admin import display as show
from plugins_app.admin.plugins import ReadOnlyInline
from plugins_app.models import Plugin
from plugins_app.schedules import timing
from plugins_app.schedules.models import Origin, Schedule, ScheduleFiring
from plugins_app.schedules.writes import schedule_save, schedules_delete

TIMING_FIELDS = ("cron", "every_s", "enabled")


class ScheduleForm(forms.ModelForm):
    class Meta:
        model = Schedule
        fields = ("plugin", "name", "cron", "every_s", "params", "overlap", "missed", "enabled")

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if "cron" not in self.fields:  # a declared schedule: its module owns the timing
            return data
        cron = (data.get("cron") or "").strip()
        every_s = data.get("every_s")
        if bool(cron) == (every_s is not None):
            raise forms.ValidationError(
                "Give either a cron expression or an interval in seconds, not both and not "
                "neither (e.g. cron '*/15 * * * *', or every 900 seconds)."
            )
        if cron:
            problem = timing.cron_problem(cron)
            if problem:
                self.add_error("cron", problem)
            data["cron"] = cron
        elif every_s is not None:
            problem = timing.interval_problem(every_s)
            if problem:
                self.add_error("every_s", problem)
        if not isinstance(data.get("params", {}), dict):
            self.add_error("params", 'params must be a JSON object, e.g. {"name": "Ann"}')
        return data


class PluginByName:
    """The plugin field of a form over plugins by name (the plugins page's own ordering is an
    annotation its list adds, unknown to a plain queryset); give it raw_id_fields = ("plugin",)
    too, since a select of 10,000 plugins would be of no use."""

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.name == "plugin":
            kwargs["queryset"] = Plugin.objects.order_by("name")
        return super().formfield_for_foreignkey(db_field, request, **kwargs)  # type: ignore[misc]


class FiringInline(ReadOnlyInline):
    model = ScheduleFiring
    fields = ("occurrence_shown", "outcome", "run_shown", "note", "fired_by")
    readonly_fields = fields
    ordering = ("-occurrence",)
    verbose_name_plural = "latest firings"

    def get_queryset(self, request):
        latest = super().get_queryset(request).order_by("-occurrence")
        ids = list(latest.values_list("pk", flat=True)[:20])
        return super().get_queryset(request).filter(pk__in=ids).select_related("run")

    @admin.display(description="occurrence")
    def occurrence_shown(self, firing: ScheduleFiring):
        return show.timestamp(firing.occurrence)

    @admin.display(description="run")
    def run_shown(self, firing: ScheduleFiring):
        return show.run_link(firing.run_id)


@admin.register(Schedule)
class ScheduleAdmin(PluginByName, admin.ModelAdmin):
    form = ScheduleForm
    raw_id_fields = ("plugin",)
    list_display = (
        "name",
        "plugin",
        "timing_shown",
        "overlap",
        "missed",
        "enabled",
        "next_run",
        "last_run_shown",
    )
    list_display_links = ("name",)
    list_filter = ("enabled", "origin", "overlap")
    list_select_related = ("plugin", "last_run")
    search_fields = ("name", "plugin__name")
    readonly_fields = ("origin", "next_run", "last_note", "last_run_shown")
    fieldsets = (
        (None, {"fields": ("plugin", "name", "origin", "enabled")}),
        ("When", {"fields": ("cron", "every_s", "overlap", "missed")}),
        ("What", {"fields": ("params",)}),
        (
            "Last and next",
            {"fields": ("next_run", "last_run_shown", "last_note")},
        ),
    )
    inlines = [FiringInline]

    @admin.display(description="timing")
    def timing_shown(self, schedule: Schedule) -> str:
        return schedule.timing

    @admin.display(description="next run", ordering="next_run_at")
    def next_run(self, schedule: Schedule):
        if schedule.next_run_at is None:
            return "— (disabled)" if not schedule.enabled else "—"
        return show.timestamp(schedule.next_run_at)

    @admin.display(description="last run")
    def last_run_shown(self, schedule: Schedule):
        if schedule.last_occurrence_at is None:
            return "never"
        outcome = schedule.get_last_outcome_display()
        link = show.run_link(schedule.last_run_id) if schedule.last_run_id else ""
        return format_html("{} · {} {}", show.timestamp(schedule.last_occurrence_at), outcome, link)

    def get_readonly_fields(self, request, obj=None):
        fields = tuple(super().get_readonly_fields(request, obj))
        if obj is not None and obj.origin == Origin.DECLARED:
            # The plugin's module owns it: a reload would undo an edit; pausing is allowed.
            return (*fields, "plugin", "name", "cron", "every_s", "params", "overlap", "missed")
        if obj is not None:
            return (*fields, "plugin")
        return fields

    def save_model(self, request, obj, form, change):
        changed = not change or any(field in form.changed_data for field in TIMING_FIELDS)
        schedule_save(obj, timing_changed=changed)

    def delete_model(self, request, obj):
        schedules_delete([obj])

    def delete_queryset(self, request, queryset):
        schedules_delete(list(queryset))
