"""The thread executor of real gunicorn servers: runs of killed or stopped servers, no request.

Each test starts gunicorn (portal.wsgi, gthread workers, ./gunicorn.conf.py) on the test
database with a short heartbeat and stale limit, queues runs through the API, then kills or
stops the server and watches the database: nothing is requested of the servers afterwards.
"""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.db import connection

from plugins_app import pipeline
from plugins_app.models import Plugin, PluginRun, RunStatus
from plugins_app.tokens import issue_token
from tests.concurrency_support import database_url
from tools.private_postgres import Gunicorn

pytestmark = [
    pytest.mark.portal_processes,
    pytest.mark.django_db(transaction=True),
    pytest.mark.timeout(300),
]

HEARTBEAT_S = 0.5
STALE_AFTER_S = 3.0
SLACK_S = 1.5  # a poll, a query and a loaded 2-core machine on top of the guarantee
BOOT_S = 90.0  # a gunicorn worker importing Django on a loaded machine

SNOOZE = (
    "import time\n\nlimits = {'timeout_s': 120}\n\n"
    "def run(seconds=1.0):\n    time.sleep(float(seconds))\n    return {'slept_s': seconds}\n"
)


class Servers:
    """gunicorn servers of the test on its database, and the API token to queue runs with."""

    def __init__(self, tmp_path: Path, plugin_dir: Path, token: str) -> None:
        self.tmp_path, self.token = tmp_path, token
        self.env = {
            **os.environ,
            "DATABASE_URL": database_url(connection.settings_dict),
            "SECRET_KEY": "web-process-runs-key-" + "x" * 40,
            "PORTAL_RUN_EXECUTOR": "thread",
            "PORTAL_PLUGIN_DIRS": str(plugin_dir),
            "PORTAL_RUN_HEARTBEAT_S": str(HEARTBEAT_S),
            "PORTAL_RUN_STALE_AFTER_S": str(STALE_AFTER_S),
            "PORTAL_SCHEDULER": "off",
            "PORTAL_API_WRITE_RATE": "1000/minute",
        }
        self.started: list[Gunicorn] = []

    def start(self, *, workers: int, run_workers: int, graceful_timeout_s: int = 5) -> Gunicorn:
        var = self.tmp_path / f"var-{len(self.started)}"
        env = {**self.env, "PORTAL_VAR_DIR": str(var), "PORTAL_RUN_WORKERS": str(run_workers)}
        var.mkdir()
        server = Gunicorn(
            env, var / "gunicorn.log", workers=workers, graceful_timeout_s=graceful_timeout_s
        )
        self.started.append(server)
        return server

    def post_run(self, server: Gunicorn, seconds: float) -> int:
        request = urllib.request.Request(
            f"{server.base}/v1/plugins/snooze/runs",
            data=json.dumps({"params": {"seconds": seconds}}).encode(),
            headers={"Authorization": f"Token {self.token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=BOOT_S) as response:
            return json.loads(response.read())["id"]

    def stop_all(self) -> None:
        for server in self.started:
            if server.process.poll() is None:
                server.stop()
            else:
                server.listener.close()


@pytest.fixture
def servers(plugins, make_user, tmp_path) -> Iterator[Servers]:
    """The plugin `snooze` loaded; servers started by the test are stopped after it."""
    plugins.add("snooze", SNOOZE)
    pipeline.load_plugins(actor="test")
    token = issue_token(user=make_user("operator", "plugins_app.run_plugin"))
    started = Servers(tmp_path, plugins.path, token)
    try:
        yield started
    finally:
        started.stop_all()


def kill_server(server: Gunicorn) -> None:
    """kill -9 of the master and its workers: nothing of the server runs any more."""
    os.kill(server.process.pid, signal.SIGSTOP)  # no replacement worker meanwhile
    for pid in server.workers():
        os.kill(pid, signal.SIGKILL)
    os.kill(server.process.pid, signal.SIGKILL)
    server.process.wait(timeout=30)


def statuses(run_ids: list[int]) -> Counter[str]:
    return Counter(PluginRun.objects.filter(pk__in=run_ids).values_list("status", flat=True))


def wait_until(condition, timeout_s: float, what: str, server: Gunicorn | None = None) -> None:
    """Poll the database (the servers' state) until `condition` holds, or fail with the log."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            log = server.log_text()[-3000:] if server else ""
            raise AssertionError(f"Timed out after {timeout_s:g} s waiting for {what}\n{log}")
        time.sleep(0.05)


def worker_pid(run_id: int) -> int:
    return int(PluginRun.objects.get(pk=run_id).worker.rsplit(":", 1)[1])


class TestReconcilerAtProcessStart:
    def test_killed_worker__its_run_interrupted_with_no_request(self, servers):
        """A gunicorn worker kill -9'd mid-run: its run ends INTERRUPTED within the stale
        limit plus one heartbeat, counted once, though nobody requests anything."""
        server = servers.start(workers=2, run_workers=2)
        run_id = servers.post_run(server, 60)
        wait_until(
            lambda: PluginRun.objects.get(pk=run_id).status == RunStatus.RUNNING,
            BOOT_S,
            "the run to start",
            server,
        )
        pid = worker_pid(run_id)

        os.kill(pid, signal.SIGKILL)
        killed = time.monotonic()
        wait_until(
            lambda: PluginRun.objects.get(pk=run_id).status == RunStatus.INTERRUPTED,
            30,  # the assertion below holds it to the guarantee; this only bounds a failure
            "the run to be interrupted",
            server,
        )
        took_s = time.monotonic() - killed

        assert took_s <= STALE_AFTER_S + HEARTBEAT_S + SLACK_S, f"took {took_s:.2f} s"
        run = PluginRun.objects.get(pk=run_id)
        assert f":{pid}) stopped responding" in run.reason
        snooze = Plugin.objects.get(name="snooze")
        assert (snooze.error_count, snooze.running_count) == (1, 0)

    def test_runs_queued_by_a_killed_server__adopted_by_a_new_one_with_no_request(self, servers):
        """A server kill -9'd with a run going and 6 queued: a newly started server, asked
        nothing, interrupts the one and runs the 6."""
        first = servers.start(workers=1, run_workers=1)
        going = servers.post_run(first, 60)
        queued = [servers.post_run(first, 0) for _ in range(6)]
        wait_until(
            lambda: PluginRun.objects.get(pk=going).status == RunStatus.RUNNING,
            BOOT_S,
            "the first run to start",
            first,
        )
        kill_server(first)
        assert statuses(queued) == {RunStatus.QUEUED: 6}

        second = servers.start(workers=1, run_workers=2)
        wait_until(
            lambda: (
                statuses([going, *queued]) == {RunStatus.INTERRUPTED: 1, RunStatus.SUCCEEDED: 6}
            ),
            STALE_AFTER_S + BOOT_S,
            "the new server to interrupt one run and run six",
            second,
        )

        (new_pid,) = second.workers()
        assert {worker_pid(run_id) for run_id in queued} == {new_pid}
        snooze = Plugin.objects.get(name="snooze")
        assert (snooze.success_count, snooze.error_count, snooze.running_count) == (6, 1, 0)


class TestGracefulSigterm:
    def test_sigterm__runs_going_finish_the_rest_stay_queued_for_a_new_server(self, servers):
        """SIGTERM to gunicorn with 2 runs going and 8 queued: the 2 end SUCCEEDED, none is
        started or cut afterwards (the rest stay QUEUED), and a new server runs the rest."""
        # A grace long enough for the 2 runs on a loaded machine: the test is about what
        # starts after SIGTERM, not how fast the runs going end.
        server = servers.start(workers=1, run_workers=2, graceful_timeout_s=60)
        run_ids = [servers.post_run(server, 1.0) for _ in range(10)]
        wait_until(
            lambda: statuses(run_ids)[RunStatus.RUNNING] == 2, BOOT_S, "two runs going", server
        )

        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=90) == 0, server.log_text()[-3000:]

        after = statuses(run_ids)
        assert set(after) <= {RunStatus.SUCCEEDED, RunStatus.QUEUED}, server.log_text()[-3000:]
        assert after[RunStatus.SUCCEEDED] >= 2 and after[RunStatus.QUEUED] >= 6, after

        second = servers.start(workers=1, run_workers=2)
        wait_until(
            lambda: statuses(run_ids) == {RunStatus.SUCCEEDED: 10},
            STALE_AFTER_S + BOOT_S,
            "the new server to run the rest",
            second,
        )
        snooze = Plugin.objects.get(name="snooze")
        assert (snooze.success_count, snooze.error_count, snooze.running_count) == (10, 0, 0)
