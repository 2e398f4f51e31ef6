"""The runs list's Cancel action: queued and running runs end CANCELLED, by the operator's
name; finished runs are refused with a message; viewers have no such action."""

from __future__ import annotations

import pytest

from plugins_app import services
from plugins_app.models import Plugin, PluginRun, PluginState, RunStatus

RUNS = "/admin/plugins_app/pluginrun/"

pytestmark = pytest.mark.django_db


def cancel(client, *runs: PluginRun):
    """Post the Cancel action for the runs, as the change list's Go button does."""
    data = {"action": "cancel_selected", "index": 0, "_selected_action": [r.pk for r in runs]}
    return client.post(RUNS, data, follow=True)


def messages_of(response) -> list[str]:
    return [str(message) for message in response.context["messages"]]


class TestCancelAction:
    def test_queued_and_running__cancelled_by_the_operator(
        self, client, make_operator, make_plugin
    ):
        """Both runs end CANCELLED, cancelled by user:NAME; the plugin is not FAILED."""
        make_plugin("ocr")
        waiting = services.run_queue(name="ocr", params={}, actor="t")
        going = services.run_queue(name="ocr", params={}, actor="t")
        services.run_start(run_id=going.pk, worker="w:1")
        client.force_login(make_operator("ann", role="runner"))
        response = cancel(client, waiting, going)
        assert response.status_code == 200
        for run in (waiting, going):
            run.refresh_from_db()
            assert (run.status, run.cancelled_by) == (RunStatus.CANCELLED, "user:ann")
        assert messages_of(response) == [
            f"Cancelled run #{going.pk} of 'ocr'.",
            f"Cancelled run #{waiting.pk} of 'ocr'.",
        ]
        plugin = Plugin.objects.get(name="ocr")
        assert (plugin.state, plugin.error_count, plugin.running_count) == (
            PluginState.INITIALIZED,
            0,
            0,
        )

    def test_finished_run__refused_with_why(self, client, make_operator, make_plugin, finish_run):
        """A finished run is left as it was, and the message says it already finished."""
        make_plugin("ocr")
        done = finish_run("ocr", RunStatus.SUCCEEDED)
        client.force_login(make_operator("ann", role="runner"))
        response = cancel(client, done)
        assert messages_of(response) == [
            f"Could not cancel run #{done.pk}: Run {done.pk} of plugin 'ocr' already finished "
            "(succeeded), so there is nothing to cancel (only a queued or running run can be "
            "cancelled)"
        ]
        assert PluginRun.objects.get(pk=done.pk).status == RunStatus.SUCCEEDED

    def test_viewer__no_action_and_a_forged_one_changes_nothing(
        self, client, make_operator, make_plugin
    ):
        """A view-only operator sees no action selector; posting the action cancels nothing."""
        make_plugin("ocr")
        run = services.run_queue(name="ocr", params={}, actor="t")
        client.force_login(make_operator(role="viewer"))
        assert 'name="action"' not in client.get(RUNS).content.decode()
        cancel(client, run)
        assert PluginRun.objects.get(pk=run.pk).status == RunStatus.QUEUED
