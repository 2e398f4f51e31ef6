"""POST /v1/runs/{id}/cancel: a write like the others (token or session, run_plugin,
throttled); 200 with the cancelled run, 409 for a finished one, 404 for an unknown one."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from plugins_app import services
from plugins_app.models import Plugin, PluginEvent, PluginRun, PluginState, RunStatus
from plugins_app.tokens import issue_token


def cancel_url(run_id: int) -> str:
    return f"/v1/runs/{run_id}/cancel"


@pytest.mark.django_db
class TestRunCancelApi:
    def test_running_run__200_cancelled_with_who(self, operator_client, make_plugin):
        """An operator's cancel answers the run, CANCELLED, cancelled by api:operator."""
        make_plugin("ocr")
        run = services.run_queue(name="ocr", params={}, actor="t")
        services.run_start(run_id=run.pk, worker="w:1")
        response = operator_client.post(cancel_url(run.pk))
        assert response.status_code == 200, response.json()
        body = response.json()
        assert (body["id"], body["status"], body["outcome"]) == (run.pk, "cancelled", "cancelled")
        assert body["cancelled_by"] == "api:operator"
        assert "cancelled by api:operator" in body["reason"]
        plugin = Plugin.objects.get(name="ocr")
        assert (plugin.state, plugin.error_count) == (PluginState.INITIALIZED, 0)
        assert PluginEvent.objects.filter(run=run, actor="api:operator").exists()

    def test_queued_run__200_and_never_starts(self, operator_client, make_plugin):
        """A queued run is cancelled at once; it stays CANCELLED."""
        make_plugin("ocr")
        run = services.run_queue(name="ocr", params={}, actor="t")
        assert operator_client.post(cancel_url(run.pk), format="json").status_code == 200
        assert PluginRun.objects.get(pk=run.pk).status == RunStatus.CANCELLED

    def test_finished_run__409_with_message(self, operator_client, make_plugin, finish_run):
        """A finished run is a 409 saying it already finished; the run is left as it was."""
        make_plugin("ocr")
        run = finish_run("ocr", RunStatus.SUCCEEDED)
        response = operator_client.post(cancel_url(run.pk))
        assert response.status_code == 409
        assert response.json()["detail"] == (
            f"Run {run.pk} of plugin 'ocr' already finished (succeeded), so there is nothing "
            "to cancel (only a queued or running run can be cancelled)"
        )
        assert PluginRun.objects.get(pk=run.pk).status == RunStatus.SUCCEEDED

    def test_cancelled_twice__second_is_409(self, operator_client, make_plugin):
        """Cancelling a cancelled run is a 409: it already finished (cancelled)."""
        make_plugin("ocr")
        run = services.run_queue(name="ocr", params={}, actor="t")
        operator_client.post(cancel_url(run.pk))
        again = operator_client.post(cancel_url(run.pk))
        assert again.status_code == 409
        assert "already finished (cancelled)" in again.json()["detail"]

    def test_unknown_run__404(self, operator_client):
        """An unknown run id is a 404 naming it."""
        response = operator_client.post(cancel_url(987654))
        assert (response.status_code, response.json()) == (404, {"detail": "Run 987654 not found"})

    def test_anonymous__401_and_run_untouched(self, api_client, make_plugin):
        """Without credentials the cancel is refused (401) and the run goes on."""
        make_plugin("ocr")
        run = services.run_queue(name="ocr", params={}, actor="t")
        response = api_client.post(cancel_url(run.pk))
        assert response.status_code == 401
        assert PluginRun.objects.get(pk=run.pk).status == RunStatus.QUEUED

    def test_without_run_permission__403(self, make_user, make_plugin):
        """A token of a user without run_plugin is refused (403); the run goes on."""
        make_plugin("ocr")
        run = services.run_queue(name="ocr", params={}, actor="t")
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Token {issue_token(user=make_user('viewer'))}")
        response = client.post(cancel_url(run.pk))
        assert response.status_code == 403
        assert "plugins_app.run_plugin" in response.json()["detail"]
        assert PluginRun.objects.get(pk=run.pk).status == RunStatus.QUEUED

    def test_get__405(self, operator_client, make_plugin):
        """Cancel is a POST only."""
        make_plugin("ocr")
        run = services.run_queue(name="ocr", params={}, actor="t")
        assert operator_client.get(cancel_url(run.pk)).status_code == 405
