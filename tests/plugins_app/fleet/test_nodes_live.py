"""Worker nodes for real: `manage.py runworker` processes on a RabbitMQ vhost of their own."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from plugins_app import pipeline, services
from plugins_app.errors import PluginNotFound
from plugins_app.executor import shutdown_executor
from plugins_app.fleet.celery_app import celery_app
from plugins_app.fleet.queues import live_workers_per_queue
from plugins_app.models import LoadRequest, Plugin, PluginRun, RunStatus, Worker
from plugins_app.tokens import issue_token
from tests.fleet_support import (
    ROOT,
    STALE_AFTER_S,
    NodeProcess,
    broker_vhost,
    node_env,
    process_tree,
    run_status,
    wait_until,
    worker_row,
)
from tests.proc_table import SLOW_TREE, wait_gone, wait_pids

# One xdist worker takes the whole module, so its nodes start once per suite run.
pytestmark = [
    pytest.mark.broker,
    pytest.mark.django_db(transaction=True),
    pytest.mark.xdist_group("fleet_nodes"),
    # The first test also waits for the module's nodes to start: slow on a loaded machine.
    pytest.mark.timeout(300),
]

PLUGINS = {
    "quick": 'version = "1.0"\n\ndef run(x=1):\n    return {"x": x}\n',
    "snooze": (
        "import time\n\nlimits = {'timeout_s': 120}\n\n"
        "def run(seconds=1.0):\n    time.sleep(float(seconds))\n    return {'slept_s': seconds}\n"
    ),
    "tree": SLOW_TREE,
}


@dataclass
class Fleet:
    broker_url: str
    plugin_dir: Path
    var_dir: Path
    env: dict[str, str]
    nodes: dict[str, NodeProcess]

    def start_node(self, name: str, queues: str) -> NodeProcess:
        node = NodeProcess(name, queues, self.env, self.var_dir)
        self.nodes[name] = node
        node.wait_ready()
        return node


@pytest.fixture(scope="module")
def fleet(django_db_setup, django_db_blocker, tmp_path_factory) -> Iterator[Fleet]:
    """Two worker nodes, on the queues 'default' and 'gpu', for the whole module."""
    plugin_dir = tmp_path_factory.mktemp("fleet-plugins")
    for name, source in PLUGINS.items():
        (plugin_dir / f"{name}.py").write_text(source)
    var_dir = tmp_path_factory.mktemp("fleet-var")
    with broker_vhost() as broker_url:
        env = node_env(broker_url, plugin_dir, var_dir)
        fleet = Fleet(broker_url, plugin_dir, var_dir, env, {})
        try:
            fleet.start_node("node-default", "default")
            fleet.start_node("node-gpu", "gpu")
            yield fleet
        finally:
            for node in fleet.nodes.values():
                node.stop(signal.SIGKILL if node.process.poll() is None else signal.SIGTERM)


@pytest.fixture
def on_fleet(fleet: Fleet, settings) -> Iterator[Fleet]:
    """This test's plugins loaded here, then its runs sent to the fleet's broker."""
    settings.PORTAL_PLUGIN_DIRS = [str(fleet.plugin_dir)]
    pipeline.load_plugins(actor="test")
    pipeline.discard_warm_hosts()
    settings.PORTAL_RUN_EXECUTOR = "celery"
    settings.PORTAL_BROKER_URL = fleet.broker_url
    celery_app.cache_clear()
    # The previous test's flush took the nodes' rows; each registers again at its next beat.
    wait_until(lambda: set(live_workers_per_queue()) >= {"default", "gpu"}, 30, "the nodes")
    yield fleet
    shutdown_executor()
    celery_app.cache_clear()


def finished(run_id: int, timeout_s: float = 60.0) -> PluginRun:
    wait_until(lambda: run_status(run_id) not in {"queued", "running"}, timeout_s, f"run {run_id}")
    return PluginRun.objects.get(pk=run_id)


def test_runs_go_to_their_queues_worker_and_wait_where_none_serves(on_fleet):
    """Each plugin's runs execute on a node of its queue; a queue nobody serves keeps its run."""
    services.plugin_set_queue(name="quick", queue="nobody", actor="test")
    waiting = pipeline.submit_run(name="quick", params={"x": 1}, actor="test")
    services.plugin_set_queue(name="quick", queue="", actor="test")
    on_default = pipeline.submit_run(name="quick", params={"x": 2}, actor="test")
    services.plugin_set_queue(name="snooze", queue="gpu", actor="test")
    on_gpu = pipeline.submit_run(name="snooze", params={"seconds": 0}, actor="test")

    default_run, gpu_run = finished(on_default.pk), finished(on_gpu.pk)
    assert (default_run.status, default_run.result) == (RunStatus.SUCCEEDED, {"x": 2})
    assert default_run.worker.startswith("node-default (")
    assert gpu_run.status == RunStatus.SUCCEEDED
    assert gpu_run.worker.startswith("node-gpu (")
    waiting.refresh_from_db()
    assert (waiting.status, waiting.started_at) == (RunStatus.QUEUED, None)
    quick = Plugin.objects.get(name="quick")
    assert (quick.success_count, quick.error_count) == (1, 0)


