"""GET /v1/workers and portal_workers_alive: the worker nodes and who serves each queue."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from plugins_app import services
from plugins_app.fleet.node import node_environment
from plugins_app.models import Worker
from tests.metrics_support import scrape

pytestmark = pytest.mark.django_db


def register(name: str, queues: list[str]) -> None:
    services.worker_register(
        name=name, queues=queues, concurrency=2, environment=node_environment()
    )


@pytest.fixture
def fleet(make_plugin, settings):
    """Nodes 'cpu-1' (alive, default) and 'gpu-1' (lost); plugins on default, gpu and 'ocr'."""
    make_plugin("hello")
    make_plugin("vision", requirements={"gpu": True})
    make_plugin("reader")
    services.plugin_set_queue(name="reader", queue="ocr", actor="test")
    register("cpu-1", ["default"])
    register("gpu-1", ["gpu"])
    stale = timezone.now() - timedelta(seconds=settings.PORTAL_RUN_STALE_AFTER_S + 1)
    Worker.objects.filter(name="gpu-1").update(heartbeat_at=stale)


def test_workers_and_queues(api_client, fleet):
    """Each node with its status and environment; each queue with its plugins, and the
    reason to start a worker where no live one serves it."""
    response = api_client.get("/v1/workers")

    assert response.status_code == 200
    body = response.json()
    workers = {worker["name"]: worker for worker in body["workers"]}
    assert (workers["cpu-1"]["status"], workers["gpu-1"]["status"]) == ("alive", "lost")
    assert workers["cpu-1"]["queues"] == ["default"]
    assert workers["cpu-1"]["python_version"]
    queues = {row["queue"]: row for row in body["queues"]}
    assert queues["default"] == {
        "queue": "default",
        "live_workers": 1,
        "plugins": ["hello"],
        "reason": "",
    }
    assert queues["gpu"]["live_workers"] == 0
    assert "No worker is serving queue 'gpu'" in queues["gpu"]["reason"]
    assert "manage.py runworker --queues gpu" in queues["gpu"]["reason"]
    assert queues["ocr"]["plugins"] == ["reader"]


def test_workers_need_a_login_when_reads_do(api_client, fleet, settings):
    """PORTAL_API_READS_REQUIRE_AUTH closes it like the other reads."""
    settings.PORTAL_API_READS_REQUIRE_AUTH = True
    assert api_client.get("/v1/workers").status_code == 401


def test_metrics_count_live_workers_per_queue(client, fleet, settings):
    """portal_workers_alive{queue=...}: 1 for default, 0 for the unserved gpu and ocr."""
    settings.PORTAL_RUN_EXECUTOR = "celery"
    samples = scrape(client)["portal_workers_alive"]
    assert samples == {
        (("queue", "default"),): 1,
        (("queue", "gpu"),): 0,
        (("queue", "ocr"),): 0,
    }


def test_metrics_without_worker_nodes__no_workers_series(client, fleet):
    """The thread executor needs no worker node: no portal_workers_alive series to alert on."""
    assert "portal_workers_alive" not in scrape(client)
