"""A run's bookkeeping stays a fixed, small number of queries: on a fleet it is most of the
portal's CPU per run (docs/scale-out.md), so each query a change adds shows as throughput lost."""

from __future__ import annotations

import pytest
from django.db import connection

from plugins_app import pipeline, runner, services
from plugins_app.models import RunStatus

pytestmark = pytest.mark.django_db

TRIVIAL = "def run():\n    return 1\n"
# The claim (lock run and plugin, update both, one event) and the finish (lock, run row,
# tallies, webhook check, plugin row, one event, re-reads), each in its transaction, plus
# the check that the source is still there.
WORKER_QUERIES = 17


def test_worker_side_of_a_run__at_most_17_queries(plugins, django_assert_max_num_queries):
    """Claiming, calling and finishing a queued run of a plain plugin takes at most 17
    queries (it took 23 while each service read back the rows it had just locked or written)."""
    plugins.add("trivial", TRIVIAL)
    pipeline.load_plugins(actor="test")
    runner.run_plugin(name="trivial", params={}, actor="test")  # the warm host is started
    run = services.run_queue(name="trivial", params={}, actor="test")
    # PostgreSQL adds the NOTIFY that wakes waiters in other processes (plugins_app.run_waits).
    notify = 1 if connection.vendor == "postgresql" else 0
    with django_assert_max_num_queries(WORKER_QUERIES + notify):
        finished = runner.execute_run(run.pk)
    assert (finished.status, finished.result) == (RunStatus.SUCCEEDED, 1)
