"""Sandbox benchmark: ``python -m benchmarks.sandbox_bench [--calls N]``, or as a script.

Measures, in one run, per-call latency of a direct call, a fresh interpreter and the
sandbox (trivial function, ~1 MB JSON-like return value), throughput with 1, 2 and 8
concurrent callers, Preload warm calls of a plugin whose import takes 1 s, and the idle
memory of the sandbox processes. Prints ratios against the in-run baselines and PASS/FAIL
per target. Not a test: timings depend on the machine and its load (shown at the top).
"""

from __future__ import annotations

import argparse
import os
import pickle
import platform
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # run as a script from anywhere: the sandbox package is at ROOT

from benchmarks.sandbox_targets import json_like, trivial  # noqa: E402
from sandbox import (  # noqa: E402
    Limits,
    Preload,
    run_plugin_sandboxed,
    sandbox_status,
    shutdown_sandbox,
)

TRIVIAL = "benchmarks.sandbox_targets:trivial"
JSON_LIKE = "benchmarks.sandbox_targets:json_like"
SLOW = "benchmarks.sandbox_slow:predict"
WARM = Preload("benchmarks.sandbox_targets:warm_import", ("benchmarks.sandbox_slow",))
ONE_MB_ITEMS = 20_000

# Targets from the brief.
TRIVIAL_P50_MS = 2.0
VS_FRESH_FACTOR = 8.0
THROUGHPUT_8 = 500.0
IDLE_RSS_MIB = 30.0
WARM_EXTRA_MS = 3.0


def percentiles(samples_ms: list[float]) -> tuple[float, float]:
    ordered = sorted(samples_ms)
    p50 = statistics.median(ordered)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return p50, p95


def time_calls(fn: Callable[[], object], n: int) -> list[float]:
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def sandboxed(target: str, *args: object, **kwargs: Any) -> Callable[[], object]:
    def call() -> object:
        result = run_plugin_sandboxed(target, *args, **kwargs)
        if not result.ok:
            raise RuntimeError(f"benchmark call failed: {result.error}")
        return result.value

    return call


def fresh_interpreter(expr: str) -> Callable[[], object]:
    """What the sandbox replaces: a new interpreter per call, value pickled back."""
    code = (
        "import pickle, sys\n"
        "import benchmarks.sandbox_targets as t\n"
        f"sys.stdout.buffer.write(pickle.dumps({expr}))\n"
    )
    env = {**os.environ, "PYTHONPATH": ROOT}

    def call() -> object:
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, check=True, env=env
        )
        return pickle.loads(done.stdout)

    return call


