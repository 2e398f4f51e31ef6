"""The deliverer against a real HTTP receiver: signed posts, retries with backoff, the log,
and a receiver that hangs delaying neither runs nor health reads."""

from __future__ import annotations

import time

import pytest
from django.utils import timezone

from plugins_app.models import RunStatus
from plugins_app.notifications import deliverer
from plugins_app.notifications.models import DeliveryStatus, Webhook, WebhookDelivery
from plugins_app.notifications.signing import verify


@pytest.mark.django_db
class TestDeliver:
    def test_delivered__signed_body_and_log(self, webhook, receiver, make_plugin, finish_run):
        """The receiver gets the body, signed with the webhook's secret; the log says 2xx."""
        plugin = make_plugin()
        finish_run(plugin.name, RunStatus.FAILED)
        assert deliverer.deliver_due() == 1
        (request,) = receiver.requests
        assert request.json["event"]["kind"] == "failed"
        assert request.headers["X-Portal-Event"] == "failed"
        assert verify(
            secret=webhook.secret, body=request.body, header=request.headers["X-Portal-Signature"]
        )
        delivery = WebhookDelivery.objects.get()
        assert (delivery.status, delivery.attempts, delivery.last_status_code) == (
            DeliveryStatus.DELIVERED,
            1,
            204,
        )
        assert delivery.log[0]["status_code"] == 204
        assert deliverer.deliver_due() == 0  # delivered once, not again

    def test_receiver_error__retried_with_backoff_then_given_up(
        self, webhook, receiver, make_plugin, finish_run, settings
    ):
        """A 500 is retried after a growing delay; after the last attempt it gives up."""
        settings.PORTAL_NOTIFY_MAX_ATTEMPTS = 2
        receiver.status = 500
        finish_run(make_plugin().name, RunStatus.FAILED)
        deliverer.deliver_due()
        delivery = WebhookDelivery.objects.get()
        assert (delivery.status, delivery.attempts) == (DeliveryStatus.PENDING, 1)
        assert delivery.next_attempt_at > timezone.now()
        assert "HTTP 500" in delivery.last_error and "2xx" in delivery.last_error
        assert deliverer.deliver_due() == 0  # not due yet
        WebhookDelivery.objects.update(next_attempt_at=timezone.now())
        deliverer.deliver_due()
        delivery.refresh_from_db()
        assert (delivery.status, delivery.attempts, len(delivery.log)) == (
            DeliveryStatus.FAILED,
            2,
            2,
        )
        assert len(receiver.requests) == 2

    def test_receiver_down__error_says_to_check_it(self, make_plugin, finish_run, receiver):
        """A receiver that is not listening leaves a retry and an error naming what to check."""
        url = receiver.url
        receiver.stop()
        Webhook.objects.create(name="down", url=url)
        finish_run(make_plugin().name, RunStatus.FAILED)
        deliverer.deliver_due()
        delivery = WebhookDelivery.objects.get()
        assert delivery.status == DeliveryStatus.PENDING
        assert "ConnectionError" in delivery.last_error and "reachable" in delivery.last_error

    def test_backoff__doubles_up_to_the_cap(self, settings):
        """The delay doubles per attempt, with jitter, and never passes the cap."""
        settings.PORTAL_NOTIFY_BACKOFF_S = 2
        settings.PORTAL_NOTIFY_MAX_BACKOFF_S = 60
        assert 1.6 <= deliverer.backoff_s(1) <= 2.4
        assert 6.4 <= deliverer.backoff_s(3) <= 9.6
        assert deliverer.backoff_s(30) <= 72


@pytest.mark.django_db(transaction=True)
class TestHangingReceiver:
    def test_hanging_receiver__runs_and_health_reads_go_on(
        self, webhook, receiver, make_plugin, finish_run, client, settings
    ):
        """While the receiver hangs on a delivery, runs finish and health reads answer."""
        settings.PORTAL_NOTIFY_TIMEOUT_S = 60  # longer than the test: only the hold ends it
        receiver.hang = True
        plugin = make_plugin()
        finish_run(plugin.name, RunStatus.FAILED)  # commits: the deliverer thread posts it
        assert receiver.arrived.wait(30), "the deliverer never posted"
        finish_run(plugin.name, RunStatus.SUCCEEDED)
        response = client.get(f"/v1/plugins/{plugin.name}/health")
        assert response.status_code == 200 and response.json()["state"] == "INITIALIZED"
        # All of it while the receiver still holds the first request open.
        assert not receiver.hold.is_set()
        assert WebhookDelivery.objects.get(event="failed").status == DeliveryStatus.PENDING
        assert WebhookDelivery.objects.filter(event="recovered").exists()
        receiver.hold.set()
        deliverer.deliverer_loop.wake()
        pending = WebhookDelivery.objects.filter(status=DeliveryStatus.PENDING)
        deadline = time.monotonic() + 30
        while pending.exists():  # the deliverer writes each outcome to the database
            assert time.monotonic() < deadline, "deliveries still pending"
            time.sleep(0.05)
        assert set(WebhookDelivery.objects.values_list("status", flat=True)) == {"delivered"}
