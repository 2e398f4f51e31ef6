"""WSGI entry point: a production start, so SECRET_KEY must come from the environment."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
os.environ.setdefault("PORTAL_REQUIRE_SECRET_KEY", "1")

application = get_wsgi_application()


def _import_the_views() -> None:
    # Before the first request, not during it: a worker restarted mid-outage answers at once.
    from django.urls import get_resolver

    get_resolver().resolve("/v1/plugins")


def _start_health_refresher() -> None:
    # At start, not at the first request: a worker that never got one still takes over.
    from django.conf import settings

    from plugins_app.health_refresher import refresher

    if not settings.PORTAL_HEALTH_REFRESH_ON_READ:
        refresher.ensure_started()


def _start_background_loops() -> None:
    # The scheduler (unless PORTAL_SCHEDULER=off) and the webhook deliverer of this process.
    from plugins_app.background import start_web_process_loops

    start_web_process_loops()


_import_the_views()
_start_health_refresher()
_start_background_loops()
