"""The admin's schedules, webhooks and deliveries pages."""

from __future__ import annotations

import pytest
from django.urls import reverse

from plugins_app.models import Plugin, RunStatus
from plugins_app.notifications.models import Webhook, WebhookDelivery
from plugins_app.schedules.firing import fire_due
from plugins_app.schedules.models import Origin, Schedule
from plugins_app.schedules.writes import sync_declared

pytestmark = pytest.mark.django_db

ADD_SCHEDULE = reverse("admin:plugins_app_schedule_add")


@pytest.fixture
def operator(client, make_operator):
    """The client, logged in as an operator."""
    client.force_login(make_operator("ops", role="operator"))
    return client


def schedule_form(plugin: Plugin, **fields) -> dict:
    """The add form's fields for an interval schedule of `plugin`, overridden by `fields`."""
    form = {
        "plugin": plugin.pk,
        "name": "hourly",
        "cron": "",
        "every_s": "",
        "params": "{}",
        "overlap": "skip",
        "missed": "run_once",
        "enabled": "on",
        "firings-TOTAL_FORMS": "0",
        "firings-INITIAL_FORMS": "0",
    }
    return {**form, **fields}


class TestScheduleForm:
    def test_add_cron_schedule__next_run_computed(self, operator, make_plugin):
        """Adding a cron schedule saves it with its next run and the plugin's next run."""
        plugin = make_plugin()
        response = operator.post(ADD_SCHEDULE, schedule_form(plugin, cron="0 3 * * *"))
        assert response.status_code == 302, response.content.decode()[:2000]
        schedule = Schedule.objects.get()
        assert (schedule.origin, schedule.next_run_at.hour) == (Origin.ADMIN, 3)
        assert Plugin.objects.get(pk=plugin.pk).next_scheduled_at == schedule.next_run_at

    @pytest.mark.parametrize(
        ("fields", "message"),
        [
            ({"cron": "61 * * * *"}, "minute 0-59"),
            ({"cron": "* * *"}, "not the 5 of a cron expression"),
            ({}, "either a cron expression or an interval"),
            ({"cron": "* * * * *", "every_s": "60"}, "either a cron expression or an interval"),
            ({"every_s": "0.5"}, "at least 1 second"),
            ({"every_s": "60", "params": "[1]"}, "must be a JSON object"),
        ],
    )
    def test_bad_timing__form_says_what_to_enter(self, operator, make_plugin, fields, message):
        """A wrong cron, interval or params is an error on the form saying what fits."""
        response = operator.post(ADD_SCHEDULE, schedule_form(make_plugin(), **fields))
        assert response.status_code == 200
        assert message in response.content.decode()
        assert not Schedule.objects.exists()

    def test_list__next_and_last_run(self, operator, make_plugin):
        """The list shows each schedule's timing, next run and last outcome with its note."""
        plugin = make_plugin()
        sync_declared(name=plugin.name, declared={"every_s": 300})
        Schedule.objects.update(next_run_at=Schedule.objects.get().next_run_at.replace(year=2000))
        fire_due()  # the fake plugin's source does not exist: UNAVAILABLE, refused
        html = operator.get(reverse("admin:plugins_app_schedule_changelist")).content.decode()
        assert "every 300 s" in html and "refused (not counted)" in html
        page = operator.get(
            reverse("admin:plugins_app_schedule_change", args=[Schedule.objects.get().pk])
        ).content.decode()
        assert "could not queue its run" in page and "latest firings" in page.lower()

    def test_declared_schedule__timing_read_only(self, operator, make_plugin):
        """A schedule the plugin declares can be paused but its timing is the module's."""
        plugin = make_plugin()
        sync_declared(name=plugin.name, declared={"every_s": 300})
        schedule = Schedule.objects.get()
        page = operator.get(reverse("admin:plugins_app_schedule_change", args=[schedule.pk]))
        html = page.content.decode()
        assert 'name="enabled"' in html and 'name="every_s"' not in html
        paused = operator.post(
            reverse("admin:plugins_app_schedule_change", args=[schedule.pk]),
            {"firings-TOTAL_FORMS": "0", "firings-INITIAL_FORMS": "0"},
        )
        assert paused.status_code == 302, paused.content.decode()[:2000]
        schedule.refresh_from_db()
        assert (schedule.enabled, schedule.next_run_at) == (False, None)
        assert Plugin.objects.get(pk=plugin.pk).next_scheduled_at is None


class TestWebhooks:
    def test_add_webhook__secret_generated_and_shown(self, operator, make_plugin):
        """A webhook added for one plugin and one kind gets a secret, shown on its page."""
        plugin = make_plugin()
        response = operator.post(
            reverse("admin:plugins_app_webhook_add"),
            {
                "name": "pager",
                "url": "https://hooks.example/p",
                "plugin": plugin.pk,
                "events": ["failed"],
                "enabled": "on",
            },
        )
        assert response.status_code == 302, response.content.decode()[:2000]
        webhook = Webhook.objects.get()
        assert (webhook.plugin_id, webhook.events) == (plugin.pk, ["failed"])
        assert len(webhook.secret) >= 32
        page = operator.get(reverse("admin:plugins_app_webhook_change", args=[webhook.pk]))
        assert webhook.secret in page.content.decode()

    def test_deliveries__read_only_log(self, operator, make_plugin, finish_run):
        """Deliveries are listed and shown, never added, changed or deleted."""
        Webhook.objects.create(name="ops", url="http://127.0.0.1:9/hook")
        finish_run(make_plugin().name, RunStatus.FAILED)
        delivery = WebhookDelivery.objects.get()
        listing = operator.get(reverse("admin:plugins_app_webhookdelivery_changelist"))
        assert "failed" in listing.content.decode()
        page = operator.get(
            reverse("admin:plugins_app_webhookdelivery_change", args=[delivery.pk])
        ).content.decode()
        assert "&quot;health&quot;" in page and 'type="submit"' not in page.split("<form")[-1]
        assert operator.get(reverse("admin:plugins_app_webhookdelivery_add")).status_code == 403
        delete = reverse("admin:plugins_app_webhookdelivery_delete", args=[delivery.pk])
        assert operator.post(delete, {"post": "yes"}).status_code == 403
        assert WebhookDelivery.objects.exists()
