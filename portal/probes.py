"""`GET /livez` and `GET /readyz`: the probes a load balancer or Kubernetes asks.

/livez answers 200 whenever the process can answer a request: it touches neither the database
nor the broker, so an outage elsewhere never gets a healthy process restarted. /readyz answers
200 only when the database answers within `PORTAL_HEALTH_DB_TIMEOUT_S` (client-side deadline),
the broker does when the celery executor is on, and the plugins named in
`PORTAL_READY_REQUIRES_PLUGINS` are available; else 503 with a JSON body naming what failed.
"""

from __future__ import annotations

import threading
from typing import TypedDict

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET

from plugins_app import selectors
from plugins_app.api.deadline import read_deadline
from plugins_app.models import AVAILABLE_STATES


class Check(TypedDict):
    ok: bool
    detail: str


@csrf_exempt
@require_GET
@never_cache
def livez(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "alive"})


@csrf_exempt
@require_GET
@never_cache
def readyz(request: HttpRequest) -> JsonResponse:
    checks: dict[str, Check] = {"database": _database()}
    if settings.PORTAL_RUN_EXECUTOR == "celery":
        checks["broker"] = _broker(settings.PORTAL_BROKER_URL, settings.PORTAL_HEALTH_DB_TIMEOUT_S)
    if settings.PORTAL_READY_REQUIRES_PLUGINS:
        checks["plugins"] = (
            _plugins(settings.PORTAL_READY_REQUIRES_PLUGINS)
            if checks["database"]["ok"]
            else Check(ok=False, detail="Unknown: the database could not be read")
        )
    failed = [name for name, check in checks.items() if not check["ok"]]
    body = {"status": "not ready" if failed else "ready", "failed": failed, "checks": checks}
    return JsonResponse(body, status=503 if failed else 200)


def _database() -> Check:
    seconds = settings.PORTAL_HEALTH_DB_TIMEOUT_S
    try:
        with read_deadline(seconds), connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception as error:
        connection.close_if_unusable_or_obsolete()
        return Check(
            ok=False,
            detail=f"The database check (SELECT 1 within {seconds:g} s) failed: "
            f"{type(error).__name__}: {_one_line(error)} (check the database server and the "
            "network to it)",
        )
    return Check(ok=True, detail=f"The database answered within {seconds:g} s")


def _plugins(required: list[str]) -> Check:
    with read_deadline(settings.PORTAL_HEALTH_DB_TIMEOUT_S):
        rows = {row["name"]: row for row in selectors.health_records() if row["name"] in required}
    missing = []
    for name in required:
        row = rows.get(name)
        if row is None:
            missing.append(f"{name} (not registered)")
        elif not row["enabled"]:
            missing.append(f"{name} (disabled)")
        elif row["state"] not in AVAILABLE_STATES:
            missing.append(f"{name} ({row['state']}: {row['reason'] or 'no reason recorded'})")
    if missing:
        return Check(
            ok=False,
            detail="Required plugins are not available: " + "; ".join(missing) + " (see each "
            "plugin's health for what to do; PORTAL_READY_REQUIRES_PLUGINS names them)",
        )
    return Check(ok=True, detail="Every required plugin is available: " + ", ".join(required))


def _broker(url: str, seconds: float) -> Check:
    """kombu's connection check, in a thread of its own so that a hung broker cannot hold us."""
    from kombu import Connection

    outcome: list[BaseException | None] = []

    def connect() -> None:
        try:
            with Connection(url, connect_timeout=seconds) as broker:
                broker.ensure_connection(max_retries=1, timeout=seconds)
            outcome.append(None)
        except Exception as error:
            outcome.append(error)

    worker = threading.Thread(target=connect, name="readyz-broker-check", daemon=True)
    worker.start()
    worker.join(seconds)
    where = _without_password(url)
    if not outcome:
        return Check(
            ok=False,
            detail=f"The broker at {where} did not answer within {seconds:g} s; check that it "
            "runs and is reachable (PORTAL_BROKER_URL)",
        )
    error = outcome[0]
    if error is not None:
        return Check(
            ok=False,
            detail=f"Cannot connect to the broker at {where} ({type(error).__name__}: "
            f"{_one_line(error)}); check that it runs and PORTAL_BROKER_URL",
        )
    return Check(ok=True, detail=f"The broker at {where} accepted a connection")


def _without_password(url: str) -> str:
    from kombu.utils.url import maybe_sanitize_url

    return str(maybe_sanitize_url(url))


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())[:300] or "no message"
