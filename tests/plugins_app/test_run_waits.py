"""Waiting for runs on PostgreSQL: every wait in a process shares one LISTENing connection."""

from __future__ import annotations

import threading
import time

import pytest
from django.db import connection

from plugins_app import run_waits, runner, services
from plugins_app.models import PluginRun, RunStatus

pytestmark = pytest.mark.django_db(transaction=True)

WAIT_S = 30


def listening_sessions() -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            # This test's database only: other test processes listen on theirs.
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND query LIKE 'LISTEN portal_run_finished%%'"
        )
        return cursor.fetchone()[0]


def test_three_waits__one_listening_connection_and_each_woken(make_plugin):
    """Three threads wait for three runs: one session LISTENs for all of them, and each
    wait returns with its run finished as soon as a service finishes it."""
    if connection.vendor != "postgresql":
        pytest.skip("LISTEN/NOTIFY is PostgreSQL's; CI's PostgreSQL pass runs this")
    make_plugin("ocr", quarantine_after=0)
    runs = [services.run_queue(name="ocr", params={}, actor="test") for _ in range(3)]
    waited: dict[int, tuple[str, float]] = {}

    def wait(run: PluginRun) -> None:
        started = time.monotonic()
        try:
            finished = runner.wait_for_run(run_id=run.pk, timeout_s=WAIT_S)
        finally:
            connection.close()  # else its session keeps the test database from being dropped
        waited[run.pk] = (finished.status, time.monotonic() - started)

    threads = [threading.Thread(target=wait, args=(run,)) for run in runs]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 10
    while (run_waits.waits_in_progress(), listening_sessions() > 0) != (3, True):
        assert time.monotonic() < deadline, "the three waits did not start listening"
        time.sleep(0.05)
    # All three wait, and a wait reads its run only once it is listened for.
    assert listening_sessions() == 1

    for run in runs:
        services.run_start(run_id=run.pk, worker="test:1")
        services.run_finish(run_id=run.pk, outcome=services.RunOutcome(status=RunStatus.SUCCEEDED))
    for thread in threads:
        thread.join(WAIT_S)

    assert sorted(status for status, _ in waited.values()) == [RunStatus.SUCCEEDED] * 3
    assert all(took < WAIT_S / 2 for _, took in waited.values()), waited
