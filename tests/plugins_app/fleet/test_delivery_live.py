"""Delivery with real nodes: a plugin that kills its node, a retry another node finishes, and
2 nodes x 4 threads x 50 runs counted exactly (RabbitMQ vhost of their own, runworker processes)."""

from __future__ import annotations

import functools
import itertools
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from django.db import connection
from django.utils import timezone

from plugins_app import pipeline, run_waits
from plugins_app.executor import shutdown_executor
from plugins_app.fleet.celery_app import celery_app
from plugins_app.models import EventKind, Plugin, PluginEvent, PluginRun, PluginState, RunStatus
from tests.fleet_support import (
    STALE_AFTER_S,
    NodeProcess,
    broker_vhost,
    node_env,
    run_status,
    wait_until,
    worker_row,
)

pytestmark = [
    pytest.mark.broker,
    pytest.mark.django_db(transaction=True),
    pytest.mark.xdist_group("fleet_delivery"),
    pytest.mark.timeout(300),
]

WAKE_WAIT_S = 30  # a wait that only a wake ends early

# Walks up from its call process (a child of the sandbox host) to the node and kills it.
POISON = """
import os
import signal
import time

queue = "poison"
retry = {"max_attempts": 2, "backoff_s": 0.1, "max_backoff_s": 0.1}
quarantine_after = 0


def _parent(pid):
    with open(f"/proc/{pid}/stat") as stat:
        return int(stat.read().rsplit(")", 1)[1].split()[1])


def run():
    pid = os.getpid()
    while pid > 1:
        pid = _parent(pid)
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            if b"runworker" in cmdline.read():
                os.kill(pid, signal.SIGKILL)
    time.sleep(60)
    return {"survived": True}
"""

# Its first attempt hangs (the test kills its node), the next one finds the marker and returns.
ONCE = """
import os
import time

queue = "second-chance"
retry = {"max_attempts": 2, "backoff_s": 0.1, "max_backoff_s": 0.1}


def run(marker):
    if os.path.exists(marker):
        return {"attempt": "again"}
    open(marker, "w").close()
    time.sleep(120)
    return {"attempt": "first"}
"""

BULK = """
import random
import time

queue = "bulk"
quarantine_after = 0


def run(i, nap=False):
    if nap:  # a run that lasts a while: its finish comes while the caller waits
        time.sleep(random.uniform(0.02, 0.12))
    if i % 2:
        raise ValueError(f"odd run {i} fails on purpose")
    return {"i": i}
"""


@dataclass
class Delivery:
    broker_url: str
    plugin_dir: Path
    var_dir: Path
    env: dict[str, str]
    nodes: list[NodeProcess] = field(default_factory=list)
    names: Iterator[int] = field(default_factory=itertools.count)

    def start_node(self, prefix: str, queues: str, concurrency: int = 1) -> NodeProcess:
        node = NodeProcess(
            f"{prefix}-{next(self.names)}", queues, self.env, self.var_dir, concurrency
        )
        self.nodes.append(node)
        node.wait_ready()
        return node


@pytest.fixture(scope="module")
def delivery_parts(django_db_setup, tmp_path_factory) -> Iterator[tuple[str, Path, Path]]:
    """A RabbitMQ vhost and the plugin directory for the module."""
    plugin_dir = tmp_path_factory.mktemp("delivery-plugins")
    for name, source in {"poison": POISON, "once": ONCE, "bulk": BULK}.items():
        (plugin_dir / f"{name}.py").write_text(source)
    with broker_vhost() as broker_url:
        yield broker_url, plugin_dir, tmp_path_factory.mktemp("delivery-var")


@pytest.fixture
def delivery(delivery_parts, settings) -> Iterator[Delivery]:
    """The plugins loaded here and runs sent to the vhost; the test's nodes are killed after."""
    broker_url, plugin_dir, var_dir = delivery_parts
    settings.PORTAL_PLUGIN_DIRS = [str(plugin_dir)]
    pipeline.load_plugins(actor="test")
    pipeline.discard_warm_hosts()
    settings.PORTAL_RUN_EXECUTOR = "celery"
    settings.PORTAL_BROKER_URL = broker_url
    settings.PORTAL_RUN_STALE_AFTER_S = STALE_AFTER_S
    celery_app.cache_clear()
    parts = Delivery(broker_url, plugin_dir, var_dir, node_env(broker_url, plugin_dir, var_dir))
    try:
        yield parts
    finally:
        for node in parts.nodes:
            node.stop(signal.SIGKILL)
        shutdown_executor()
        celery_app.cache_clear()


def finished(run_id: int, timeout_s: float = 60.0) -> PluginRun:
    wait_until(lambda: run_status(run_id) not in {"queued", "running"}, timeout_s, f"run {run_id}")
    return PluginRun.objects.get(pk=run_id)


def beat_after(node: NodeProcess, moment) -> bool:
    """The node has heartbeated since `moment`, or died (the caller's assertion says which)."""
    row = worker_row(node.name)
    return node.process.poll() is not None or (row is not None and row.heartbeat_at > moment)


