"""Operator admin: operational fields are read-only; changes go through the services."""

from django.contrib import admin

from plugins_app.models import Plugin, PluginEvent, PluginRun


class ReadOnlyHistoryAdmin(admin.ModelAdmin):
    """History rows are append-only: no add, no edit, no delete from the admin."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(Plugin)
class PluginAdmin(admin.ModelAdmin):
    list_display = ("name", "state", "reason", "success_count", "error_count", "enabled")
    list_filter = ("state", "enabled")
    search_fields = ("name", "reason")
    readonly_fields = [field.name for field in Plugin._meta.fields]

    def has_add_permission(self, request):
        return False


@admin.register(PluginRun)
class PluginRunAdmin(ReadOnlyHistoryAdmin):
    list_display = ("id", "plugin", "status", "outcome", "duration_ms", "queued_at", "actor")
    list_filter = ("status", "outcome")
    list_select_related = ("plugin",)
    date_hierarchy = "queued_at"
    search_fields = ("reason", "error_type", "plugin__name")


@admin.register(PluginEvent)
class PluginEventAdmin(ReadOnlyHistoryAdmin):
    list_display = ("created_at", "plugin", "kind", "from_state", "to_state", "actor", "reason")
    list_filter = ("kind", "to_state")
    list_select_related = ("plugin",)
    date_hierarchy = "created_at"
    search_fields = ("reason", "plugin__name", "actor")