def throughput(callers: int, total_calls: int) -> float:
    per_caller = max(1, total_calls // callers)
    errors: list[str] = []

    def worker() -> None:
        for _ in range(per_caller):
            result = run_plugin_sandboxed(TRIVIAL)
            if not result.ok:
                errors.append(result.error or "?")

    threads = [threading.Thread(target=worker) for _ in range(callers)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    if errors:
        raise RuntimeError(f"{len(errors)} failed calls, e.g. {errors[0]}")
    return per_caller * callers / elapsed


def memory_kib(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of a process in KiB; PSS splits pages shared with forks fairly."""
    rss = pss = 0
    with open(f"/proc/{pid}/smaps_rollup") as handle:
        for line in handle:
            if line.startswith("Rss:"):
                rss = int(line.split()[1])
            elif line.startswith("Pss:"):
                pss = int(line.split()[1])
    return rss, pss


def spares(host_pid: int) -> list[int]:
    with open(f"/proc/{host_pid}/task/{host_pid}/children") as handle:
        return [int(pid) for pid in handle.read().split()]


class Report:
    def __init__(self) -> None:
        self.verdicts: list[tuple[str, bool, str]] = []

    def row(self, label: str, samples_ms: list[float], baseline_p50: float | None = None) -> float:
        p50, p95 = percentiles(samples_ms)
        ratio = ""
        if baseline_p50:
            ratio = f"  ({baseline_p50 / p50:5.1f}x faster than a fresh interpreter)"
        print(f"  {label:38s} p50 {p50:8.3f} ms   p95 {p95:8.3f} ms{ratio}")
        return p50

    def target(self, name: str, ok: bool, detail: str) -> None:
        self.verdicts.append((name, ok, detail))

    def summary(self) -> bool:
        print("\nTargets")
        for name, ok, detail in self.verdicts:
            print(f"  {'PASS' if ok else 'FAIL'}  {name:44s} {detail}")
        return all(ok for _, ok, _ in self.verdicts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sandbox_bench", description=__doc__)
    parser.add_argument("--calls", type=int, default=300, help="sandbox calls per measurement")
    parser.add_argument("--fresh-calls", type=int, default=30, help="fresh-interpreter runs")
    parser.add_argument("--strict", action="store_true", help="exit 1 if a target fails")
    args = parser.parse_args(argv)
    report = Report()
    n = args.calls

    load = os.getloadavg()
    print(
        f"sandbox benchmark: Python {platform.python_version()}, {os.cpu_count()} CPUs, "
        f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} "
        "(other work on the machine slows every figure)"
    )
    run_plugin_sandboxed(TRIVIAL)  # start the host outside the measurements
    for _ in range(20):
        run_plugin_sandboxed(TRIVIAL)

    print("\nTrivial function (returns a small int)")
    report.row("direct call", time_calls(lambda: trivial(1, 2), 10_000))
    fresh = report.row(
        "fresh interpreter", time_calls(fresh_interpreter("t.trivial()"), args.fresh_calls)
    )
    trivial_p50 = report.row("sandbox", time_calls(sandboxed(TRIVIAL), n), fresh)
    report.target(
        "trivial call p50 <= 2 ms", trivial_p50 <= TRIVIAL_P50_MS, f"{trivial_p50:.2f} ms"
    )
    factor = fresh / trivial_p50
    report.target(
        f"trivial call >= {VS_FRESH_FACTOR:g}x faster than fresh interpreter",
        factor >= VS_FRESH_FACTOR,
        f"{factor:.1f}x",
    )

    size = len(pickle.dumps(json_like(ONE_MB_ITEMS)))
    print(f"\nJSON-like return value ({ONE_MB_ITEMS} dicts, {size / 1e6:.2f} MB pickled)")
    report.row("direct call", time_calls(lambda: json_like(ONE_MB_ITEMS), 30))
    big_fresh = report.row(
        "fresh interpreter",
        time_calls(
            fresh_interpreter(f"t.json_like({ONE_MB_ITEMS})"), max(5, args.fresh_calls // 2)
        ),
    )
    report.row(
        "sandbox", time_calls(sandboxed(JSON_LIKE, ONE_MB_ITEMS), max(20, n // 6)), big_fresh
    )

    print("\nThroughput, trivial calls")
    rates = {}
    for callers in (1, 2, 8):
        rates[callers] = throughput(callers, total_calls=max(2 * n, 400))
        print(f"  {callers} concurrent caller(s){'':17s} {rates[callers]:8.0f} calls/s")
    report.target(
        f"throughput with 8 callers >= {THROUGHPUT_8:g}/s",
        rates[8] >= THROUGHPUT_8,
        f"{rates[8]:.0f} calls/s",
    )

    print("\nPreload: a plugin whose import takes 1 s")
    started = time.perf_counter()
    sandboxed(SLOW, 2.0, limits=Limits(timeout_s=30))()
    cold_ms = (time.perf_counter() - started) * 1000
    print(f"  {'cold call, no preload (pays the import)':38s} {cold_ms:8.1f} ms")
    started = time.perf_counter()
    sandboxed(SLOW, 2.0, preload=WARM, limits=Limits(timeout_s=30))()
    first_ms = (time.perf_counter() - started) * 1000
    print(f"  {'first call with Preload (warm-up)':38s} {first_ms:8.1f} ms")
    warm_p50 = report.row(
        "later calls with Preload", time_calls(sandboxed(SLOW, 2.0, preload=WARM), n // 3)
    )
    report.target(
        f"warm call <= trivial call + {WARM_EXTRA_MS:g} ms",
        warm_p50 <= trivial_p50 + WARM_EXTRA_MS,
        f"{warm_p50:.2f} ms vs {trivial_p50:.2f} ms ({cold_ms / warm_p50:.0f}x faster than cold)",
    )

    print("\nIdle memory of the sandbox processes (after 1 s idle; spares share most pages)")
    time.sleep(1.0)
    idle_rss_kib = idle_pss_kib = 0
    for host in sandbox_status():
        kind = "warm host" if host["preload"] else "default host"
        for pid, role in [(host["pid"], kind)] + [(p, "  its spare") for p in spares(host["pid"])]:
            try:
                rss, pss = memory_kib(pid)
            except (FileNotFoundError, ProcessLookupError):
                continue  # a process that ended while we looked
            print(
                f"  pid {pid:<7d} {role:14s} RSS {rss / 1024:6.1f} MiB  PSS {pss / 1024:6.1f} MiB"
            )
            if not host["preload"]:  # a warm host's memory is the plugin's imports
                idle_rss_kib += rss
                idle_pss_kib += pss
    report.target(
        f"idle overhead <= {IDLE_RSS_MIB:g} MiB RSS (default host + spare)",
        idle_rss_kib / 1024 <= IDLE_RSS_MIB,
        f"{idle_rss_kib / 1024:.1f} MiB RSS summed ({idle_pss_kib / 1024:.1f} MiB PSS)",
    )
    shutdown_sandbox()
    all_passed = report.summary()
    return 1 if args.strict and not all_passed else 0


if __name__ == "__main__":
    sys.exit(main())
