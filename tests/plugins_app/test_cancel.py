"""Cancelling a run: CANCELLED in one transaction, not a plugin failure; a running one's
processes are killed wherever it runs (here: the thread executor and a command's inline run)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from plugins_app import pipeline, services
from plugins_app.cancel_watch import CancelWatch, cancel_watch
from plugins_app.errors import IllegalTransition, RunNotFound
from plugins_app.executor import shutdown_executor
from plugins_app.models import (
    EventKind,
    Plugin,
    PluginEvent,
    PluginRun,
    PluginState,
    RunOutcomeKind,
    RunStatus,
    RunTally,
)
from tests.proc_table import SLOW_TREE, wait_gone, wait_pids

RETRY = {"max_attempts": 3, "backoff_s": 0, "on_error": True}


def queued(name: str) -> PluginRun:
    return services.run_queue(name=name, params={}, actor="api:bob")


def running(name: str) -> PluginRun:
    run = queued(name)
    return services.run_start(run_id=run.pk, worker="host:1")


@pytest.mark.django_db
class TestRunCancelService:
    def test_queued_run__cancelled_and_never_starts(self, make_plugin):
        """A queued run ends CANCELLED with who cancelled it; a worker then starts nothing."""
        make_plugin("p")
        run = queued("p")
        cancelled = services.run_cancel(run_id=run.pk, actor="user:ann")
        assert (cancelled.status, cancelled.outcome) == (RunStatus.CANCELLED, "cancelled")
        assert cancelled.cancelled_by == "user:ann" and cancelled.finished_at is not None
        assert "cancelled by user:ann" in cancelled.reason
        with pytest.raises(IllegalTransition):
            services.run_start(run_id=run.pk, worker="host:1")
        plugin = Plugin.objects.get(name="p")
        assert (plugin.state, plugin.running_count, plugin.error_count) == (
            PluginState.INITIALIZED,
            0,
            0,
        )
        event = PluginEvent.objects.get(run=run, kind=EventKind.RUN_CANCELLED)
        assert (event.actor, event.reason) == ("user:ann", cancelled.reason)

    def test_running_run__cancelled_uncounted_and_plugin_not_failed(self, make_plugin):
        """A running run ends CANCELLED: no error counted, the plugin back to INITIALIZED."""
        make_plugin("p")
        run = running("p")
        cancelled = services.run_cancel(run_id=run.pk, actor="api:ann")
        plugin = Plugin.objects.get(name="p")
        assert cancelled.status == RunStatus.CANCELLED
        assert cancelled.duration_ms is not None
        assert (plugin.state, plugin.reason, plugin.running_count) == (
            PluginState.INITIALIZED,
            "",
            0,
        )
        assert (plugin.success_count, plugin.error_count, plugin.consecutive_failures) == (0, 0, 0)
        kinds = list(PluginEvent.objects.filter(run=run).values_list("kind", "actor"))
        assert (EventKind.RUN_CANCELLED, "api:ann") in kinds
        assert (EventKind.STATE_CHANGED, "api:ann") in kinds  # RUNNING -> INITIALIZED
        assert RunTally.objects.get(plugin=plugin).outcome == RunOutcomeKind.CANCELLED

    def test_running_after_failures__back_to_failed_with_last_failure(
        self, make_plugin, finish_run
    ):
        """Cancelling after a failure leaves the plugin FAILED with that failure's reason."""
        make_plugin("p")
        failed = finish_run("p", RunStatus.FAILED)
        run = running("p")
        services.run_cancel(run_id=run.pk, actor="api:ann")
        plugin = Plugin.objects.get(name="p")
        assert (plugin.state, plugin.reason) == (PluginState.FAILED, failed.reason)
        assert (plugin.error_count, plugin.consecutive_failures) == (1, 1)

    def test_cancelled_run__not_retried(self, make_plugin):
        """A plugin with a retry policy queues no new attempt for a cancelled run."""
        make_plugin("p", retry=RETRY)
        run = running("p")
        services.run_cancel(run_id=run.pk, actor="api:ann")
        assert PluginRun.objects.filter(plugin__name="p").count() == 1

    def test_finished_run__refused_with_its_status(self, make_plugin, finish_run):
        """A finished run cannot be cancelled: IllegalTransition naming its status."""
        make_plugin("p")
        run = finish_run("p", RunStatus.SUCCEEDED)
        with pytest.raises(IllegalTransition) as refused:
            services.run_cancel(run_id=run.pk, actor="api:ann")
        assert f"Run {run.pk} of plugin 'p' already finished (succeeded)" in str(refused.value)
        assert PluginRun.objects.get(pk=run.pk).status == RunStatus.SUCCEEDED

    def test_unknown_run__not_found(self):
        """Cancelling a run that does not exist raises RunNotFound."""
        with pytest.raises(RunNotFound):
            services.run_cancel(run_id=424242, actor="api:ann")


