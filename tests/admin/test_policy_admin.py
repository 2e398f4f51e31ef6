"""Retries and quarantine in the admin: what the plugin's page shows, and the operator's actions."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from plugins_app import services
from plugins_app.models import EventKind, Plugin, PluginEvent, PluginRun, RunStatus
from tests.admin.test_plugins_admin import PLUGINS, act, confirm, messages_of, plugin_url

pytestmark = pytest.mark.django_db

RETRY = {"max_attempts": 3, "backoff_s": 300, "max_backoff_s": 600}


@pytest.fixture
def operator_client(client, make_operator):
    client.force_login(make_operator("ops", role="operator"))
    return client


def crash_twice(name: str, finish_run) -> None:
    for _ in range(2):
        finish_run(name, RunStatus.CRASHED, outcome="crashed")


class TestPluginPage:
    def test_page__shows_policy_quarantine_and_next_retry(
        self, operator_client, make_plugin, finish_run
    ):
        """The page says the policy, that the plugin is quarantined until when, and the retry."""
        make_plugin("ocr", retry=RETRY, quarantine_after=3)
        finish_run("ocr", RunStatus.CRASHED, outcome="crashed")
        retry = PluginRun.objects.get(plugin__name="ocr", attempt=2)
        html = operator_client.get(plugin_url("ocr")).content.decode()
        assert "up to 3 attempts, waiting 5m doubling up to 10m, with jitter (declared)" in html
        assert "3 consecutive failures" in html
        assert "not quarantined" in html
        assert f"run #{retry.pk}</a> (attempt 2) at" in html
        services.plugin_set_policy(
            name="ocr", retry=None, quarantine_after=1, note="", actor="user:ann"
        )
        PluginRun.objects.filter(pk=retry.pk).update(not_before=timezone.now())
        services.run_start(run_id=retry.pk, worker="t:1")
        services.run_finish(
            run_id=retry.pk,
            outcome=services.RunOutcome(status=RunStatus.CRASHED, outcome="crashed", reason="x"),
        )
        html = operator_client.get(plugin_url("ocr")).content.decode()
        assert "runs refused until" in html and "quarantined after 2 consecutive" in html
        assert "Lift quarantine…" in html and "Extend quarantine…" in html

    def test_quarantined__no_rerun_offered_and_badge_in_list(
        self, operator_client, make_plugin, finish_run
    ):
        """A quarantined plugin is marked in the list, and its page offers no rerun."""
        make_plugin("ocr", quarantine_after=2)
        crash_twice("ocr", finish_run)
        html = operator_client.get(plugin_url("ocr")).content.decode()
        assert "No rerun: Plugin &#x27;ocr&#x27; is quarantined until" in html
        assert 'class="quarantine-badge"' in operator_client.get(PLUGINS).content.decode()


class TestActions:
    def test_lift__from_the_page_with_a_note(self, operator_client, make_plugin, finish_run):
        """Lift asks for a note, then lifts through the service; the event names the operator."""
        make_plugin("ocr", quarantine_after=2)
        crash_twice("ocr", finish_run)
        asked = act(operator_client, "lift_quarantine_selected", "ocr")
        assert "Lift the quarantine of 1 plugin?" in asked.content.decode()
        done = confirm(operator_client, "lift_quarantine_selected", "ocr", note="fixed")
        assert ("success", "Lifted the quarantine of 1 plugin: ocr. Note: fixed") in messages_of(
            done
        )
        assert Plugin.objects.get(name="ocr").quarantined_until is None
        event = PluginEvent.objects.get(kind=EventKind.QUARANTINE_LIFTED)
        assert event.actor == "user:ops"

    def test_extend__by_one_cooldown(self, operator_client, make_plugin, finish_run, settings):
        """Extend keeps the quarantine one more cooldown."""
        settings.PORTAL_QUARANTINE_COOLDOWN_S = 120
        make_plugin("ocr", quarantine_after=2)
        crash_twice("ocr", finish_run)
        until = Plugin.objects.get(name="ocr").quarantined_until
        confirm(operator_client, "extend_quarantine_selected", "ocr")
        assert Plugin.objects.get(name="ocr").quarantined_until == until + timedelta(seconds=120)

    def test_lift_unquarantined__error_message(self, operator_client, make_plugin):
        """Lifting a plugin that is not quarantined says so and changes nothing."""
        make_plugin("ocr")
        done = confirm(operator_client, "lift_quarantine_selected", "ocr")
        [(level, text)] = messages_of(done)
        assert level == "error" and "is not quarantined" in text

    def test_set_policy__form_then_override_recorded(self, operator_client, make_plugin):
        """The policy form sets the override through the service, with an event."""
        make_plugin("ocr", retry=RETRY)
        asked = act(operator_client, "set_policy_selected", "ocr")
        assert 'name="max_attempts"' in asked.content.decode()
        fields = {"max_attempts": 5, "backoff_s": 2, "max_backoff_s": 30, "quarantine_after": 0}
        done = confirm(operator_client, "set_policy_selected", "ocr", note="flaky GPU", **fields)
        assert ("success", "Policy set for ocr.") in messages_of(done)
        plugin = Plugin.objects.get(name="ocr")
        assert plugin.retry_override == {
            "max_attempts": 5,
            "backoff_s": 2.0,
            "max_backoff_s": 30.0,
            "on_error": False,
        }
        assert plugin.quarantine_after_override == 0
        assert PluginEvent.objects.filter(kind=EventKind.POLICY_CHANGED).count() == 1

    def test_set_policy__invalid_shows_the_form_again(self, operator_client, make_plugin):
        """A backoff above its cap is refused by the service with what to fix."""
        make_plugin("ocr")
        fields = {"max_attempts": 2, "backoff_s": 50, "max_backoff_s": 10}
        done = confirm(operator_client, "set_policy_selected", "ocr", **fields)
        [(level, text)] = messages_of(done)
        assert level == "error" and "must be at least retry['backoff_s']" in text
        assert Plugin.objects.get(name="ocr").retry_override is None

    def test_viewer__cannot_act(self, client, make_operator, make_plugin, finish_run):
        """A viewer sees the quarantine but has no lift action."""
        client.force_login(make_operator("viewer", role="viewer"))
        make_plugin("ocr", quarantine_after=2)
        crash_twice("ocr", finish_run)
        html = client.get(plugin_url("ocr")).content.decode()
        assert "runs refused until" in html and "Lift quarantine…" not in html
