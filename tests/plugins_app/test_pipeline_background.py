"""Background runs: the executor, waiting for runs, the heartbeat and interrupted runs."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.utils import timezone

from plugins_app import pipeline, services
from plugins_app.errors import PluginRefused
from plugins_app.executor import get_executor, heartbeat, shutdown_executor
from plugins_app.models import Plugin, PluginRun, PluginState, RunStatus

# Executor and heartbeat threads have their own connections: they see committed data only.
pytestmark = pytest.mark.django_db(transaction=True)

ACTOR = "api:tester"


@pytest.fixture
def plugins(plugins, settings):
    """The shared plugin directory, runs on the thread executor (in the background)."""
    settings.PORTAL_RUN_EXECUTOR = "thread"
    shutdown_executor()
    yield plugins
    shutdown_executor()


def sleeper(plugins, name: str = "sleeper") -> None:
    plugins.add(name, "import time\ndef run(s=0.0):\n    time.sleep(s)\n    return s\n")
    pipeline.reload_plugin(name=name, actor=ACTOR)


def stale_running_run(name: str, *, age_s: float = 3600) -> PluginRun:
    """A run RUNNING in a process that died: its heartbeat stopped age_s ago."""
    run = services.run_queue(name=name, params={}, actor=ACTOR)
    services.run_start(run_id=run.pk, worker="deadhost:4242")
    PluginRun.objects.filter(pk=run.pk).update(
        heartbeat_at=timezone.now() - timedelta(seconds=age_s)
    )
    return run


def wait_until(condition, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


class TestSubmit:
    def test_submit__returns_at_once_and_finishes_in_background(self, plugins):
        """submit_run returns before the run ends; the executor finishes it."""
        sleeper(plugins)
        run = pipeline.submit_run(name="sleeper", params={"s": 1.0}, actor=ACTOR)
        assert run.status in (RunStatus.QUEUED, RunStatus.RUNNING)  # not waited for
        finished = pipeline.wait_for_run(run_id=run.pk, timeout_s=20)
        assert (finished.status, finished.result, finished.actor) == (
            RunStatus.SUCCEEDED,
            1.0,
            ACTOR,
        )

    def test_wait_for_run__returns_unfinished_run_after_timeout(self, plugins):
        """wait_for_run gives the run as it stands when the wait is over."""
        sleeper(plugins)
        run = pipeline.submit_run(name="sleeper", params={"s": 1.5}, actor=ACTOR)
        waited = pipeline.wait_for_run(run_id=run.pk, timeout_s=0.3)
        assert waited.status in (RunStatus.QUEUED, RunStatus.RUNNING)
        assert pipeline.wait_for_run(run_id=run.pk, timeout_s=20).status == RunStatus.SUCCEEDED

    def test_concurrent_runs__counted_exactly(self, plugins):
        """Runs executed side by side are each counted once, and the state settles."""
        sleeper(plugins)
        runs = [
            pipeline.submit_run(name="sleeper", params={"s": 0.2}, actor=ACTOR) for _ in range(6)
        ]
        for run in runs:
            assert pipeline.wait_for_run(run_id=run.pk, timeout_s=30).is_finished
        plugin = Plugin.objects.get(name="sleeper")
        assert (plugin.success_count, plugin.running_count, plugin.state) == (
            6,
            0,
            PluginState.INITIALIZED,
        )

    def test_inline_executor__run_finished_on_return(self, plugins, settings):
        """With PORTAL_RUN_EXECUTOR=inline, submit_run returns the finished run."""
        settings.PORTAL_RUN_EXECUTOR = "inline"
        sleeper(plugins)
        run = pipeline.submit_run(name="sleeper", params={"s": 0}, actor=ACTOR)
        assert run.status == RunStatus.SUCCEEDED

    def test_unknown_executor__says_which_exist(self, settings):
        """A misspelt PORTAL_RUN_EXECUTOR is refused, naming the valid ones."""
        settings.PORTAL_RUN_EXECUTOR = "rq"
        with pytest.raises(ImproperlyConfigured, match="use one of: thread, inline, celery"):
            get_executor(pipeline.execute_run)

    def test_submit_refused__no_run_queued(self, plugins):
        """A disabled plugin's submission is refused at once, with no run row."""
        sleeper(plugins)
        services.plugin_disable(name="sleeper", note="", actor="user:ops")
        with pytest.raises(PluginRefused):
            pipeline.submit_run(name="sleeper", params={}, actor=ACTOR)
        assert PluginRun.objects.count() == 0


