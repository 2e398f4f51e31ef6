"""WSGI entry point: a production start, so SECRET_KEY must come from the environment."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
os.environ.setdefault("PORTAL_REQUIRE_SECRET_KEY", "1")

application = get_wsgi_application()

from plugins_app.background import start_web_process_loops  # noqa: E402 (needs Django set up)

start_web_process_loops()