class TestPoisonPlugin:
    def test_a_plugin_that_kills_its_node_ends_failed_after_max_attempts(self, delivery):
        """A plugin whose run kills its node each time (nodes restarted as a supervisor would):
        2 attempts, both INTERRUPTED, the plugin FAILED saying so, then no more runs."""
        node = delivery.start_node("poison", "poison")
        first = pipeline.submit_run(name="poison", params={}, actor="test")
        killed = []
        for _ in range(2):  # each attempt takes one node down; a supervisor starts the next
            assert node.process.wait(timeout=120) == -signal.SIGKILL, node.output
            killed.append(node.name)
            node = delivery.start_node("poison", "poison")

        runs = list(PluginRun.objects.filter(plugin__name="poison").order_by("attempt"))
        for run in runs:
            finished(run.pk, timeout_s=STALE_AFTER_S + 30)
        # Two heartbeats of the surviving node later, a due retry would have been sent.
        for _ in range(2):
            settled = timezone.now()
            wait_until(
                functools.partial(beat_after, node, settled), 30, "a heartbeat of the last node"
            )

        assert node.process.poll() is None, node.output
        runs = list(PluginRun.objects.filter(plugin__name="poison").order_by("attempt"))
        assert [(run.attempt, run.status) for run in runs] == [
            (1, RunStatus.INTERRUPTED),
            (2, RunStatus.INTERRUPTED),
        ]
        assert runs[0].pk == first.pk and runs[1].retry_of_id == first.pk
        assert [run.worker.split(" ")[0] for run in runs] == killed
        poison = Plugin.objects.get(name="poison")
        assert (poison.state, poison.error_count, poison.running_count) == (
            PluginState.FAILED,
            2,
            0,
        )
        assert "attempt 2 of 2" in poison.reason and killed[1] in poison.reason, poison.reason


class TestRetryOnAnotherNode:
    def test_a_retried_attempt_finishes_on_a_second_node_after_kill_9(self, delivery, tmp_path):
        """kill -9 of the node running attempt 1: attempt 2 runs and succeeds on another node."""
        doomed = delivery.start_node("chance", "second-chance")
        marker = str(tmp_path / "first-attempt-started")
        first = pipeline.submit_run(name="once", params={"marker": marker}, actor="test")
        wait_until(lambda: run_status(first.pk) == RunStatus.RUNNING, 60, "attempt 1 to start")
        wait_until(lambda: Path(marker).exists(), 60, "attempt 1 to enter the plugin")

        doomed.stop(signal.SIGKILL)
        survivor = delivery.start_node("chance", "second-chance")
        interrupted = finished(first.pk, timeout_s=STALE_AFTER_S + 30)
        retry = PluginRun.objects.get(retry_of=first.pk)
        retried = finished(retry.pk)

        assert interrupted.status == RunStatus.INTERRUPTED
        assert (retried.attempt, retried.status, retried.result) == (
            2,
            RunStatus.SUCCEEDED,
            {"attempt": "again"},
        )
        assert retried.worker.startswith(f"{survivor.name} (")
        once = Plugin.objects.get(name="once")
        assert (once.state, once.success_count, once.error_count, once.running_count) == (
            PluginState.INITIALIZED,
            1,
            1,
            0,
        )


def database_sessions() -> int:
    """Sessions ever opened on this test's database: PostgreSQL's own count (SQLite has no
    sessions to count: 0)."""
    if connection.vendor != "postgresql":
        return 0
    with connection.cursor() as cursor:
        cursor.execute("SELECT sessions FROM pg_stat_database WHERE datname = current_database()")
        return cursor.fetchone()[0]


class TestManyRunsOnTwoNodes:
    RUNS = 50

    def test_two_nodes_of_four_threads_count_fifty_runs_exactly(self, delivery):
        """2 nodes x 4 threads x 50 runs: exact counters, every run once, one event per
        state change (each starts where the last ended)."""
        nodes = [delivery.start_node("bulk", "bulk", concurrency=4) for _ in range(2)]
        sessions_before = database_sessions()
        runs = [
            pipeline.submit_run(name="bulk", params={"i": i}, actor="test")
            for i in range(self.RUNS)
        ]
        for run in runs:
            finished(run.pk, timeout_s=180)
        # Each node thread keeps its connection: not one (or more) new session per run.
        assert database_sessions() - sessions_before < self.RUNS // 2

        done = PluginRun.objects.filter(plugin__name="bulk")
        statuses = sorted(done.values_list("status", flat=True))
        half = self.RUNS // 2
        assert statuses == [RunStatus.FAILED] * half + [RunStatus.SUCCEEDED] * half
        bulk = Plugin.objects.get(name="bulk")
        assert (bulk.success_count, bulk.error_count, bulk.running_count) == (half, half, 0)
        assert {run.worker.split(" ")[0] for run in done} == {node.name for node in nodes}
        events = PluginEvent.objects.filter(plugin=bulk, kind=EventKind.STATE_CHANGED)
        chain = list(events.order_by("created_at", "id").values_list("from_state", "to_state"))
        assert all(before != after for before, after in chain), chain
        for (_, previous_to), (current_from, _) in itertools.pairwise(chain):
            assert current_from == previous_to, chain
        assert chain[-1][1] == bulk.state
        per_run = events.exclude(run=None).values_list("run_id", "to_state")
        assert len(per_run) == len(set(per_run)), "a run recorded the same transition twice"


class TestWaitForARunOnANode:
    def test_waiting__woken_by_the_finish_on_another_process(self, delivery, monkeypatch):
        """A run finished by a node (another process) ends the wait through PostgreSQL's
        NOTIFY: with rechecks a minute apart, each wait returns long before its timeout."""
        monkeypatch.setattr(run_waits, "RECHECK_S", 60.0)
        delivery.start_node("waits", "bulk")
        for i in range(3):
            run = pipeline.submit_run(name="bulk", params={"i": 2 * i, "nap": True}, actor="test")
            started = time.monotonic()
            finished = pipeline.wait_for_run(run_id=run.pk, timeout_s=WAKE_WAIT_S)
            took_s = time.monotonic() - started
            assert finished.status == RunStatus.SUCCEEDED, finished.reason
            assert took_s < WAKE_WAIT_S / 2, f"returned after {took_s:.1f} s: not woken"
