"""`?wait=` is woken by the run's finish, not by a poll of its row.

How soon after the finish it answers is a figure of benchmarks/cluster_bench.py (docs/scale-out.md),
not a timed test: here the polls are made a minute apart, so only the wake can answer in time.
"""

from __future__ import annotations

import time

import pytest
from rest_framework.test import APIClient

from plugins_app import pipeline, run_waits
from plugins_app.executor import shutdown_executor
from plugins_app.models import RunStatus
from plugins_app.tokens import issue_token

# The thread executor's threads have their own connections: they see committed rows only.
pytestmark = pytest.mark.django_db(transaction=True)

NAP = "import time\n\ndef run():\n    time.sleep(0.1)\n    return 'rested'\n"
WAIT_S = 30
NO_POLL_S = 60.0  # longer than the wait: a poll could not answer in time


def test_wait__woken_by_the_finish_not_by_a_poll__thread_executor(
    plugins, make_user, settings, monkeypatch
):
    """With polls a minute apart, ?wait=30 still answers with the finished run, long before
    its wait is over: the finish woke it."""
    monkeypatch.setattr(run_waits, "SQLITE_POLL_S", NO_POLL_S)
    monkeypatch.setattr(run_waits, "RECHECK_S", NO_POLL_S)
    settings.PORTAL_RUN_EXECUTOR = "thread"
    shutdown_executor()
    plugins.add("nap", NAP)
    pipeline.reload_plugin(name="nap", actor="test")
    client = APIClient()
    token = issue_token(user=make_user("operator", "plugins_app.run_plugin"))
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    try:
        for _ in range(3):
            started = time.monotonic()
            response = client.post(f"/v1/plugins/nap/runs?wait={WAIT_S}", {}, format="json")
            took_s = time.monotonic() - started
            assert response.status_code == 200, response.content
            body = response.json()
            assert (body["status"], body["result"]) == (RunStatus.SUCCEEDED, "rested")
            assert took_s < WAIT_S / 2, f"answered after {took_s:.1f} s: the wait was not woken"
    finally:
        shutdown_executor()
