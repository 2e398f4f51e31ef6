"""Heavy-plugin benchmark: ``python -m benchmarks.heavy_bench [--calls N] [--python PATH]``.

Runs the real torch plugin (examples/torch/matmul.py) the way the portal does (its own
interpreter, a warm host per plugin, a fork per call; or, in resident mode, a long-lived
process that imported torch and ran setup() once) and a trivial plugin for comparison, in one
run: the cold first call of each mode (process start, torch import, setup()), warm fork-mode
and resident-mode calls of the matmul, and warm calls of the trivial plugin (fork mode),
p50/p95 each, interleaved, with the targets: fork-mode torch p50 at most 10x the trivial p50,
resident torch p50 at most the trivial p50 plus 2 ms. Needs `make torch-env` (or --python).
Not a test: timings depend on the machine and its load (shown at the top).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # run as a script from anywhere: the sandbox package is at ROOT

from sandbox import Limits, Preload, Resident, run_plugin_sandboxed, shutdown_sandbox  # noqa: E402

TORCH_PYTHON = os.path.join(ROOT, "var", "envs", "torch", "bin", "python")
MATMUL = os.path.join(ROOT, "examples", "torch", "matmul.py")
HELLO = os.path.join(ROOT, "examples", "plugins", "hello.py")
WARM = "plugin_contract.loader:warm_plugin"
CALL = "plugin_contract.loader:call_plugin"
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.heavy_bench", description=__doc__)
    parser.add_argument("--calls", type=int, default=100, help="warm calls per measurement")
    parser.add_argument("--size", type=int, default=200, help="matrix size of the matmul")
    parser.add_argument("--python", default=TORCH_PYTHON, help="the torch environment's python")
    args = parser.parse_args(argv)
    if not os.access(args.python, os.X_OK):
        print(f"no torch environment at {args.python}: run `make torch-env`", file=sys.stderr)
        return 2
    print(f"load average {os.getloadavg()[0]:.2f}, {os.cpu_count()} cores, {args.calls} calls")
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
    finally:
        shutdown_sandbox()
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
