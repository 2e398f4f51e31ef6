"""WSGI entry point: a production start, so SECRET_KEY must come from the environment."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
os.environ.setdefault("PORTAL_REQUIRE_SECRET_KEY", "1")

application = get_wsgi_application()


def _start_health_refresher() -> None:
    # At start, not at the first request: a worker that never got one still takes over.
    from django.conf import settings

    from plugins_app.health_refresher import refresher

    if not settings.PORTAL_HEALTH_REFRESH_ON_READ:
        refresher.ensure_started()


_start_health_refresher()
