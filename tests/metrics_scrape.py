"""Print what GET /metrics answers in a new process (a server process started now).

Usage: python -m tests.metrics_scrape   (DATABASE_URL and PORTAL_VAR_DIR from the environment)
"""

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
    import django

    django.setup()
    from django.test import RequestFactory

    from plugins_app.metrics import metrics_view

    response = metrics_view(RequestFactory().get("/metrics"))
    sys.stdout.write(response.content.decode())


if __name__ == "__main__":
    main()
