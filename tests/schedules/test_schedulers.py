"""Schedulers as they run: a thread of the web process, and `manage.py runscheduler`
processes, several at once on one database, each occurrence fired once."""

from __future__ import annotations

import itertools
import os
import signal
import socket
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from plugins_app.models import PluginRun, RunStatus
from plugins_app.schedules.models import FiringOutcome, ScheduleFiring
from plugins_app.schedules.scheduler import scheduler_loop
from tests.concurrency_support import database_url
from tests.proc_table import output_once_exited

ROOT = Path(__file__).resolve().parents[2]


def wait_until(condition, timeout_s: float = 60.0) -> None:
    """Poll the database until `condition()` holds (the schedulers write nothing else)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)


@pytest.mark.django_db(transaction=True)
class TestWebProcessThread:
    def test_thread__fires_and_the_run_finishes(self, real_plugin, due_schedule):
        """The web process's scheduler thread fires a due schedule; the run executes."""
        due_schedule(real_plugin(), params={"n": 2})
        scheduler_loop.wake()
        try:
            wait_until(lambda: PluginRun.objects.filter(status=RunStatus.SUCCEEDED).exists(), 60)
        finally:
            scheduler_loop.stop()
        run = PluginRun.objects.get()
        assert (run.result, run.actor) == ({"n": 2}, "schedule:every-minute")
        assert ScheduleFiring.objects.get().run_id == run.pk


@pytest.mark.django_db(transaction=True)
@pytest.mark.portal_processes
class TestTwoSchedulerProcesses:
    def test_two_processes__each_occurrence_fired_once(self, real_plugin, due_schedule, plugins):
        """Two runscheduler processes on one database fire every 1 s occurrence exactly once."""
        schedule = due_schedule(real_plugin(), every_s=1.0, overlap="allow", late_s=0)
        env = {
            **os.environ,
            "DATABASE_URL": database_url(connection.settings_dict),
            "PORTAL_PLUGIN_DIRS": str(plugins.path),
            "PYTHONFAULTHANDLER": "1",
        }
        command = [sys.executable, "manage.py", "runscheduler", "--tick", "0.1"]
        processes = [
            subprocess.Popen(
                command,
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(2)
        ]
        firings = ScheduleFiring.objects.filter(schedule=schedule)
        try:
            wait_until(lambda: firings.count() >= 6, 90)
        finally:
            for process in processes:
                process.send_signal(signal.SIGTERM)  # both stop at once, then each is awaited
            try:
                outputs = [output_once_exited(process) for process in processes]
            finally:
                for process in processes:  # one that hung fails the test; none outlives it
                    if process.poll() is None:
                        process.kill()
                        process.communicate()
        for process, (stdout, stderr) in zip(processes, outputs, strict=True):
            assert process.returncode == 0, stderr
            assert "Traceback" not in stderr, stderr
            assert "Scheduler stopped" in stdout
        assert_each_occurrence_once(schedule, all_finished=True)


def assert_each_occurrence_once(schedule, *, all_finished: bool) -> None:
    """Every 1 s occurrence has one firing (none twice, none left out) and one run."""
    firings = ScheduleFiring.objects.filter(schedule=schedule)
    occurrences = sorted(firings.values_list("occurrence", flat=True))
    steps = {later - earlier for earlier, later in itertools.pairwise(occurrences)}
    assert steps == {timedelta(seconds=1)}
    assert set(firings.values_list("outcome", flat=True)) == {FiringOutcome.FIRED}
    runs = PluginRun.objects.filter(plugin=schedule.plugin)
    assert runs.count() == len(occurrences)
    if all_finished:
        assert set(runs.values_list("status", flat=True)) == {RunStatus.SUCCEEDED}


@pytest.mark.django_db(transaction=True)
@pytest.mark.portal_processes
class TestWebProcesses:
    def test_gunicorn_two_workers__each_occurrence_fired_once(
        self, real_plugin, due_schedule, plugins, tmp_path
    ):
        """Two gunicorn workers, each with its scheduler thread, fire each occurrence once."""
        schedule = due_schedule(real_plugin(), every_s=1.0, overlap="allow", late_s=0)
        listener = socket.create_server(("127.0.0.1", 0))
        listener.set_inheritable(True)
        env = {
            **os.environ,
            "DATABASE_URL": database_url(connection.settings_dict),
            "SECRET_KEY": "scheduler-test-key-" + "x" * 40,
            "PORTAL_PLUGIN_DIRS": str(plugins.path),
            "PORTAL_VAR_DIR": str(tmp_path / "var"),
            "PORTAL_SCHEDULER_TICK_S": "0.1",
            "PYTHONFAULTHANDLER": "1",
        }
        command = [
            sys.executable,
            "-m",
            "gunicorn",
            "portal.wsgi",
            "--workers",
            "2",
            "--bind",
            f"fd://{listener.fileno()}",
            "--log-level",
            "warning",
        ]
        server = subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            pass_fds=[listener.fileno()],
            stderr=subprocess.PIPE,
            text=True,
        )
        firings = ScheduleFiring.objects.filter(schedule=schedule)
        try:
            wait_until(lambda: firings.count() >= 6, 90)
        finally:
            server.send_signal(signal.SIGTERM)
            _, stderr = output_once_exited(server)
            listener.close()
        assert "Traceback" not in stderr, stderr
        # A worker stopping may leave its last run unfinished (the reconciler's job later).
        assert_each_occurrence_once(schedule, all_finished=False)


class TestCommandArguments:
    @pytest.mark.parametrize("tick", ["0", "-1", "nan", "7200"])
    def test_bad_tick__exit_2_with_the_range(self, tick):
        """A --tick outside 0.1..3600 s is refused with exit code 2 and the range."""
        with pytest.raises(CommandError) as caught:
            call_command("runscheduler", "--tick", tick)
        assert caught.value.returncode == 2
        assert "from 0.1 to 3600" in str(caught.value)