class TestInterruptedRuns:
    def test_reconcile__stale_run_interrupted_once(self, plugins):
        """A run whose process died is INTERRUPTED, counted once, with a reason saying when."""
        sleeper(plugins)
        run = stale_running_run("sleeper")
        (interrupted,) = pipeline.reconcile_interrupted(actor="system")
        assert interrupted.pk == run.pk
        assert interrupted.status == RunStatus.INTERRUPTED
        assert pipeline.reconcile_interrupted(actor="system") == []
        plugin = Plugin.objects.get(name="sleeper")
        assert (plugin.state, plugin.error_count, plugin.running_count) == (
            PluginState.FAILED,
            1,
            0,
        )
        assert plugin.reason.startswith(
            f"Run {run.pk} of plugin 'sleeper' was interrupted: the process running it "
            "(deadhost:4242) stopped responding, last seen at "
        )

    def test_heartbeat__keeps_own_runs_fresh(self, plugins):
        """A beat refreshes this process's runs, so the sweep leaves them alone."""
        sleeper(plugins)
        run = stale_running_run("sleeper", age_s=3600)
        with heartbeat().tracking(run.pk):
            heartbeat().beat()
        run.refresh_from_db()
        assert run.status == RunStatus.RUNNING
        assert timezone.now() - run.heartbeat_at < timedelta(seconds=30)

    def test_heartbeat_thread__sweeps_periodically(self, plugins, settings):
        """The heartbeat thread finds runs orphaned by another process on its own."""
        settings.PORTAL_RUN_HEARTBEAT_S = 0.05
        sleeper(plugins)
        run = stale_running_run("sleeper")
        heartbeat().start()
        wait_until(lambda: PluginRun.objects.get(pk=run.pk).status == RunStatus.INTERRUPTED)

    def test_long_run__survives_sweeps_thanks_to_heartbeat(self, plugins, settings):
        """A run longer than the stale threshold is kept alive by its heartbeat."""
        settings.PORTAL_RUN_HEARTBEAT_S = 0.05
        settings.PORTAL_RUN_STALE_AFTER_S = 0.5
        sleeper(plugins)
        run = pipeline.submit_run(name="sleeper", params={"s": 1.5}, actor=ACTOR)
        assert pipeline.wait_for_run(run_id=run.pk, timeout_s=20).status == RunStatus.SUCCEEDED

    def test_executor_first_use__reconciles(self, plugins):
        """Starting the thread executor finishes runs left over by a dead process."""
        sleeper(plugins)
        run = stale_running_run("sleeper")
        get_executor(pipeline.execute_run)
        assert PluginRun.objects.get(pk=run.pk).status == RunStatus.INTERRUPTED

    def test_orphaned_queued_run__adopted_and_executed(self, plugins):
        """A run queued by a process that died before starting it is run by a live executor."""
        sleeper(plugins)
        run = services.run_queue(name="sleeper", params={"s": 0}, actor=ACTOR)
        PluginRun.objects.filter(pk=run.pk).update(queued_at=timezone.now() - timedelta(hours=1))
        get_executor(pipeline.execute_run)
        finished = pipeline.wait_for_run(run_id=run.pk, timeout_s=20)
        assert finished.status == RunStatus.SUCCEEDED
        assert Plugin.objects.get(name="sleeper").success_count == 1

    def test_recent_queued_run__not_adopted(self, plugins):
        """A run queued moments ago belongs to its own process's queue and is left alone."""
        sleeper(plugins)
        run = services.run_queue(name="sleeper", params={}, actor=ACTOR)
        assert get_executor(pipeline.execute_run).adopt_orphaned_queued_runs() == []
        assert PluginRun.objects.get(pk=run.pk).status == RunStatus.QUEUED

    def test_run_started_elsewhere__left_alone(self, plugins):
        """Executing a run another process already started changes and counts nothing."""
        sleeper(plugins)
        run = services.run_queue(name="sleeper", params={}, actor=ACTOR)
        services.run_start(run_id=run.pk, worker="otherhost:1")
        again = pipeline.execute_run(run.pk)
        assert (again.status, again.worker) == (RunStatus.RUNNING, "otherhost:1")
        assert Plugin.objects.get(name="sleeper").running_count == 1
