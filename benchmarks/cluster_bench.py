"""Cluster benchmark: ``python -m benchmarks.cluster_bench [--runs N]``.

Measures, in one run, on PostgreSQL and a RabbitMQ vhost of its own, with real worker nodes
(`manage.py runworker`): the latency from queueing a trivial run to reading it finished, with
the thread executor (baseline) and with one worker node; the throughput of N runs that sleep
50 ms with one node and with two, for each node concurrency asked (1: the nodes are the limit;
4: on 2 cores, the CPU is); and the time from a node's `kill -9` mid-run to its run being
INTERRUPTED. Prints ratios against the in-run baselines. Not a test: timings depend on
the machine and its load (shown at the top).
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEARTBEAT_S, STALE_AFTER_S = 0.5, 3.0
PLUGINS = {
    "bench_trivial": "def run():\n    return 1\n",
    "bench_sleep": "import time\n\ndef run():\n    time.sleep(0.05)\n    return 1\n",
    "bench_hang": "import time\n\nlimits = {'timeout_s': 120}\n\ndef run():\n    time.sleep(60)\n",
}


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


def dropdb(name: str) -> None:
    subprocess.run(["dropdb", "-h", "127.0.0.1", "-U", "postgres", "--if-exists", name])


def wait_until(condition: Callable[[], object], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"Timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(0.02)


class Node:
    def __init__(
        self, name: str, queue: str, env: dict[str, str], log_dir: Path, concurrency: int = 4
    ) -> None:
        self.name = name
        self.log = log_dir / f"{name}.log"
        with self.log.open("wb") as out:
            argv = ["manage.py", "runworker", "--name", name, "--queues", queue]
            self.process = subprocess.Popen(
                [sys.executable, *argv, "--concurrency", str(concurrency)],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def ready(self) -> Node:
        wait_until(lambda: " ready." in self.log.read_text(errors="replace"), 120, self.name)
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        self.process.wait(120)


def p50_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


class FinishObserver:
    """Reads which runs are finished every millisecond on a connection of its own: when each
    finish became visible, to time how long after it wait_for_run returned."""

    def __init__(self) -> None:
        self.seen: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def seen_at(self, run_id: int) -> float:
        wait_until(lambda: run_id in self.seen, 10, f"run {run_id} seen finished")
        return self.seen[run_id]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _watch(self) -> None:
        from django.db import connection

        from plugins_app.models import FINISHED_RUN_STATUSES, PluginRun

        finished = PluginRun.objects.filter(status__in=FINISHED_RUN_STATUSES)
        while not self._stop.wait(0.001):
            ids = list(finished.values_list("pk", flat=True).order_by("-pk")[:50])
            now = time.perf_counter()
            for run_id in ids:
                self.seen.setdefault(run_id, now)
        connection.close()


def latency(runner, name: str, count: int) -> tuple[float, float]:
    """p50 of queue-to-finished, and p50 of the wait's return after the finish was visible."""
    samples, lags = [], []
    observer = FinishObserver()
    try:
        for _ in range(count):
            started = time.perf_counter()
            run = runner.submit_run(name=name, params={}, actor="bench")
            finished = runner.wait_for_run(run_id=run.pk, timeout_s=60)
            returned = time.perf_counter()
            assert finished.status == "succeeded", finished.reason
            samples.append(returned - started)
            lags.append(returned - observer.seen_at(run.pk))
    finally:
        observer.close()
    return p50_ms(samples), p50_ms(lags)


