"""A resident torch plugin on a real worker node (`manage.py runworker`, RabbitMQ): the node's
own process never maps libtorch, its resident process does."""

from __future__ import annotations

import signal
import textwrap
from collections.abc import Iterator

import psutil
import pytest

from plugins_app import pipeline
from plugins_app.executor import shutdown_executor
from plugins_app.fleet.celery_app import celery_app
from plugins_app.models import RunStatus
from tests.fleet_support import NodeProcess, broker_vhost, node_env, run_status, wait_until
from tests.heavy.test_torch_plugin import TORCH_PYTHON
from tests.heavy.test_torch_resident import RESIDENT_TORCH, maps_libtorch

pytestmark = [
    pytest.mark.torch,
    pytest.mark.broker,
    pytest.mark.django_db(transaction=True),
    pytest.mark.timeout(300),  # a node's start and a torch import on a loaded machine
]


@pytest.fixture
def torch_node(tmp_path, settings) -> Iterator[NodeProcess]:
    """One worker node on 'default' with the torch environment, the plugin loaded here."""
    plugin_dir = tmp_path / "plugins"
    plugin_dir.mkdir()
    (plugin_dir / "vision.py").write_text(textwrap.dedent(RESIDENT_TORCH))
    settings.PORTAL_PLUGIN_DIRS = [str(plugin_dir)]
    settings.PORTAL_PLUGIN_ENVIRONMENTS = {"torch": TORCH_PYTHON}
    pipeline.load_plugins(actor="test")
    pipeline.discard_warm_hosts()
    with broker_vhost() as broker_url:
        env = node_env(broker_url, plugin_dir, tmp_path)
        env["PORTAL_PLUGIN_ENVIRONMENTS"] = f"torch={TORCH_PYTHON}"
        node = NodeProcess("node-torch", "default", env, tmp_path)
        try:
            node.wait_ready()
            settings.PORTAL_RUN_EXECUTOR = "celery"
            settings.PORTAL_BROKER_URL = broker_url
            celery_app.cache_clear()
            yield node
        finally:
            shutdown_executor()
            celery_app.cache_clear()
            node.stop(signal.SIGTERM)


def test_worker_node__runs_resident_torch_without_mapping_libtorch(torch_node):
    """The run succeeds in resident mode; the node's process has no libtorch, its child has."""
    run = pipeline.submit_run(name="vision", params={}, actor="test")
    wait_until(lambda: run_status(run.pk) not in {"queued", "running"}, 240, "the run")
    run.refresh_from_db()
    assert (run.status, run.mode) == (RunStatus.SUCCEEDED, "resident"), run.reason
    resident_pid = run.result["pid"]
    assert psutil.Process(resident_pid).ppid() == torch_node.process.pid
    assert maps_libtorch(resident_pid)
    assert not maps_libtorch(torch_node.process.pid)
