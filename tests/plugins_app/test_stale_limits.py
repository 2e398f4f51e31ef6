"""Each run is judged stale by the limit it was started with, not by the reconciler's own.

Seen before: a server started with PORTAL_RUN_STALE_AFTER_S=5 interrupted a live `runplugin`
run that used the 60 s default, because every reconciler applied its own setting to all runs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from plugins_app import executor, pipeline, services
from plugins_app.models import Plugin, PluginRun, RunStatus
from tests.commands.test_commands import EXAMPLES, ROOT, portal_env


def started_with_limit(settings, name: str, stale_after_s: float) -> PluginRun:
    """A run of `name` started by a process whose PORTAL_RUN_STALE_AFTER_S is `stale_after_s`."""
    settings.PORTAL_RUN_STALE_AFTER_S = stale_after_s
    run = services.run_queue(name=name, params={}, actor="t")
    return services.run_start(run_id=run.pk, worker="elsewhere:1")


def silent_for(run: PluginRun, seconds: float) -> None:
    """The run's process last beat `seconds` ago."""
    beat = timezone.now() - timedelta(seconds=seconds)
    PluginRun.objects.filter(pk=run.pk).update(heartbeat_at=beat)


@pytest.mark.django_db
class TestPerRunStaleLimit:
    def test_run_records_the_limit_of_the_process_that_started_it(self, make_plugin, settings):
        """run_start stores the starting process's PORTAL_RUN_STALE_AFTER_S on the run."""
        make_plugin("p")
        run = started_with_limit(settings, "p", 60)
        assert run.stale_after == timedelta(seconds=60)

    def test_shorter_limit_elsewhere__does_not_interrupt_a_live_run(self, make_plugin, settings):
        """A reconciler with a 5 s limit leaves a run started with 60 s, silent for 10 s."""
        make_plugin("p")
        run = started_with_limit(settings, "p", 60)
        silent_for(run, 10)
        settings.PORTAL_RUN_STALE_AFTER_S = 5
        assert executor.reconcile_interrupted() == []
        run.refresh_from_db()
        assert run.status == RunStatus.RUNNING
        assert Plugin.objects.get(name="p").error_count == 0

    def test_longer_limit_elsewhere__still_interrupts_a_run_past_its_own(
        self, make_plugin, settings
    ):
        """A reconciler with a 60 s limit interrupts a run started with 5 s, silent for 10 s."""
        make_plugin("p")
        run = started_with_limit(settings, "p", 5)
        silent_for(run, 10)
        settings.PORTAL_RUN_STALE_AFTER_S = 60
        assert [r.pk for r in executor.reconcile_interrupted()] == [run.pk]
        assert Plugin.objects.get(name="p").error_count == 1

    def test_run_without_a_recorded_limit__judged_by_the_reconcilers(self, make_plugin, settings):
        """A run started before limits were recorded falls back to the reconciler's setting."""
        make_plugin("p")
        run = started_with_limit(settings, "p", 60)
        PluginRun.objects.filter(pk=run.pk).update(stale_after=None)
        silent_for(run, 10)
        settings.PORTAL_RUN_STALE_AFTER_S = 5
        assert [r.pk for r in executor.reconcile_interrupted()] == [run.pk]

    def test_finish_as_stale__rechecks_the_runs_own_limit_under_the_lock(
        self, make_plugin, settings
    ):
        """run_finish(stale_as_of=...) leaves a run whose own limit has not passed yet."""
        make_plugin("p")
        run = started_with_limit(settings, "p", 60)
        silent_for(run, 10)
        outcome = services.RunOutcome(status=RunStatus.INTERRUPTED, reason="x" * 40)
        kept = services.run_finish(
            run_id=run.pk,
            outcome=outcome,
            stale_as_of=timezone.now(),
            default_stale_after=timedelta(seconds=5),
        )
        assert kept.status == RunStatus.RUNNING


@pytest.mark.django_db(transaction=True)
@pytest.mark.portal_processes
class TestTwoProcessesWithDifferentLimits:
    def test_server_with_5s_limit__leaves_live_runplugin_run_with_60s_limit(self, settings):
        """The seen case: this process (5 s limit) beats while a `runplugin` process (60 s)
        runs a plugin, silent for 10 s; the run goes on and succeeds, counted once."""
        settings.PORTAL_PLUGIN_DIRS = [str(EXAMPLES)]
        pipeline.load_plugins(names=["slow"], actor="test")
        env = {**portal_env(), "PORTAL_RUN_STALE_AFTER_S": "60", "PORTAL_RUN_HEARTBEAT_S": "25"}
        process = subprocess.Popen(
            [sys.executable, "manage.py", "runplugin", "slow", "--param", "seconds=4"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 60
            while not PluginRun.objects.filter(status=RunStatus.RUNNING).exists():
                assert process.poll() is None, process.communicate()
                assert time.monotonic() < deadline, "the run never started"
                time.sleep(0.05)
            run = PluginRun.objects.get()
            silent_for(run, 10)  # its next beat is 25 s away: 10 s of silence is within 60 s
            settings.PORTAL_RUN_HEARTBEAT_S = 1
            settings.PORTAL_RUN_STALE_AFTER_S = 5
            executor.heartbeat().beat()  # the thread executor's tick: it reconciles
            run.refresh_from_db()
            assert run.status == RunStatus.RUNNING
            _, err = process.communicate(timeout=60)
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        assert process.returncode == 0, err
        run.refresh_from_db()
        plugin = Plugin.objects.get(name="slow")
        assert (run.status, run.stale_after) == (RunStatus.SUCCEEDED, timedelta(seconds=60))
        assert (plugin.success_count, plugin.error_count, plugin.running_count) == (1, 0, 0)
