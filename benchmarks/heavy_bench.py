"""Heavy-plugin benchmark: ``python -m benchmarks.heavy_bench [--calls N] [--python PATH]``.

Runs the real torch plugin (examples/torch/matmul.py) the way the portal does (its own
interpreter, a warm host per plugin, a fork per call; or, in resident mode, a long-lived
process that imported torch and ran setup() once) and a trivial plugin for comparison, in one
run: the cold first call of each mode (process start, torch import, setup()), warm fork-mode
and resident-mode calls of the matmul, and warm calls of the trivial plugin (fork mode),
p50/p95 each, interleaved, with the targets: fork-mode torch p50 at most 10x the trivial p50,
resident torch p50 at most the trivial p50 plus 2 ms. Needs `make torch-env` (or --python).

Then the breakdown of a call, for each of the three: the same calls again through
benchmarks/heavy_probe.py (the loader's call_plugin with timestamps on the machine's monotonic
clock, which the portal shares), the means of: portal to the plugin's process, the loader
around run(), the plugin's own run(), the result back to the caller (they add up to the mean
total; its median is shown too); the medians of the call's page faults and CPU time in its
process; the warm host's own CPU time per call; and what forking a process of the warm host's
size costs (the host forks every call process ahead of its call, and answers nothing while it
forks). docs/sandbox.md, *Heavy plugins*, has the figures and what they say.
Not a test: timings depend on the machine and its load (shown at the top).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # run as a script from anywhere: the sandbox package is at ROOT

from sandbox import (  # noqa: E402
    Limits,
    Preload,
    Resident,
    run_plugin_sandboxed,
    sandbox_status,
    shutdown_sandbox,
)

TORCH_PYTHON = os.path.join(ROOT, "var", "envs", "torch", "bin", "python")
MATMUL = os.path.join(ROOT, "examples", "torch", "matmul.py")
HELLO = os.path.join(ROOT, "examples", "plugins", "hello.py")
WARM = "plugin_contract.loader:warm_plugin"
CALL = "plugin_contract.loader:call_plugin"
PROBED_CALL = "benchmarks.heavy_probe:probed_call"
FORK_COST = "benchmarks.heavy_probe:fork_cost"
FORK_SAMPLES = 15  # forks of a warm-host-sized process, per plugin
TORCH_VS_TRIVIAL = 10.0  # the target for a fork-mode torch call
RESIDENT_OVER_TRIVIAL_MS = 2.0  # the target for a resident-mode torch call


def spec(name: str, path: str) -> tuple[tuple[str, str], ...]:
    return (("kind", "file"), ("name", name), ("path", path))


def percentiles(samples_ms: list[float]) -> tuple[float, float]:
    ordered = sorted(samples_ms)
    return statistics.median(ordered), ordered[round(0.95 * (len(ordered) - 1))]


def timed_call(preload: Preload, plugin: tuple, params: dict) -> float:
    started = time.perf_counter()
    result = run_plugin_sandboxed(CALL, plugin, params, preload=preload, limits=Limits(60))
    elapsed = (time.perf_counter() - started) * 1000
    if not result.ok:
        raise RuntimeError(f"benchmark call failed: {result.error}")
    return elapsed


PARTS = (  # (label, how to get it from one probed call's timestamps, in ms)
    ("portal -> plugin's process (send, hand-over, import, args)", "entered", "t0"),
    ("loader around run() (requirements, params)", None, None),
    ("the plugin's own run()", "run_ended", "run_started"),
    ("result -> caller (encode, answer, decode, result)", "t1", "left"),
    ("total, as the caller waited: mean (the sum of the above)", "t1", "t0"),
)


def probed_call(preload: Preload, plugin: tuple, params: dict) -> dict[str, float]:
    """One call through the probe: its timestamps, the caller's own around it."""
    t0 = time.monotonic()
    result = run_plugin_sandboxed(PROBED_CALL, plugin, params, preload=preload, limits=Limits(60))
    t1 = time.monotonic()
    if not result.ok:
        raise RuntimeError(f"benchmark call failed: {result.error}")
    return dict(result.value, t0=t0, t1=t1)


def part_ms(call: dict[str, float], end: str | None, start: str | None) -> float:
    if end is None:  # the loader's share: from entry to run(), and from run() to leaving
        return (call["run_started"] - call["entered"] + call["left"] - call["run_ended"]) * 1000
    assert start is not None
    return (call[end] - call[start]) * 1000


