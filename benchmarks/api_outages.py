"""Health latency through database outages: gunicorn (2 workers) on a private PostgreSQL.

Starts a PostgreSQL cluster of its own (tools/private_postgres.py: never the shared server),
seeds plugins through the services, serves the portal with gunicorn (2 workers, 4 threads,
CONN_MAX_AGE=60) and measures, in each phase and in the same run, interleaved request by
request so the three see the same load:

  GET /v1/_benchmark/constant      a constant health-sized dict from a minimal DRF view (baseline)
  GET /v1/plugins                  every plugin's health record
  GET /v1/plugins/{name}/health    one record

  (a) database up   (b) database hung: SIGSTOP, with the workers' connections open   (c) stopped

Targets, per phase: list and single p99 <= 1.3x the constant view's p99, zero non-200 answers;
and in (b) both workers killed and restarted by gunicorn answer 200 stale at once.

Usage:  .venv/bin/python -m benchmarks.api_outages [--requests 600] [--plugins 50]
Exit status 0 when every target passes, 1 otherwise.
"""

from __future__ import annotations

import argparse
import http.client
import os
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script from anywhere: tools is at ROOT

from tools.private_postgres import (  # noqa: E402 - after the path fix above
    Gunicorn,
    PrivateCluster,
    get,
    manage,
    portal_env,
    seed_plugins,
    wait_until,
)

P99_RATIO_TARGET = 1.3
CONCURRENCY = 4
PATHS = {
    "constant": "/v1/_benchmark/constant",
    "list": "/v1/plugins",
    "single": "/v1/plugins/plugin-0001/health",
}


@dataclass
class Phase:
    name: str
    latencies_ms: dict[str, list[float]]
    non_200: dict[str, int]

    def p(self, label: str, quantile: int) -> float:
        cuts = statistics.quantiles(self.latencies_ms[label], n=100, method="inclusive")
        return cuts[quantile - 1]

    def lines(self) -> list[str]:
        base = self.p("constant", 99)
        out = []
        for label in PATHS:
            ratio = self.p(label, 99) / base
            out.append(
                f"  {self.name:<8} {label:<9} p50 {self.p(label, 50):7.2f} ms  "
                f"p99 {self.p(label, 99):7.2f} ms  p99/constant {ratio:5.2f}  "
                f"non-200 {self.non_200[label]}"
            )
        return out

    def passed(self) -> bool:
        base = self.p("constant", 99)
        return all(
            self.p(label, 99) <= P99_RATIO_TARGET * base and self.non_200[label] == 0
            for label in ("list", "single")
        ) and not any(self.non_200.values())


def measure(port: int, name: str, requests: int) -> Phase:
    """`requests` rounds of the three paths, CONCURRENCY clients on keep-alive connections."""
    latencies: dict[str, list[float]] = {label: [] for label in PATHS}
    non_200 = dict.fromkeys(PATHS, 0)
    lock = threading.Lock()

    def client(rounds: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        mine: dict[str, list[float]] = {label: [] for label in PATHS}
        bad = dict.fromkeys(PATHS, 0)
        for _ in range(rounds):
            for label, path in PATHS.items():
                started = time.perf_counter()
                connection.request("GET", path)
                response = connection.getresponse()
                response.read()
                mine[label].append((time.perf_counter() - started) * 1000)
                bad[label] += response.status != 200
        connection.close()
        with lock:
            for label in PATHS:
                latencies[label].extend(mine[label])
                non_200[label] += bad[label]

    threads = [
        threading.Thread(target=client, args=(requests // CONCURRENCY,)) for _ in range(CONCURRENCY)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return Phase(name=name, latencies_ms=latencies, non_200=non_200)


def warm(base: str) -> None:
    for path in PATHS.values():
        for _ in range(20):
            get(base + path)


def open_connections(base: str) -> None:
    """Queries on every worker thread, so CONN_MAX_AGE keeps their connections open."""
    threads = [
        threading.Thread(
            target=lambda: [get(base + "/v1/plugins/plugin-0001/runs") for _ in range(5)]
        )
        for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def restarted_workers_answer(server: Gunicorn) -> tuple[bool, str]:
    """Kill both workers; once gunicorn's new ones accept, health is 200 stale at once."""
    old = set(server.workers())
    for pid in old:
        os.kill(pid, signal.SIGKILL)
    wait_until(lambda: len(set(server.workers()) - old) == 2, timeout=60, what="new workers")
    wait_until(lambda: get(server.base + "/livez", 5)[0] == 200, timeout=120, what="booted")
    status, headers, _, took = get(server.base + "/v1/plugins")
    ok = status == 200 and headers.get("X-Health-Stale") == "true" and took < 1.0
    return ok, f"status {status}, stale {headers.get('X-Health-Stale')}, {took * 1000:.1f} ms"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=600, help="rounds per phase")
    parser.add_argument("--plugins", type=int, default=50)
    args = parser.parse_args()
    if args.requests < CONCURRENCY or args.plugins < 1:
        parser.error("--requests must be at least 4 and --plugins at least 1")

    cluster = PrivateCluster()
    server = None
    phases: list[Phase] = []
    var = Path(tempfile.mkdtemp(prefix="api-outages-"))
    try:
        cluster.start()
        cluster.create_database()
        env = portal_env(cluster.url, var, PORTAL_DB_DEADLINE_S="2")
        manage(env, "migrate", "--noinput")
        names = [f"plugin-{index:04d}" for index in range(1, args.plugins + 1)]
        seed_plugins(env, names, failed=names[-1:])
        server = Gunicorn(env, var / "gunicorn.log", workers=2, threads=4)
        wait_until(lambda: get(server.base + "/v1/plugins", 5)[0] == 200, timeout=60, what="up")
        port = int(server.base.rsplit(":", 1)[1])
        warm(server.base)
        phases.append(measure(port, "up", args.requests))

        open_connections(server.base)
        cluster.pause()
        wait_until(
            lambda: get(server.base + PATHS["single"])[2]["stale"] is True,
            timeout=15,
            what="stale while hung",
        )
        phases.append(measure(port, "hung", args.requests))
        restart_ok, restart_line = restarted_workers_answer(server)
        warm(server.base)  # the new workers' first requests import what the old ones had
        cluster.resume()
        wait_until(
            lambda: get(server.base + PATHS["single"])[2]["stale"] is False,
            timeout=30,
            what="fresh after resume",
        )

        cluster.stop()
        wait_until(
            lambda: get(server.base + PATHS["single"])[2]["stale"] is True,
            timeout=15,
            what="stale while stopped",
        )
        phases.append(measure(port, "stopped", args.requests))
    finally:
        if server is not None:
            server.stop()
        cluster.remove()
        shutil.rmtree(var, ignore_errors=True)

    print(f"gunicorn 2 workers x 4 threads, {args.plugins} plugins, {args.requests} rounds/phase")
    for phase in phases:
        print("\n".join(phase.lines()))
    results = [
        (f"{phase.name}: p99 <= {P99_RATIO_TARGET}x constant, zero non-200", phase.passed())
        for phase in phases
    ]
    results.append(
        (f"hung: restarted workers answer 200 stale at once ({restart_line})", restart_ok)
    )
    for label, passed in results:
        print(f"{'PASS' if passed else 'FAIL'}  {label}")
    return 0 if all(passed for _, passed in results) else 1


if __name__ == "__main__":
    sys.exit(main())