@pytest.fixture
def slow_tree(plugins, settings):
    """A plugin whose call starts a child and sleeps; runs on the thread executor."""
    settings.PORTAL_RUN_EXECUTOR = "thread"
    shutdown_executor()
    plugins.add("tree", SLOW_TREE)
    pipeline.load_plugins(names=["tree"], actor="test")
    yield plugins
    shutdown_executor()


@pytest.mark.django_db(transaction=True)
class TestCancelRealRuns:
    def test_thread_executor__running_call_and_child_killed(self, slow_tree, tmp_path: Path):
        """A run on the thread executor: cancel kills its call and its child (process table),
        the run is CANCELLED, the plugin INITIALIZED, nothing counted."""
        pid_file = tmp_path / "pids"
        run = pipeline.submit_run(name="tree", params={"pid_file": str(pid_file)}, actor="t")
        pids = wait_pids(pid_file)
        services.run_cancel(run_id=run.pk, actor="user:ann")
        wait_gone(pids)
        finished = pipeline.wait_for_run(run_id=run.pk, timeout_s=10)
        assert (finished.status, finished.cancelled_by) == (RunStatus.CANCELLED, "user:ann")
        plugin = Plugin.objects.get(name="tree")
        assert (plugin.state, plugin.running_count, plugin.error_count) == (
            PluginState.INITIALIZED,
            0,
            0,
        )

    def test_a_run_finished_here__never_taken_for_a_cancel(self, plugins, monkeypatch, caplog):
        """The cancel watch polling right after this process finished a run (the race of its
        0.5 s poll) neither cancels the call nor logs the run as cancelled elsewhere."""
        plugins.add("quick", "def run():\n    return 1\n")
        pipeline.load_plugins(names=["quick"], actor="test")
        polled: list[int] = []
        finish = services.run_finish

        def finish_then_poll(**kwargs):
            run = finish(**kwargs)
            polled.extend(cancel_watch().poll())
            return run

        monkeypatch.setattr(services, "run_finish", finish_then_poll)
        run = pipeline.run_plugin(name="quick", params={}, actor="test")

        assert (run.status, polled) == (RunStatus.SUCCEEDED, [])
        assert "ended elsewhere" not in caplog.text

    def test_inline_run__cancelled_from_another_thread(self, slow_tree, tmp_path: Path):
        """runplugin's synchronous path: a cancel elsewhere ends its call, CANCELLED returned."""
        pid_file = tmp_path / "pids"
        ended: list[PluginRun] = []
        call = threading.Thread(
            target=lambda: ended.append(
                pipeline.run_plugin(name="tree", params={"pid_file": str(pid_file)}, actor="t")
            ),
            daemon=True,
        )
        call.start()
        pids = wait_pids(pid_file)
        run = PluginRun.objects.get(status=RunStatus.RUNNING)
        services.run_cancel(run_id=run.pk, actor="api:ann")
        wait_gone(pids)
        call.join(10)
        assert [r.status for r in ended] == [RunStatus.CANCELLED]

    def test_wait__returns_as_soon_as_the_run_is_cancelled(self, slow_tree, tmp_path: Path):
        """A `?wait=` on a run answers within 0.5 s of its cancel's commit (on PostgreSQL the
        cancel notifies waiters; without it they would notice at the next 1 s recheck)."""
        import time

        pid_file = tmp_path / "pids"
        run = pipeline.submit_run(name="tree", params={"pid_file": str(pid_file)}, actor="t")
        wait_pids(pid_file)
        answered: list[float] = []
        waiter = threading.Thread(
            target=lambda: (
                pipeline.wait_for_run(run_id=run.pk, timeout_s=30),
                answered.append(time.monotonic()),
            ),
            daemon=True,
        )
        waiter.start()
        time.sleep(0.3)  # the waiter is listening: nothing to await from outside it
        services.run_cancel(run_id=run.pk, actor="user:ann")
        cancelled_at = time.monotonic()
        waiter.join(10)
        assert answered and answered[0] - cancelled_at < 0.5, answered


@pytest.mark.django_db(transaction=True)
class TestCancelWatchThread:
    def test_runs_in_a_row__one_poll_thread(self):
        """Calls one after the other are watched by one thread (and its one connection), not
        a thread started for each run."""
        watch = CancelWatch(poll_s=0.05, linger_s=60)
        try:
            with watch.watching(1):
                first = watch.poll_thread
            with watch.watching(2):
                second = watch.poll_thread
            assert first is not None and second is first and first.is_alive()
        finally:
            watch.stop()
        assert not first.is_alive()

    def test_nothing_watched_for_the_linger__thread_ends(self):
        """With no call to watch for its linger, the thread ends and holds no connection."""
        watch = CancelWatch(poll_s=0.05, linger_s=0.2)
        with watch.watching(1):
            thread = watch.poll_thread
        thread.join(10)
        assert not thread.is_alive() and watch.poll_thread is None
