"""The background deliverer: posts due webhook deliveries, retries with backoff, logs each try.

A delivery is claimed by a conditional UPDATE (pending, due, unclaimed or its claim expired),
so deliverers in several processes never send one twice at once. The HTTP call happens
outside any transaction, with a timeout, on the deliverer's thread: a receiver that is down
or slow delays other deliveries at most, never a run or a request.
"""

from __future__ import annotations

import logging
import random
import time
from datetime import datetime, timedelta

import requests
from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from plugins_app.loops import BackgroundLoop
from plugins_app.notifications.models import DeliveryStatus, WebhookDelivery
from plugins_app.notifications.signing import SIGNATURE_HEADER, header_value

logger = logging.getLogger(__name__)

ERROR_CHARS = 500
LOG_ENTRIES = 20  # the attempt log keeps the latest tries
USER_AGENT = "plugin-portal-webhooks/1"


def backoff_s(attempts: int) -> float:
    """Seconds before try `attempts + 1`: doubling from PORTAL_NOTIFY_BACKOFF_S, capped, with
    jitter so receivers coming back are not hit by every retry at once."""
    base = settings.PORTAL_NOTIFY_BACKOFF_S * 2 ** max(0, attempts - 1)
    return min(base, settings.PORTAL_NOTIFY_MAX_BACKOFF_S) * random.uniform(0.8, 1.2)


def _claim(delivery_id: int, now: datetime) -> bool:
    lease = now + timedelta(seconds=settings.PORTAL_NOTIFY_TIMEOUT_S * 3 + 30)
    claimed = (
        WebhookDelivery.objects.filter(pk=delivery_id, status=DeliveryStatus.PENDING)
        .filter(Q(claimed_until__isnull=True) | Q(claimed_until__lt=now))
        .update(claimed_until=lease)
    )
    return claimed == 1


def deliver_due(*, limit: int = 100) -> int:
    """Send the due deliveries this process can claim; returns how many were tried."""
    now = timezone.now()
    due = (
        WebhookDelivery.objects.filter(status=DeliveryStatus.PENDING, next_attempt_at__lte=now)
        .filter(Q(claimed_until__isnull=True) | Q(claimed_until__lt=now))
        .order_by("next_attempt_at", "pk")
        .values_list("pk", flat=True)[:limit]
    )
    tried = 0
    for delivery_id in list(due):
        if _claim(delivery_id, now):
            deliver_one(delivery_id)
            tried += 1
    return tried


def deliver_one(delivery_id: int) -> WebhookDelivery:
    """One attempt of a claimed delivery, then its row updated: delivered, retried or given up."""
    delivery = WebhookDelivery.objects.select_related("webhook").get(pk=delivery_id)
    body = delivery.body.encode()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "X-Portal-Event": delivery.event,
        "X-Portal-Delivery": str(delivery.pk),
        SIGNATURE_HEADER: header_value(secret=delivery.webhook.secret, body=body),
    }
    started = time.monotonic()
    status_code: int | None = None
    error = ""
    try:
        response = requests.post(
            delivery.webhook.url,
            data=body,
            headers=headers,
            timeout=settings.PORTAL_NOTIFY_TIMEOUT_S,
            allow_redirects=False,
        )
        status_code = response.status_code
        response.close()
        if not 200 <= status_code < 300:
            error = (
                f"the receiver answered HTTP {status_code} (it must answer 2xx once it has "
                "the event; check its logs)"
            )
    except requests.RequestException as exc:
        error = (
            f"{type(exc).__name__}: {exc} (check that the receiver is up and reachable from "
            "the portal, and answers within PORTAL_NOTIFY_TIMEOUT_S)"
        )[:ERROR_CHARS]
    duration_ms = round((time.monotonic() - started) * 1000, 1)
    return _record_attempt(delivery_id, status_code=status_code, error=error, ms=duration_ms)


@transaction.atomic
def _record_attempt(
    delivery_id: int, *, status_code: int | None, error: str, ms: float
) -> WebhookDelivery:
    delivery = WebhookDelivery.objects.select_for_update().get(pk=delivery_id)
    now = timezone.now()
    delivery.attempts += 1
    entry = {"at": now.isoformat(), "status_code": status_code, "error": error, "ms": ms}
    delivery.log = [*delivery.log, entry][-LOG_ENTRIES:]
    delivery.last_status_code = status_code
    delivery.last_error = error
    delivery.claimed_until = None
    if not error:
        delivery.status = DeliveryStatus.DELIVERED
        delivery.delivered_at = now
    elif delivery.attempts >= settings.PORTAL_NOTIFY_MAX_ATTEMPTS:
        delivery.status = DeliveryStatus.FAILED
        logger.warning(
            "Webhook delivery %s (%s of %s) gave up after %s attempts: %s",
            delivery.pk,
            delivery.event,
            delivery.plugin_name,
            delivery.attempts,
            error,
        )
    else:
        delivery.next_attempt_at = now + timedelta(seconds=backoff_s(delivery.attempts))
    delivery.save()
    return delivery


deliverer_loop = BackgroundLoop(
    "portal-webhooks", deliver_due, lambda: float(settings.PORTAL_NOTIFY_POLL_S)
)


def wake_after_commit() -> None:
    """Have this process's deliverer send what the current transaction wrote, once it commits."""
    transaction.on_commit(deliverer_loop.wake)