def cpu_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    with open("/proc/stat") as stat:
        fields = [int(part) for part in stat.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle and iowait
    return sum(fields) - idle, sum(fields)


def throughput(runner, name: str, count: int) -> tuple[float, float]:
    """Runs finished per second, and the share of the machine's CPU busy meanwhile."""
    busy_before, total_before = cpu_ticks()
    started = time.perf_counter()
    ids = [runner.submit_run(name=name, params={}, actor="bench").pk for _ in range(count)]
    for run_id in ids:
        run = runner.wait_for_run(run_id=run_id, timeout_s=300)
        assert run.status == "succeeded", run.reason
    per_s = count / (time.perf_counter() - started)
    busy_after, total_after = cpu_ticks()
    return per_s, (busy_after - busy_before) / max(1, total_after - total_before)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200, help="runs per throughput figure")
    parser.add_argument("--latency-runs", type=int, default=30)
    parser.add_argument(
        "--concurrency",
        default="1,4",
        help="node concurrencies to measure throughput at, comma-separated (default 1,4)",
    )
    parser.add_argument(
        "--database", default="portal_cluster_bench", help="PostgreSQL database (made anew)"
    )
    args = parser.parse_args()
    try:
        concurrencies = [int(part) for part in args.concurrency.split(",")]
    except ValueError:
        parser.error(f"--concurrency: comma-separated whole numbers, not {args.concurrency!r}")
    work = Path(tempfile.mkdtemp(prefix="cluster-bench-"))
    plugin_dir = work / "plugins"
    plugin_dir.mkdir()
    for name, source in PLUGINS.items():
        (plugin_dir / f"{name}.py").write_text(source)
    vhost = f"cluster-bench-{uuid.uuid4().hex[:8]}"
    database_url = f"postgres://postgres@127.0.0.1:5432/{args.database}"
    dropdb(args.database)
    subprocess.run(["createdb", "-h", "127.0.0.1", "-U", "postgres", args.database], check=True)
    rabbitmqctl("add_vhost", vhost)
    rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "PORTAL_BROKER_URL": f"amqp://guest:guest@127.0.0.1:5672/{vhost}",
        "PORTAL_PLUGIN_DIRS": str(plugin_dir),
        "PORTAL_VAR_DIR": str(work / "var"),
        "PORTAL_RUN_HEARTBEAT_S": str(HEARTBEAT_S),
        "PORTAL_RUN_STALE_AFTER_S": str(STALE_AFTER_S),
        "PORTAL_RUN_EXECUTOR": "thread",
    }
    os.environ.update(env)
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command

    from plugins_app import pipeline, services
    from plugins_app.executor import shutdown_executor
    from plugins_app.fleet.celery_app import celery_app
    from plugins_app.models import PluginRun

    nodes: list[Node] = []
    try:
        call_command("migrate", verbosity=0)
        pipeline.load_plugins(actor="bench")
        print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
        pipeline.run_plugin(name="bench_trivial", params={}, actor="bench")  # warm host
        thread_ms, thread_lag_ms = latency(pipeline, "bench_trivial", args.latency_runs)
        shutdown_executor()
        pipeline.discard_warm_hosts()

        settings.PORTAL_RUN_EXECUTOR = "celery"
        celery_app.cache_clear()
        node_env = {**env, "PORTAL_RUN_EXECUTOR": "celery"}
        nodes.append(Node("bench-1", "default", node_env, work).ready())
        latency(pipeline, "bench_trivial", 3)  # the node's warm host
        celery_ms, celery_lag_ms = latency(pipeline, "bench_trivial", args.latency_runs)
        print(
            f"latency p50, queue to finished: thread {thread_ms:.1f} ms, "
            f"celery 1 node {celery_ms:.1f} ms ({celery_ms - thread_ms:+.1f} ms; target +15)"
        )
        print(
            f"wait_for_run's return after the finish was visible, p50: thread "
            f"{thread_lag_ms:.1f} ms, celery 1 node {celery_lag_ms:.1f} ms (target 20)"
        )

        nodes.pop().stop()
        for concurrency in concurrencies:
            pair = [Node(f"bench-{concurrency}-1", "default", node_env, work, concurrency).ready()]
            nodes.extend(pair)
            throughput(pipeline, "bench_sleep", 8)  # warm
            one, one_busy = throughput(pipeline, "bench_sleep", args.runs)
            pair.append(Node(f"bench-{concurrency}-2", "default", node_env, work, concurrency))
            nodes.append(pair[-1].ready())
            throughput(pipeline, "bench_sleep", 8)
            two, two_busy = throughput(pipeline, "bench_sleep", args.runs)
            print(
                f"throughput, {args.runs} runs of 50 ms, concurrency {concurrency} per node: "
                f"1 node {one:.1f} runs/s (CPU {one_busy:.0%} busy), 2 nodes {two:.1f} runs/s "
                f"(CPU {two_busy:.0%} busy): {two / one:.2f}x; target 1.6x"
            )
            if concurrency != concurrencies[-1]:  # the last pair stays: it reconciles below
                for node in pair:
                    node.stop()
                    nodes.remove(node)

        services.plugin_set_queue(name="bench_hang", queue="doomed", actor="bench")
        doomed = Node("bench-doomed", "doomed", node_env, work).ready()
        nodes.append(doomed)
        run = pipeline.submit_run(name="bench_hang", params={}, actor="bench")
        wait_until(lambda: PluginRun.objects.get(pk=run.pk).status == "running", 60, "start")
        killed = time.perf_counter()
        doomed.stop(signal.SIGKILL)
        wait_until(
            lambda: PluginRun.objects.get(pk=run.pk).status == "interrupted", 120, "interrupted"
        )
        print(
            f"kill -9 to INTERRUPTED: {time.perf_counter() - killed:.2f} s (stale limit "
            f"{STALE_AFTER_S:g} s + heartbeat {HEARTBEAT_S:g} s)"
        )
    finally:
        for node in nodes:
            node.stop()
        shutdown_executor()
        pipeline.discard_warm_hosts()
        rabbitmqctl("delete_vhost", vhost)
        from django.db import connections

        connections.close_all()
        subprocess.run(
            ["dropdb", "-h", "127.0.0.1", "-U", "postgres", "--if-exists", args.database]
        )


if __name__ == "__main__":
    main()
