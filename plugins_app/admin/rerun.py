"""Reruns on a plugin's page: offered only where they can work, and with params of the
operator's choosing (a form prefilled with the last run's)."""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html

from plugins_app import pipeline, reasons, reasons_policy, selectors
from plugins_app.errors import PluginError
from plugins_app.models import Plugin, PluginState
from plugins_app.services.quarantine import refusal as quarantine_refusal

PARAMS_EXAMPLE = '{"name": "Ann"}'


def rerun_refusal(plugin: Plugin, *, with_reason: bool = True) -> str | None:
    """Why a rerun of the plugin would be refused or fail before run() (disabled, UNAVAILABLE,
    its last load failed, or quarantined), or None when a rerun can work. `with_reason=False`
    leaves out the plugin's reason (and shortens a quarantine's), for the plugin's page, which
    shows it just below."""
    reason = plugin.reason if with_reason else ""
    if not plugin.enabled:
        return reasons.plugin_disabled(
            plugin=plugin.name, by=plugin.disabled_by, note=plugin.disabled_note
        )
    if plugin.state == PluginState.UNAVAILABLE:
        return reasons.plugin_unavailable_refusal(plugin=plugin.name, reason=reason)
    if plugin.load_failed:
        return reasons.rerun_needs_reload(plugin=plugin.name, reason=reason)
    refusal = quarantine_refusal(plugin, now=timezone.now())
    if refusal and not with_reason and plugin.quarantined_until is not None:
        return reasons_policy.rerun_while_quarantined(
            plugin=plugin.name, until=plugin.quarantined_until
        )
    return refusal


class RerunParamsForm(forms.Form):
    params = forms.CharField(
        label="Params",
        required=False,
        widget=forms.Textarea(attrs={"rows": 8, "cols": 70, "spellcheck": "false"}),
        help_text=f"A JSON object of run()'s keyword arguments, such as {PARAMS_EXAMPLE}; "
        "prefilled with the last run's.",
    )

    def clean_params(self) -> dict[str, Any]:
        text = self.cleaned_data["params"].strip() or "{}"
        try:
            value = json.loads(text)
        except ValueError as error:
            raise forms.ValidationError(
                f"Params must be a JSON object, such as {PARAMS_EXAMPLE}: this is not JSON "
                f"({error})"
            ) from None
        if not isinstance(value, dict):
            raise forms.ValidationError(
                f"Params must be a JSON object, such as {PARAMS_EXAMPLE}, not a JSON "
                f"{_json_kind(value)}"
            )
        return value


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    return {list: "array", str: "string", bool: "boolean"}.get(type(value), "number")


def queued_message(run_pk: int, name: str):
    url = reverse("admin:plugins_app_pluginrun_change", args=[run_pk])
    return format_html(
        "Queued <a href=\"{}\">run #{}</a> of '{}': it runs in the background; "
        "reload this page to see its outcome.",
        url,
        run_pk,
        name,
    )


class RerunWithParams(admin.ModelAdmin):
    """The plugin admin's rerun page: `<id>/rerun/`, for users who may run plugins."""

    def has_run_permission(self, request) -> bool:
        return request.user.has_perm("plugins_app.run_plugin")

    def get_urls(self):
        view = self.admin_site.admin_view(self.rerun_view)
        extra = [path("<path:object_id>/rerun/", view, name="plugins_app_plugin_rerun")]
        return extra + super().get_urls()

    def rerun_view(self, request: HttpRequest, object_id: str):
        if not self.has_run_permission(request):
            raise PermissionDenied
        if not object_id.isdigit():
            raise Http404(f"No plugin with id {object_id!r}")
        plugin = get_object_or_404(Plugin, pk=object_id)
        back = reverse("admin:plugins_app_plugin_change", args=[plugin.pk])
        refusal = rerun_refusal(plugin)
        if refusal:
            self.message_user(
                request, f"Could not rerun '{plugin.name}': {refusal}", messages.ERROR
            )
            return HttpResponseRedirect(back)
        if request.method == "POST":
            form = RerunParamsForm(request.POST)
            if form.is_valid():
                actor = f"user:{request.user.get_username()}"
                try:
                    run = pipeline.submit_run(
                        name=plugin.name, params=form.cleaned_data["params"], actor=actor
                    )
                except PluginError as error:
                    form.add_error("params", str(error))
                else:
                    message = queued_message(run.pk, plugin.name)
                    self.message_user(request, message, messages.SUCCESS)
                    return HttpResponseRedirect(back)
        else:
            last = selectors.plugin_last_run_params(name=plugin.name)
            form = RerunParamsForm(
                initial={"params": json.dumps(last, indent=2, sort_keys=True, ensure_ascii=False)}
            )
        opts = self.model._meta
        context = {
            **self.admin_site.each_context(request),
            "title": f"Rerun plugin '{plugin.name}' with params",
            "opts": opts,
            "original": plugin,
            "form": form,
            "media": self.media,
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, "admin/plugins_app/plugin/rerun_form.html", context)