def test_worker_nodes_register_with_their_environment(on_fleet):
    """Every node has a Worker row: its queues, pid, Python, platform, alive."""
    wait_until(lambda: worker_row("node-gpu") is not None, 30, "node-gpu's row")
    row = Worker.objects.get(name="node-gpu")
    assert row.queues == ["gpu"]
    assert row.pid == on_fleet.nodes["node-gpu"].process.pid
    assert row.python_version and "Linux" in row.platform
    assert row.status == "alive"


def test_kill_9_mid_run_is_interrupted_once_and_the_redelivery_does_nothing(on_fleet):
    """A node killed mid-run: another node's reconciler ends the run INTERRUPTED, counted
    once, naming the node; the message the broker hands back finds the run finished."""
    doomed = on_fleet.start_node("node-doomed", "doomed")
    services.plugin_set_queue(name="snooze", queue="doomed", actor="test")
    run = pipeline.submit_run(name="snooze", params={"seconds": 60}, actor="test")
    wait_until(lambda: run_status(run.pk) == RunStatus.RUNNING, 60, "the run to start")

    doomed.stop(signal.SIGKILL)
    interrupted = finished(run.pk, timeout_s=STALE_AFTER_S + 30)

    assert interrupted.status == RunStatus.INTERRUPTED
    assert "node-doomed (" in interrupted.reason and "last seen at" in interrupted.reason
    successor = on_fleet.start_node("node-doomed-2", "doomed")
    wait_until(lambda: "succeeded in" in successor.output, 60, "the redelivered message")
    interrupted.refresh_from_db()
    assert interrupted.status == RunStatus.INTERRUPTED
    assert PluginRun.objects.filter(plugin__name="snooze").count() == 1  # no retry declared
    snooze = Plugin.objects.get(name="snooze")
    assert (snooze.error_count, snooze.running_count) == (1, 0)
    successor.stop()


def test_sigterm_finishes_runs_in_progress_and_leaves_nothing_running(on_fleet):
    """SIGTERM: the node finishes the run it holds, exits 0, and shows as stopped."""
    node = on_fleet.start_node("node-term", "term")
    services.plugin_set_queue(name="snooze", queue="term", actor="test")
    run = pipeline.submit_run(name="snooze", params={"seconds": 2}, actor="test")
    wait_until(lambda: run_status(run.pk) == RunStatus.RUNNING, 60, "the run to start")

    assert node.stop(signal.SIGTERM) == 0, node.output

    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED
    assert not PluginRun.objects.filter(status=RunStatus.RUNNING).exists()
    assert worker_row("node-term").status == "stopped"


