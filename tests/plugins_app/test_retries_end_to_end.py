"""Retries and quarantine end to end: real sandboxed plugins, the API, the thread executor."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.utils import timezone

from plugins_app import pipeline
from plugins_app.executor import shutdown_executor
from plugins_app.models import EventKind, Plugin, PluginEvent, PluginRun, RunStatus
from tests.plugins_app.test_pipeline_background import wait_until

pytestmark = pytest.mark.django_db(transaction=True)

# Crashes (SIGABRT) as many times as `crashes` says, counted in a file of the test's own,
# then succeeds: what a flaky native library looks like from outside.
CRASHY = """
import os
from pathlib import Path

retry = {RETRY}
quarantine_after = {QUARANTINE_AFTER}

def run(counter, crashes):
    path = Path(counter)
    done = int(path.read_text()) if path.exists() else 0
    path.write_text(str(done + 1))
    if done < crashes:
        os.abort()
    return {{"attempt": done + 1}}
"""


def add_crashy(plugins, name: str, *, retry: dict | None, quarantine_after: int) -> None:
    source = CRASHY.format(RETRY=repr(retry), QUARANTINE_AFTER=quarantine_after)
    plugins.add(name, source)
    pipeline.reload_plugin(name=name, actor="test")


def post_run(client, name: str, params: dict, wait: float | None = None):
    url = f"/v1/plugins/{name}/runs" + (f"?wait={wait}" if wait else "")
    body = json.dumps({"params": params})
    return client.post(url, body, content_type="application/json")


@pytest.fixture
def background(plugins, settings):
    """The thread executor (the embedded default), as `make run` has it."""
    settings.PORTAL_RUN_EXECUTOR = "thread"
    shutdown_executor()
    yield plugins
    shutdown_executor()


def chain(first_id: int) -> list[PluginRun]:
    return list(PluginRun.objects.filter(retry_of_id=first_id).order_by("attempt"))


class TestRetriesThroughTheApi:
    def test_crashing_twice__third_attempt_succeeds(self, operator_client, background, tmp_path):
        """Two crashes are retried with backoff; attempt 3 succeeds; every attempt counted."""
        retry = {"max_attempts": 4, "backoff_s": 0.2, "max_backoff_s": 0.5}
        add_crashy(background, "crashy", retry=retry, quarantine_after=0)
        params = {"counter": str(tmp_path / "count"), "crashes": 2}
        response = post_run(operator_client, "crashy", params)
        assert response.status_code == 202
        first = response.json()["id"]
        wait_until(lambda: any(r.status == RunStatus.SUCCEEDED for r in chain(first)), 60)
        runs = [PluginRun.objects.get(pk=first), *chain(first)]
        assert [(r.attempt, r.status) for r in runs] == [
            (1, RunStatus.CRASHED),
            (2, RunStatus.CRASHED),
            (3, RunStatus.SUCCEEDED),
        ]
        assert runs[2].result == {"attempt": 3}
        assert all(r.not_before >= runs[0].finished_at for r in runs[1:])
        record = operator_client.get("/v1/plugins/crashy/health").json()
        assert (record["success_count"], record["error_count"]) == (1, 2)
        assert record["next_retry_at"] is None
        assert record["retry_policy"] == {**retry, "on_error": False}
        detail = operator_client.get(f"/v1/runs/{runs[2].pk}").json()
        assert (detail["attempt"], detail["retry_of"]) == (3, first)

    def test_health__shows_next_retry_while_waiting(self, operator_client, background, tmp_path):
        """While a retry waits for its backoff, the health record says when it starts."""
        retry = {"max_attempts": 2, "backoff_s": 300, "max_backoff_s": 300}
        add_crashy(background, "slowretry", retry=retry, quarantine_after=0)
        params = {"counter": str(tmp_path / "count"), "crashes": 5}
        response = post_run(operator_client, "slowretry", params, wait=30)
        assert response.json()["status"] == "crashed"
        [waiting] = chain(response.json()["id"])
        record = operator_client.get("/v1/plugins/slowretry/health").json()
        assert record["next_retry_at"] == waiting.not_before.isoformat().replace("+00:00", "Z")
        assert waiting.status == RunStatus.QUEUED

    def test_due_retry__started_after_a_restart(self, background, settings, tmp_path):
        """A retry queued by a process that stopped is started by the next executor's sweep."""
        retry = {"max_attempts": 2, "backoff_s": 0.2, "max_backoff_s": 0.2}
        add_crashy(background, "restarted", retry=retry, quarantine_after=0)
        params = {"counter": str(tmp_path / "count"), "crashes": 1}
        settings.PORTAL_RUN_EXECUTOR = "inline"  # a process with no timer for it, then gone
        first = pipeline.run_plugin(name="restarted", params=params, actor="test")
        [retry_run] = chain(first.pk)
        wait_until(lambda: timezone.now() >= retry_run.not_before, 30)
        settings.PORTAL_RUN_EXECUTOR = "thread"
        pipeline.resume_background_runs()  # the restarted process, as its admin list does
        done = pipeline.wait_for_run(run_id=retry_run.pk, timeout_s=30)
        assert (done.status, done.attempt) == (RunStatus.SUCCEEDED, 2)


class TestQuarantineThroughTheApi:
    def test_quarantine__refuses_uncounted_then_probe_lifts(
        self, operator_client, background, tmp_path
    ):
        """Two crashes quarantine; a run is refused (409, not counted); the probe lifts it."""
        add_crashy(background, "breaker", retry=None, quarantine_after=2)
        params = {"counter": str(tmp_path / "count"), "crashes": 2}
        for _ in range(2):
            assert post_run(operator_client, "breaker", params, wait=30).json()["status"] == (
                "crashed"
            )
        record = operator_client.get("/v1/plugins/breaker/health").json()
        assert record["quarantine"]["state"] == "open"
        assert "quarantined after 2 consecutive failures" in record["quarantine"]["reason"]
        refused = post_run(operator_client, "breaker", params)
        assert refused.status_code == 409 and "quarantined" in refused.json()["detail"]
        after = operator_client.get("/v1/plugins/breaker/health").json()
        assert (after["error_count"], after["consecutive_failures"]) == (2, 2)
        # The cooldown passes (moved, not waited for): the next run is the probe.
        Plugin.objects.filter(name="breaker").update(
            quarantined_until=timezone.now() - timedelta(seconds=1)
        )
        assert operator_client.get("/v1/plugins/breaker/health").json()["quarantine"]["state"] == (
            "half_open"
        )
        probe = post_run(operator_client, "breaker", params, wait=30).json()
        assert probe["status"] == "succeeded"
        healed = operator_client.get("/v1/plugins/breaker/health").json()
        assert healed["quarantine"] == {"state": "closed", "reason": None, "until": None}
        kinds = PluginEvent.objects.filter(plugin__name="breaker").values_list("kind", flat=True)
        assert {EventKind.QUARANTINED, EventKind.QUARANTINE_PROBE, EventKind.QUARANTINE_LIFTED} <= (
            set(kinds)
        )