def host_cpu_s(preload: Preload) -> float | None:
    """The CPU time the fork-mode host of this preload used itself (not its call processes),
    from /proc; None in resident mode."""
    wanted = dataclasses.asdict(preload)
    for entry in sandbox_status():
        if entry["mode"] == "fork" and entry["preload"] == wanted:
            with open(f"/proc/{entry['pid']}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return None


def fork_cost(preload: Preload) -> tuple[float, float]:
    """Medians of fork() and of fork-to-reaped-exit of a process forked from this host."""
    samples = []
    for _ in range(FORK_SAMPLES):
        result = run_plugin_sandboxed(FORK_COST, preload=preload, limits=Limits(60))
        if not result.ok:
            raise RuntimeError(f"benchmark call failed: {result.error}")
        samples.append(result.value)
    return (
        statistics.median(s["fork_ms"] for s in samples),
        statistics.median(s["fork_exit_ms"] for s in samples),
    )


def breakdown(calls: int, runs: dict[str, tuple[Preload, tuple, dict]]) -> None:
    """Print the medians of each part of a call, per plugin and mode, interleaved."""
    probed: dict[str, list[dict[str, float]]] = {label: [] for label in runs}
    labels = list(runs)
    host_before = {label: host_cpu_s(runs[label][0]) for label in labels}
    for _ in range(calls):
        for label, (preload, plugin, params) in runs.items():
            probed[label].append(probed_call(preload, plugin, params))
    host_ms = {}
    for label in labels:
        before, after = host_before[label], host_cpu_s(runs[label][0])
        if before is not None and after is not None:
            host_ms[label] = (after - before) * 1000 / calls
    print(f"\n  breakdown of {calls} calls each, ms (means, so the parts add up)")
    print(f"  {'':<58}" + "".join(f"{label:>16}" for label in labels))
    for name, end, start in PARTS:
        row = [statistics.fmean(part_ms(c, end, start) for c in probed[label]) for label in labels]
        print(f"  {name:<58}" + "".join(f"{value:16.2f}" for value in row))
    row = [statistics.median(part_ms(c, "t1", "t0") for c in probed[label]) for label in labels]
    print(f"  {'total, median':<58}" + "".join(f"{value:16.2f}" for value in row))
    for name, key in (
        ("page faults in the call's process, median", "minor_faults"),
        ("CPU time in the call's process, median", "cpu_ms"),
        ("threads of the call's process as run() returned, median", "threads"),
    ):
        row = [statistics.median(c[key] for c in probed[label]) for label in labels]
        print(f"  {name:<58}" + "".join(f"{value:16.2f}" for value in row))
    cells = [f"{host_ms[label]:16.2f}" if label in host_ms else f"{'-':>16}" for label in labels]
    print(f"  {'CPU time of the warm host per call, mean':<58}" + "".join(cells))
    costs = {label: fork_cost(runs[label][0]) for label in labels if "fork" in label}
    for index, name in (
        (0, "fork() of a warm-host-sized process, median"),
        (1, "fork to its exit reaped, median"),
    ):
        cells = [
            f"{costs[label][index]:16.2f}" if label in costs else f"{'-':>16}" for label in labels
        ]
        print(f"  {name:<58}" + "".join(cells))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.heavy_bench", description=__doc__)
    parser.add_argument("--calls", type=int, default=100, help="warm calls per measurement")
    parser.add_argument("--size", type=int, default=200, help="matrix size of the matmul")
    parser.add_argument("--python", default=TORCH_PYTHON, help="the torch environment's python")
    args = parser.parse_args(argv)
    if not os.access(args.python, os.X_OK):
        print(f"no torch environment at {args.python}: run `make torch-env`", file=sys.stderr)
        return 2
    loads = ", ".join(f"{load:.2f}" for load in os.getloadavg())
    print(f"load average {loads}, {os.cpu_count()} cores, {args.calls} calls")
    matmul = spec("matmul", MATMUL)
    torch_host = Preload(WARM, (matmul, "bench"), python=args.python)
    resident = Preload(WARM, (matmul, "bench"), python=args.python, resident=Resident())
    trivial = spec("hello", HELLO)
    trivial_host = Preload(WARM, (trivial, "bench"))
    params = {"size": args.size}
    try:
        cold = timed_call(torch_host, matmul, params)
        cold_resident = timed_call(resident, matmul, params)
        timed_call(trivial_host, trivial, {})
        torch_ms, resident_ms, trivial_ms = [], [], []
        for _ in range(args.calls):  # interleaved: all three see the same load
            torch_ms.append(timed_call(torch_host, matmul, params))
            resident_ms.append(timed_call(resident, matmul, params))
            trivial_ms.append(timed_call(trivial_host, trivial, {}))
        report(args, cold, cold_resident, torch_ms, resident_ms, trivial_ms)
        breakdown(
            args.calls,
            {
                "torch fork": (torch_host, matmul, params),
                "torch resident": (resident, matmul, params),
                "trivial fork": (trivial_host, trivial, {}),
            },
        )
    finally:
        shutdown_sandbox()
    return 0


def report(
    args: argparse.Namespace,
    cold: float,
    cold_resident: float,
    torch_ms: list[float],
    resident_ms: list[float],
    trivial_ms: list[float],
) -> None:
    """The percentiles and the targets' verdicts."""
    torch_p50, torch_p95 = percentiles(torch_ms)
    resident_p50, resident_p95 = percentiles(resident_ms)
    trivial_p50, trivial_p95 = percentiles(trivial_ms)
    size = f"{args.size}x{args.size}"
    print(f"  cold first torch call, fork mode (host, import, setup)      {cold:9.1f} ms")
    print(f"  cold first torch call, resident (process, import, setup)    {cold_resident:9.1f} ms")
    for label, p50, p95 in (
        (f"warm fork-mode torch {size} matmul", torch_p50, torch_p95),
        (f"resident-mode torch {size} matmul", resident_p50, resident_p95),
        ("warm trivial plugin (hello, fork mode)", trivial_p50, trivial_p95),
    ):
        print(f"  {label:<42} p50 {p50:8.2f} ms   p95 {p95:8.2f} ms")
    ratio = torch_p50 / trivial_p50
    verdict = "PASS" if ratio <= TORCH_VS_TRIVIAL else "FAIL"
    print(
        f"\n  {verdict}  fork-mode torch p50 / trivial p50 = {ratio:.1f}x "
        f"(target at most {TORCH_VS_TRIVIAL:g}x)"
    )
    over = resident_p50 - trivial_p50
    verdict = "PASS" if over <= RESIDENT_OVER_TRIVIAL_MS else "FAIL"
    print(
        f"  {verdict}  resident torch p50 - trivial p50 = {over:+.2f} ms "
        f"(target at most +{RESIDENT_OVER_TRIVIAL_MS:g} ms)"
    )


if __name__ == "__main__":
    sys.exit(main())
