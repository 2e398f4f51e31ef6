"""The outbox: a delivery per subscribed webhook, written in the state change's transaction."""

from __future__ import annotations

import json

import pytest
from django.db import transaction

from plugins_app import services
from plugins_app.models import RunStatus
from plugins_app.notifications import events, outbox
from plugins_app.notifications.models import Webhook, WebhookDelivery

pytestmark = pytest.mark.django_db


def hook(**fields) -> Webhook:
    """A webhook to an address nothing listens on (these tests never send)."""
    return Webhook.objects.create(name="ops", url="http://127.0.0.1:9/hook", **fields)


def kinds() -> list[str]:
    return list(WebhookDelivery.objects.order_by("pk").values_list("event", flat=True))


class TestEvents:
    def test_failure_streak__one_failed_then_recovered(self, make_plugin, finish_run):
        """The first failure is an event, the next ones of the streak not; a success recovers."""
        hook()
        plugin = make_plugin()
        finish_run(plugin.name, RunStatus.FAILED)
        finish_run(plugin.name, RunStatus.CRASHED)
        finish_run(plugin.name, RunStatus.SUCCEEDED)
        finish_run(plugin.name, RunStatus.SUCCEEDED)
        assert kinds() == [events.FAILED, events.RECOVERED]

    def test_body__event_and_health_record(self, make_plugin, finish_run):
        """The body carries the event and the plugin's health record after the change."""
        hook()
        plugin = make_plugin()
        run = finish_run(plugin.name, RunStatus.FAILED, reason="Run broke on purpose (rerun)")
        body = json.loads(WebhookDelivery.objects.get().body)
        assert body["event"]["kind"] == "failed"
        assert body["event"]["plugin"] == plugin.name
        assert body["event"]["run_id"] == run.pk
        assert body["event"]["reason"] == "Run broke on purpose (rerun)"
        assert body["health"]["state"] == "FAILED"
        assert body["health"]["error_count"] == 1

    def test_unavailable__an_event(self, make_plugin):
        """A plugin becoming UNAVAILABLE is an event."""
        hook()
        plugin = make_plugin()
        services.plugin_mark_unavailable(
            name=plugin.name, reason="Module 'cv2' missing (install it)", actor="test"
        )
        assert kinds() == [events.UNAVAILABLE]

    def test_scope__plugin_webhook_and_event_filter(self, make_plugin, finish_run):
        """A webhook of another plugin, or for other kinds, or disabled, gets nothing."""
        plugin, other = make_plugin(), make_plugin()
        hook(plugin=other)
        hook(events=[events.RECOVERED])
        hook(enabled=False)
        mine = hook(plugin=plugin, events=[events.FAILED])
        finish_run(plugin.name, RunStatus.FAILED)
        assert list(WebhookDelivery.objects.values_list("webhook", flat=True)) == [mine.pk]

    def test_quarantine__an_event_after_the_failed_one(self, make_plugin, finish_run):
        """A plugin quarantined by its failures is a 'quarantined' event, after 'failed'."""
        hook()
        plugin = make_plugin(quarantine_after=2)
        finish_run(plugin.name, RunStatus.FAILED)
        finish_run(plugin.name, RunStatus.CRASHED)
        assert kinds() == [events.FAILED, events.QUARANTINED]
        body = json.loads(WebhookDelivery.objects.get(event=events.QUARANTINED).body)
        assert body["health"]["quarantine"]["state"] == "open"
        assert "quarantined" in body["event"]["reason"]

    def test_rolled_back_change__nothing_written(self, make_plugin, finish_run):
        """A change whose transaction rolls back leaves no delivery behind."""
        hook()
        plugin = make_plugin()
        with pytest.raises(RuntimeError), transaction.atomic():
            finish_run(plugin.name, RunStatus.FAILED)
            raise RuntimeError("roll it back")
        assert not WebhookDelivery.objects.exists()

    def test_no_webhook__nothing_written(self, make_plugin, finish_run):
        """Without webhooks a failure writes no delivery."""
        plugin = make_plugin()
        finish_run(plugin.name, RunStatus.FAILED)
        assert not WebhookDelivery.objects.exists()

    def test_registered_kind__recorded_by_its_feature(self, make_plugin):
        """A kind another feature registers (quarantine) is delivered like the built-in ones."""
        events.register_event_kind("test_quarantined", "the plugin was quarantined (test)")
        try:
            hook()
            plugin = make_plugin()
            with transaction.atomic():
                outbox.record_event(plugin, kind="test_quarantined", reason="", actor="system")
            assert kinds() == ["test_quarantined"]
            with pytest.raises(ValueError, match="register it"):
                outbox.record_event(plugin, kind="no-such-kind", reason="", actor="system")
        finally:
            events.EVENT_KINDS.pop("test_quarantined")
