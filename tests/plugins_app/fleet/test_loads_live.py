"""`loadplugins` of every plugin under the celery executor, with real nodes: the command only
discovers files, each plugin loads on a node, a gpu-queue plugin on the gpu node."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from plugins_app.models import LoadRequest, Plugin, PluginState
from tests.fleet_support import (
    ROOT,
    NodeProcess,
    broker_vhost,
    node_env,
    process_tree,
    wait_until,
)

pytestmark = [
    pytest.mark.broker,
    pytest.mark.django_db(transaction=True),
    pytest.mark.xdist_group("fleet_loads"),
    pytest.mark.timeout(300),
]

# Its setup() says it started, then holds the load until the test releases it.
GATED = """
import os
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def setup():
    open(os.path.join(HERE, "setup-started"), "w").close()
    while not os.path.exists(os.path.join(HERE, "release")):
        time.sleep(0.02)


def run():
    return {"ok": True}
"""

# Declares the gpu queue and needs a variable only the gpu node has.
GPU_ONLY = """
queue = "gpu"
requires = {"env": ["PORTAL_TEST_GPU_NODE"]}


def run():
    return {"ok": True}
"""


@pytest.fixture
def nodes(django_db_setup, tmp_path) -> Iterator[tuple[dict[str, str], Path]]:
    """Nodes on 'default' and 'gpu' (only the gpu node has PORTAL_TEST_GPU_NODE)."""
    plugin_dir = tmp_path / "plugins"
    plugin_dir.mkdir()
    (plugin_dir / "gated.py").write_text(GATED)
    (plugin_dir / "gpu_only.py").write_text(GPU_ONLY)
    with broker_vhost() as broker_url:
        env = node_env(broker_url, plugin_dir, tmp_path)
        started = [
            NodeProcess("load-default", "default", env, tmp_path),
            NodeProcess("load-gpu", "gpu", {**env, "PORTAL_TEST_GPU_NODE": "1"}, tmp_path),
        ]
        try:
            for node in started:
                node.wait_ready()
            yield env, plugin_dir
        finally:
            for node in started:
                node.stop(signal.SIGKILL)


def test_loadplugins_loads_each_plugin_on_a_node_and_starts_no_sandbox(nodes):
    """`loadplugins` (no names, celery executor): while a plugin's setup() runs, the command's
    process tree holds no sandbox process; the gpu-queue plugin is checked on the gpu node."""
    env, plugin_dir = nodes
    command = subprocess.Popen(
        [sys.executable, "manage.py", "loadplugins"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_until(lambda: (plugin_dir / "setup-started").exists(), 120, "gated's setup()")
        tree = process_tree(command.pid)
        (plugin_dir / "release").touch()
        output, _ = command.communicate(timeout=120)
    finally:
        (plugin_dir / "release").touch()
        if command.poll() is None:
            command.kill()
            command.wait()

    assert not [line for line in tree if "sandbox" in line], tree
    assert command.returncode == 0, output
    assert output.split() == ["gated", "INITIALIZED", "gpu_only", "INITIALIZED"], output
    gpu_only = Plugin.objects.get(name="gpu_only")
    assert (gpu_only.state, gpu_only.declared_queue) == (PluginState.INITIALIZED, "gpu")
    checked_on = [
        request.queue for request in LoadRequest.objects.all() if "gpu_only" in request.names
    ]
    assert sorted(checked_on) == ["default", "gpu"]


# Its import walks up from the load's process to the node and kills it, every time.
POISON_AT_IMPORT = """
import os
import signal

pid = os.getpid()
while pid > 1:
    with open(f"/proc/{pid}/stat") as stat:
        pid = int(stat.read().rsplit(")", 1)[1].split()[1])
    with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
        if b"runworker" in cmdline.read():
            os.kill(pid, signal.SIGKILL)


def run():
    return 1
"""


def test_a_plugin_whose_import_kills_its_node_ends_failed_without_looping(
    django_db_setup, tmp_path
):
    """`loadplugins NAME` of a plugin whose import kills the node (nodes restarted as a
    supervisor would): two nodes die, the third refuses a third try, the plugin ends FAILED
    saying why, the command exits 1 and that node stays up."""
    plugin_dir = tmp_path / "plugins"
    plugin_dir.mkdir()
    (plugin_dir / "deadly.py").write_text(POISON_AT_IMPORT)
    with broker_vhost() as broker_url:
        env = node_env(broker_url, plugin_dir, tmp_path)
        nodes = [NodeProcess("deadly-0", "default", env, tmp_path)]
        command = None
        try:
            nodes[0].wait_ready()
            command = subprocess.Popen(
                [sys.executable, "manage.py", "loadplugins", "deadly"],
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            for index in (1, 2):  # each delivery takes one node down; a supervisor restarts
                assert nodes[-1].process.wait(timeout=120) == -signal.SIGKILL, nodes[-1].output
                nodes.append(NodeProcess(f"deadly-{index}", "default", env, tmp_path))
                nodes[-1].wait_ready()
            output, _ = command.communicate(timeout=120)
            survivor_alive = nodes[-1].process.poll() is None
        finally:
            if command is not None and command.poll() is None:
                command.kill()
                command.wait()
            for node in nodes:
                node.stop(signal.SIGKILL)

    assert command is not None and command.returncode == 1, output
    assert survivor_alive, nodes[-1].output
    deadly = Plugin.objects.get(name="deadly")
    assert deadly.state == PluginState.FAILED
    assert "2 times" in deadly.reason and "takes its worker down" in deadly.reason, deadly.reason
    assert deadly.reason in output
    assert LoadRequest.objects.get().attempts == 3
