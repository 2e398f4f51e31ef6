"""The fleet in the admin: worker nodes (read-only, as they registered) and a plugin's queue,
which operators with the operate permission override through the service (an event)."""

from __future__ import annotations

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from plugins_app import services
from plugins_app.fleet.queues import (
    DEFAULT_QUEUE,
    GPU_QUEUE,
    is_queue_name,
    live_workers_per_queue,
    queue_of,
)
from plugins_app.models import Plugin, Worker
from plugins_app.reasons import no_live_worker


@admin.register(Worker)
class WorkerAdmin(admin.ModelAdmin):
    list_display = (
        "name",
        "status",
        "queues_shown",
        "runs_in_flight",
        "heartbeat_at",
        "host",
        "pid",
        "python_version",
        "gpu",
    )
    ordering = ("name",)
    search_fields = ("name", "host")
    readonly_fields = (
        "name",
        "status",
        "host",
        "pid",
        "queues_shown",
        "concurrency",
        "runs_in_flight",
        "started_at",
        "heartbeat_at",
        "stopped_at",
        "python_version",
        "platform",
        "gpu",
    )
    fields = readonly_fields

    @admin.display(description="queues")
    def queues_shown(self, worker: Worker) -> str:
        return ", ".join(worker.queues or [])

    # Nodes register themselves (manage.py runworker); nobody writes these rows by hand.
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class QueueForm(forms.Form):
    queue = forms.CharField(
        label="Queue",
        required=False,
        max_length=64,
        help_text="Lowercase letters, digits, '.', '_' or '-', such as gpu; empty for the "
        "plugin's default.",
    )

    def clean_queue(self) -> str:
        queue = self.cleaned_data["queue"].strip()
        if queue and not is_queue_name(queue):
            raise forms.ValidationError(
                f"{queue!r} is not a queue name: use lowercase letters, digits, '.', '_' or "
                "'-' (at most 64), such as gpu"
            )
        return queue


class QueueOverride(admin.ModelAdmin):
    """The plugin admin's queue page, `<id>/queue/`, and the queue shown on its page."""

    @admin.display(description="queue")
    def queue_shown(self, plugin: Plugin) -> str:
        queue = queue_of(plugin)
        link = reverse("admin:plugins_app_plugin_queue", args=[plugin.pk])
        # Only worker nodes serve queues: the thread executor runs every plugin in-process.
        if not _on_worker_nodes() or live_workers_per_queue()[queue]:
            return format_html('{} (<a href="{}">change</a>)', queue, link)
        reason = no_live_worker(plugin=plugin.name, queue=queue)
        return format_html('{} (<a href="{}">change</a>): {}', queue, link, reason)

    def get_urls(self):
        view = self.admin_site.admin_view(self.queue_view)
        extra = [path("<path:object_id>/queue/", view, name="plugins_app_plugin_queue")]
        return extra + super().get_urls()

    def queue_view(self, request: HttpRequest, object_id: str):
        if not request.user.has_perm("plugins_app.operate_plugin"):
            raise PermissionDenied
        if not object_id.isdigit():
            raise Http404(f"No plugin with id {object_id!r}")
        plugin = get_object_or_404(Plugin, pk=object_id)
        back = reverse("admin:plugins_app_plugin_change", args=[plugin.pk])
        form = QueueForm(request.POST or None, initial={"queue": plugin.queue})
        if request.method == "POST" and form.is_valid():
            queue = form.cleaned_data["queue"]
            actor = f"user:{request.user.get_username()}"
            services.plugin_set_queue(name=plugin.name, queue=queue, actor=actor)
            plugin.refresh_from_db()
            shown = queue_of(plugin)
            self.message_user(request, f"'{plugin.name}' now runs on queue '{shown}'.")
            if _on_worker_nodes() and not live_workers_per_queue()[shown]:
                warning = no_live_worker(plugin=plugin.name, queue=shown)
                self.message_user(request, warning, messages.WARNING)
            return HttpResponseRedirect(back)
        requires_gpu = (plugin.requirements or {}).get("gpu")
        default = plugin.declared_queue or (GPU_QUEUE if requires_gpu else DEFAULT_QUEUE)
        context = {
            **self.admin_site.each_context(request),
            "title": f"Queue of plugin '{plugin.name}'",
            "opts": self.model._meta,
            "original": plugin,
            "form": form,
            "current": queue_of(plugin),
            "default": default,
            "media": self.media,
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, "admin/plugins_app/plugin/queue_form.html", context)


def _on_worker_nodes() -> bool:
    return settings.PORTAL_RUN_EXECUTOR == "celery"
