"""ASGI entry point: a production start, so SECRET_KEY must come from the environment."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
os.environ.setdefault("PORTAL_REQUIRE_SECRET_KEY", "1")

application = get_asgi_application()


def _start_background_loops() -> None:
    # The scheduler (unless PORTAL_SCHEDULER=off) and the webhook deliverer of this process.
    from plugins_app.background import start_web_process_loops

    start_web_process_loops()


_start_background_loops()