def test_reloads_run_on_a_node_of_the_plugins_queue(on_fleet):
    """A reload under the celery executor is a load request a node of the queue answers: the
    plugin is re-checked there, and an unknown name comes back as PluginNotFound."""
    services.plugin_set_queue(name="quick", queue="gpu", actor="test")

    plugin = pipeline.reload_plugin(name="quick", actor="user:ann")

    assert plugin.state == "INITIALIZED"
    request = LoadRequest.objects.get()
    assert (request.queue, request.names) == ("gpu", ["quick"])
    assert request.outcome["reports"][0]["name"] == "quick"
    with pytest.raises(PluginNotFound):
        pipeline.load_plugins(names=["nowhere"], actor="user:ann")


def test_gunicorn_hosts_no_sandbox_process_while_its_runs_execute(on_fleet, make_user, tmp_path):
    """Runs POSTed to gunicorn (2 workers) execute on a node: while they run, gunicorn's
    process tree holds no sandbox process."""
    token = issue_token(user=make_user("operator", "plugins_app.run_plugin"))
    listener = socket.create_server(("127.0.0.1", 0))
    listener.set_inheritable(True)
    env = {
        **on_fleet.env,
        "SECRET_KEY": "gunicorn-test-key-" + "x" * 40,
        "PORTAL_VAR_DIR": str(tmp_path / "var"),
    }
    argv = ["-m", "gunicorn", "portal.wsgi", "--bind", f"fd://{listener.fileno()}"]
    server = subprocess.Popen(
        [sys.executable, *argv, "--workers", "2", "--threads", "4", "--log-level", "warning"],
        cwd=ROOT,
        env=env,
        pass_fds=[listener.fileno()],
    )
    try:
        host, port = listener.getsockname()
        request = urllib.request.Request(
            f"http://{host}:{port}/v1/plugins/snooze/runs",
            data=json.dumps({"params": {"seconds": 3}}).encode(),
            headers={"Authorization": f"Token {token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            run_id = json.loads(response.read())["id"]
        wait_until(lambda: run_status(run_id) == RunStatus.RUNNING, 60, "the run to start")

        tree = process_tree(server.pid)

        assert tree and not [line for line in tree if "sandbox" in line], tree
        run = finished(run_id)
        assert run.status == RunStatus.SUCCEEDED
        assert run.worker.startswith("node-default (")
    finally:
        server.terminate()
        server.wait(timeout=30)
        listener.close()


def test_cancel_of_a_run_on_a_node__its_processes_are_gone(on_fleet, tmp_path):
    """A run executing on a real node, cancelled from this process (as a web process on
    another machine would): CANCELLED at once, and the node kills its call and the call's
    child (process table); nothing counted, the plugin not FAILED."""
    pid_file = tmp_path / "pids"
    run = pipeline.submit_run(name="tree", params={"pid_file": str(pid_file)}, actor="test")
    pids = wait_pids(pid_file)

    cancelled = services.run_cancel(run_id=run.pk, actor="api:ann")
    took_s = wait_gone(pids)

    assert (cancelled.status, cancelled.cancelled_by) == (RunStatus.CANCELLED, "api:ann")
    assert cancelled.worker.startswith("node-default (")
    assert took_s < 5, f"the node took {took_s:.2f} s to kill the cancelled call"
    tree = Plugin.objects.get(name="tree")
    assert (tree.state, tree.error_count, tree.running_count) == ("INITIALIZED", 0, 0)
    assert PluginRun.objects.get(pk=run.pk).status == RunStatus.CANCELLED


def test_cancelled_queued_run__a_node_that_takes_its_message_does_nothing(on_fleet, tmp_path):
    """A run cancelled while its message waits in the queue: the node that takes the message
    later finds it cancelled and never starts it."""
    services.plugin_set_queue(name="tree", queue="later", actor="test")
    pid_file = tmp_path / "pids"
    run = pipeline.submit_run(name="tree", params={"pid_file": str(pid_file)}, actor="test")
    services.run_cancel(run_id=run.pk, actor="user:ann")

    node = on_fleet.start_node("node-later", "later")
    wait_until(lambda: "succeeded in" in node.output, 60, "the node to take the message")

    run.refresh_from_db()
    assert (run.status, run.started_at, run.worker) == (RunStatus.CANCELLED, None, "")
    assert not pid_file.exists()
    node.stop()
