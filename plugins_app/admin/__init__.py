"""Operator admin: see what is broken and why, and fix it with one click.

Operational fields are read-only everywhere: every change goes through an action that calls a
service (or the pipeline) and reports back with `message_user`. History rows (runs, events)
are read-only and never added, edited or deleted here; pruning is a command.

`plugins` is the plugins page, `history` the runs and events lists, `large_tables` what keeps
those fast on a million rows, `display` how a state, a reason, a duration or a link is shown.
"""

from __future__ import annotations

from django.contrib import admin

from plugins_app import token_admin as _token_admin  # noqa: F401 - registers the token page
from plugins_app.admin.fleet import WorkerAdmin
from plugins_app.admin.history import PluginEventAdmin, PluginRunAdmin
from plugins_app.admin.large_tables import CappedCountPaginator
from plugins_app.admin.plugins import LATEST_EVENTS, LATEST_RUNS, PluginAdmin
from plugins_app.notifications import admin as _notifications_admin  # noqa: F401 - registers
from plugins_app.schedules import admin as _schedules_admin  # noqa: F401 - registers

__all__ = [
    "LATEST_EVENTS",
    "LATEST_RUNS",
    "CappedCountPaginator",
    "PluginAdmin",
    "PluginEventAdmin",
    "PluginRunAdmin",
    "WorkerAdmin",
]

admin.site.site_header = "Plugin operations portal"
admin.site.site_title = "Plugin portal admin"
admin.site.index_title = "Fleet overview"
# The wide plugin and run tables need the room more than a second list of the same links.
admin.site.enable_nav_sidebar = False
# The index shows the fleet at a glance above the usual app list.
admin.site.index_template = "admin/plugins_app/index.html"
