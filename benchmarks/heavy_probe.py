"""Sandbox-side probes for benchmarks/heavy_bench.py's breakdown (imported only in sandbox
processes: a call process forked from a warm host, or a resident process).

``probed_call`` is the loader's ``call_plugin`` with timestamps around it and around the
plugin's own ``run()``; they are ``time.monotonic()`` (CLOCK_MONOTONIC, one clock for every
process of the machine), so the portal can set them against its own. It reads the loader's
cache of warm plugins (a private name: a benchmark may, the portal never does). Standard
library only: it runs under the plugin's own interpreter.
"""

from __future__ import annotations

import os
import resource
import time
from typing import Any


def probed_call(spec: Any, params: dict[str, Any]) -> dict[str, Any]:
    """call_plugin(spec, params), and when the call entered this process, ran the plugin's
    run(), and left, with this process's page faults and CPU time meanwhile, and its threads
    as it leaves (the host answers a call process with threads only once it has exited)."""
    entered = time.monotonic()
    before = resource.getrusage(resource.RUSAGE_SELF)
    from plugin_contract import loader  # warm: imported by the warm-up already

    plugin = loader._loaded.get(loader._key(loader._spec_dict(spec)))
    marks: dict[str, float] = {}
    if plugin is not None:
        inner = plugin.run

        def timed_run(**kwargs: Any) -> Any:
            marks["run_started"] = time.monotonic()
            try:
                return inner(**kwargs)
            finally:
                marks["run_ended"] = time.monotonic()

        plugin.run = timed_run
    try:
        value = loader.call_plugin(spec, params)
    finally:
        if plugin is not None:
            plugin.run = inner  # a resident process serves the next call with it
    after = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "value": value,
        "entered": entered,
        "left": time.monotonic(),
        **marks,
        "minor_faults": after.ru_minflt - before.ru_minflt,
        "threads": len(os.listdir("/proc/self/task")),
        "cpu_ms": (after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime) * 1000,
    }


def fork_cost() -> dict[str, float]:
    """What forking this process costs (as its warm host pays for every call process, ahead
    of the call): fork() in the parent, and fork to the child's exit reaped."""
    started = time.monotonic()
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    forked = time.monotonic()
    os.waitpid(pid, 0)
    return {
        "fork_ms": (forked - started) * 1000,
        "fork_exit_ms": (time.monotonic() - started) * 1000,
    }
