"""Where the scheduler runs: a thread of the web process (PORTAL_SCHEDULER=thread, the
embedded default) or `manage.py runscheduler` on a fleet; any number may run at once."""

from __future__ import annotations

from django.conf import settings

from plugins_app.loops import BackgroundLoop
from plugins_app.schedules.firing import fire_due

scheduler_loop = BackgroundLoop(
    "portal-scheduler", fire_due, lambda: float(settings.PORTAL_SCHEDULER_TICK_S)
)
