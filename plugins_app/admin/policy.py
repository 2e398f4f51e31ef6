"""Retries and quarantine on the plugin's page: the policy in force, the quarantine's status and
the next retry, and the operator's actions (set the policy, lift or extend a quarantine), each
through a service that records an event."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.template.response import TemplateResponse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString

from plugin_contract.policies import MAX_ATTEMPTS_LIMIT, MAX_BACKOFF_LIMIT_S
from plugins_app import services
from plugins_app.admin import display as show
from plugins_app.errors import PluginError
from plugins_app.models import Plugin, PluginRun, RunStatus
from plugins_app.retry_policy import effective_quarantine_after, effective_retry, quarantine_state

if TYPE_CHECKING:
    from django.contrib.admin.options import _FieldOpts

POLICY_FIELDSET: tuple[str, _FieldOpts] = (
    "Retries and quarantine",
    {"fields": ("retry_policy_shown", "quarantine_after_shown", "quarantine_shown", "next_retry")},
)
POLICY_ACTIONS = ("set_policy_selected", "lift_quarantine_selected", "extend_quarantine_selected")


def _seconds(value: float) -> str:
    return show.human_duration(value) if value >= 1 else f"{value:g}s"


def retry_words(plugin: Plugin) -> str:
    policy = effective_retry(plugin.retry_declared, plugin.retry_override)
    source = (
        "operator's override"
        if plugin.retry_override is not None
        else "declared"
        if plugin.retry_declared is not None
        else "default"
    )
    if policy["max_attempts"] == 1:
        return f"no retry ({source})"
    also = "; errors raised by the plugin too" if policy["on_error"] else ""
    return (
        f"up to {policy['max_attempts']} attempts, waiting {_seconds(policy['backoff_s'])} "
        f"doubling up to {_seconds(policy['max_backoff_s'])}, with jitter{also} ({source})"
    )


def quarantine_marker(plugin: Plugin) -> SafeString:
    """A badge beside the state in the plugins list while the plugin is quarantined."""
    if plugin.quarantined_until is None:
        return SafeString("")
    return format_html(
        ' <span class="quarantine-badge" title="{}">quarantined</span>', plugin.quarantine_reason
    )


class NoteForm(forms.Form):
    note = forms.CharField(
        label="Note",
        required=False,
        max_length=1000,
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
        help_text="Why: recorded in the plugin's event timeline with your user name.",
    )


class PolicyForm(NoteForm):
    max_attempts = forms.IntegerField(
        label="Max attempts",
        required=False,
        min_value=1,
        max_value=MAX_ATTEMPTS_LIMIT,
        help_text="Attempts in all, the first run included (1: no retry). Empty: use what the "
        "plugin declares.",
    )
    backoff_s = forms.FloatField(
        label="Backoff (s)",
        required=False,
        min_value=0.001,
        max_value=MAX_BACKOFF_LIMIT_S,
        help_text="Wait before the second attempt; doubled for each one after it.",
    )
    max_backoff_s = forms.FloatField(
        label="Max backoff (s)",
        required=False,
        min_value=0.001,
        max_value=MAX_BACKOFF_LIMIT_S,
        help_text="The longest wait between two attempts.",
    )
    on_error = forms.BooleanField(
        label="Retry errors raised by the plugin",
        required=False,
        help_text="Timeouts, crashes, memory, interruptions and sandbox failures are always "
        "retried; exceptions only with this.",
    )
    quarantine_after = forms.IntegerField(
        label="Quarantine after",
        required=False,
        min_value=0,
        help_text="Consecutive failures that quarantine the plugin (0: never). Empty: what the "
        "plugin declares (default 5).",
    )
    field_order = ("max_attempts", "backoff_s", "max_backoff_s", "on_error", "quarantine_after")

    def retry(self) -> dict[str, Any] | None:
        data = self.cleaned_data
        if data["max_attempts"] is None:
            return None
        keys = ("max_attempts", "backoff_s", "max_backoff_s", "on_error")
        return {key: data[key] for key in keys if data[key] is not None}


class PolicyAdmin(admin.ModelAdmin):
    """Columns and actions of retries and quarantine, mixed into the plugin admin."""

    if TYPE_CHECKING:  # the plugin admin's helpers, which these actions share

        def _with_note(self, request, queryset, action, verb, done_verb, service) -> Any: ...

        def _back_to_detail(self, request) -> Any: ...

    @admin.display(description="retry policy")
    def retry_policy_shown(self, obj: Plugin):
        return retry_words(obj)

    @admin.display(description="quarantine after")
    def quarantine_after_shown(self, obj: Plugin):
        after = effective_quarantine_after(
            obj.quarantine_after_declared, obj.quarantine_after_override
        )
        words = "never (turned off)" if after == 0 else f"{after} consecutive failures"
        overridden = " (operator's override)" if obj.quarantine_after_override is not None else ""
        return words + overridden

    @admin.display(description="quarantine")
    def quarantine_shown(self, obj: Plugin):
        state = quarantine_state(until=obj.quarantined_until, now=timezone.now())
        if state == "closed":
            return "not quarantined"
        until = obj.quarantined_until
        assert until is not None
        if state == "open":
            status = format_html(
                '<strong class="quarantine-open">open</strong>: runs refused until {}',
                timezone.localtime(until).strftime("%Y-%m-%d %H:%M:%S %Z"),
            )
        elif obj.quarantine_probe_run_id is not None:
            status = format_html(
                '<strong class="quarantine-open">half-open</strong>: probe run #{} let through',
                obj.quarantine_probe_run_id,
            )
        else:
            status = format_html(
                '<strong class="quarantine-open">half-open</strong>: the cooldown is over; the '
                "next run is the probe"
            )
        return format_html("{}<br>{}", status, show.short_text(obj.quarantine_reason, 400))

    @admin.display(description="next retry")
    def next_retry(self, obj: Plugin):
        if obj.next_retry_at is None:
            return "none queued"
        waiting = PluginRun.objects.filter(
            plugin=obj, status=RunStatus.QUEUED, not_before__isnull=False
        ).order_by("not_before")
        run = waiting.only("pk", "attempt", "not_before").first()
        when = timezone.localtime(obj.next_retry_at).strftime("%Y-%m-%d %H:%M:%S %Z")
        if run is None:
            return when
        return format_html("{} (attempt {}) at {}", show.run_link(run.pk), run.attempt, when)

    # ----------------------------------------------------------------- actions

    @admin.action(
        description="Set retry and quarantine policy of selected…", permissions=["operate"]
    )
    def set_policy_selected(self, request, queryset):
        form = PolicyForm(request.POST if request.POST.get("_confirm") else None)
        if form.is_valid():
            done = self._each(
                request,
                queryset,
                "set the policy of",
                lambda name, actor: services.plugin_set_policy(
                    name=name,
                    retry=form.retry(),
                    quarantine_after=form.cleaned_data["quarantine_after"],
                    note=form.cleaned_data["note"].strip(),
                    actor=actor,
                ),
            )
            if done:
                self.message_user(request, f"Policy set for {', '.join(done)}.", messages.SUCCESS)
            return self._back_to_detail(request)
        if not request.POST.get("_confirm"):
            form = PolicyForm(initial=self._initial(queryset))
        return self._form_page(request, queryset, form, "set_policy_selected", "Set the policy of")

    @admin.action(description="Lift quarantine of selected (with a note)", permissions=["operate"])
    def lift_quarantine_selected(self, request, queryset):
        return self._with_note(
            request,
            queryset,
            "lift_quarantine_selected",
            "Lift the quarantine of",
            "Lifted the quarantine of",
            services.quarantine_lift,
        )

    @admin.action(
        description="Extend quarantine of selected by one cooldown (with a note)",
        permissions=["operate"],
    )
    def extend_quarantine_selected(self, request, queryset):
        return self._with_note(
            request,
            queryset,
            "extend_quarantine_selected",
            "Extend the quarantine of",
            "Extended the quarantine of",
            services.quarantine_extend,
        )

    def _initial(self, queryset) -> dict[str, Any]:
        plugins = list(queryset[:2])
        if len(plugins) != 1:
            return {}
        plugin = plugins[0]
        initial: dict[str, Any] = dict(plugin.retry_override or {})
        initial["quarantine_after"] = plugin.quarantine_after_override
        return initial

    def _each(self, request, queryset, verb: str, call) -> list[str]:
        actor = f"user:{request.user.get_username()}"
        done = []
        for name in queryset.order_by("name").values_list("name", flat=True):
            try:
                call(name, actor)
            except PluginError as error:
                self.message_user(request, f"Could not {verb} '{name}': {error}", messages.ERROR)
                continue
            done.append(name)
        return done

    def _form_page(self, request, queryset, form, action: str, verb: str):
        plugins = list(queryset.order_by("name").only("pk", "name", "state", "reason", "enabled"))
        context = {
            **self.admin_site.each_context(request),
            "title": f"{verb} {len(plugins)} plugin{'' if len(plugins) == 1 else 's'}?",
            "opts": self.opts,
            "verb": verb,
            "action": action,
            "plugins": plugins[:50],
            "more": max(0, len(plugins) - 50),
            "selected": request.POST.getlist(helpers.ACTION_CHECKBOX_NAME),
            "select_across": request.POST.get("select_across", "0"),
            "from_detail": request.POST.get("_from_detail", ""),
            "form": form,
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            "media": self.media,
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, "admin/plugins_app/plugin/action_note.html", context)
