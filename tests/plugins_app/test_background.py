"""A web process's background loops: the thread executor's heartbeat from the process start,
and a SIGTERM that hands queued runs back."""

from __future__ import annotations

import logging
import threading
import time
from datetime import timedelta

import pytest
from django.db import OperationalError, connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from plugins_app import pipeline, services
from plugins_app.background import (
    finish_runs_in_progress,
    start_web_process_loops,
    stop_taking_runs,
)
from plugins_app.executor import Heartbeat, ThreadExecutor, shutdown_executor
from plugins_app.models import Plugin, PluginRun, RunStatus
from plugins_app.runner import execute_run
from plugins_app.schedules.scheduler import scheduler_loop

# The heartbeat and pool threads have their own connections: they see committed data only.
pytestmark = pytest.mark.django_db(transaction=True)

ACTOR = "api:tester"


@pytest.fixture
def sleeper(plugins, settings):
    """A plugin that sleeps; the thread executor with a fast heartbeat, stopped after."""
    settings.PORTAL_RUN_EXECUTOR = "thread"
    settings.PORTAL_RUN_HEARTBEAT_S = 0.1
    settings.PORTAL_SCHEDULER = "off"
    shutdown_executor()
    plugins.add("sleeper", "import time\ndef run(s=0.0):\n    time.sleep(s)\n    return s\n")
    pipeline.reload_plugin(name="sleeper", actor=ACTOR)
    yield "sleeper"
    shutdown_executor()


def wait_until(condition, timeout_s: float = 20.0) -> None:
    """Poll the database, which the executor's threads write, until `condition` holds."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def heartbeat_running() -> bool:
    return any(thread.name == "portal-run-heartbeat" for thread in threading.enumerate())


def status(run_id: int) -> str:
    return PluginRun.objects.get(pk=run_id).status


class TestWebProcessStart:
    def test_thread_executor__orphans_handled_at_start_without_a_query_here(self, sleeper):
        """At a web process's start, with no run submitted, a dead process's RUNNING run ends
        INTERRUPTED and its QUEUED run is run, while the start itself sends no query."""
        dead = services.run_queue(name=sleeper, params={}, actor=ACTOR)
        services.run_start(run_id=dead.pk, worker="deadhost:4242")
        an_hour_ago = timezone.now() - timedelta(hours=1)
        PluginRun.objects.filter(pk=dead.pk).update(heartbeat_at=an_hour_ago)
        orphan = services.run_queue(name=sleeper, params={}, actor=ACTOR)
        PluginRun.objects.filter(pk=orphan.pk).update(queued_at=an_hour_ago)

        with CaptureQueriesContext(connection) as queries:
            start_web_process_loops()

        assert len(queries) == 0, [query["sql"] for query in queries]
        wait_until(lambda: (status(dead.pk), status(orphan.pk)) == ("interrupted", "succeeded"))

    def test_celery_executor__no_heartbeat_in_the_web_process(self, sleeper, settings):
        """With the celery executor a web process starts no heartbeat: worker nodes reconcile."""
        settings.PORTAL_RUN_EXECUTOR = "celery"
        start_web_process_loops()
        assert not heartbeat_running()


class TestStopTakingRuns:
    def test_sigterm__running_run_finishes_queued_ones_stay_queued(self, sleeper, settings):
        """After stop_taking_runs the run going finishes SUCCEEDED, and the runs queued in
        this process, submitted before or after, are never started: they stay QUEUED."""
        settings.PORTAL_RUN_WORKERS = 1
        going = pipeline.submit_run(name=sleeper, params={"s": 1.0}, actor=ACTOR)
        waiting = pipeline.submit_run(name=sleeper, params={}, actor=ACTOR)
        wait_until(lambda: status(going.pk) == RunStatus.RUNNING)

        stop_taking_runs()
        late = pipeline.submit_run(name=sleeper, params={}, actor=ACTOR)
        finish_runs_in_progress()

        assert [status(run.pk) for run in (going, waiting, late)] == [
            "succeeded",
            "queued",
            "queued",
        ]
        plugin = Plugin.objects.get(name=sleeper)
        assert (plugin.success_count, plugin.error_count, plugin.running_count) == (1, 0, 0)

    def test_after_the_exit_began__a_late_run_stays_queued(self, sleeper, settings):
        """A run queued after finish_runs_in_progress (a schedule firing as the worker exits)
        is not started by a new executor and raises nothing: it stays QUEUED for a live
        process; the scheduler thread is stopped too."""
        settings.PORTAL_SCHEDULER = "thread"
        start_web_process_loops()
        finish_runs_in_progress()
        assert not scheduler_loop.running

        late = pipeline.submit_run(name=sleeper, params={}, actor=ACTOR)

        shutdown_executor(wait=True)
        assert status(late.pk) == RunStatus.QUEUED

    def test_a_shut_executor__a_submit_leaves_the_run_queued(self, sleeper):
        """Submitting to an executor whose pool is shut (the interpreter exiting) raises
        nothing: the run stays QUEUED for a live process to adopt."""
        executor = ThreadExecutor(1, execute_run)
        executor.shutdown()
        run = services.run_queue(name=sleeper, params={}, actor=ACTOR)

        executor.submit(run.pk)

        assert status(run.pk) == RunStatus.QUEUED


class TestHeartbeatDuringAnOutage:
    def test_failing_ticks__one_error_then_one_line_when_it_works_again(self, settings, caplog):
        """Five ticks in a row fail (the database away): one error with its traceback, not
        five, then one line saying the heartbeat works again and how many ticks failed."""
        settings.PORTAL_RUN_HEARTBEAT_S = 0.05
        ticks: list[int] = []
        recovered = threading.Event()

        def sweep() -> None:
            ticks.append(len(ticks))
            if len(ticks) <= 5:
                raise OperationalError("the database is away (test)")
            if len(ticks) >= 7:
                recovered.set()

        beating = Heartbeat()
        beating.add_sweep(sweep)
        beating.start()
        try:
            assert recovered.wait(30)
        finally:
            beating.stop()

        mine = [r for r in caplog.records if r.name == "plugins_app.executor"]
        errors = [r for r in mine if r.levelno >= logging.ERROR]
        assert len(errors) == 1 and errors[0].exc_info, [r.getMessage() for r in mine]
        back = [r.getMessage() for r in mine if "works again" in r.getMessage()]
        assert back == ["Run heartbeat works again after 5 failed ticks"]
