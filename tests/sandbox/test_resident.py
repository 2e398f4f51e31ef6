"""Resident mode: calls run in long-lived processes that ran the warm-up once; a crash, hang or
memory blow-up kills only that process, crashes back off and then are refused, and processes
are recycled after max_calls or past max_memory_mb."""

from __future__ import annotations

import itertools
import os
import threading
import time

import psutil
import pytest

from sandbox import (
    Fault,
    Limits,
    Outcome,
    Phase,
    Preload,
    Resident,
    configure_sandbox,
    discard_preload,
    run_plugin_sandboxed,
    sandbox_status,
    shutdown_sandbox,
)
from sandbox.portal.janitor import remove_dead_hosts_dirs
from tests.sandbox_targets.process_checks import is_running, new_marker, wait_until

T = "tests.sandbox_targets.resident"
LIMITS = Limits(timeout_s=10)


@pytest.fixture(autouse=True)
def stop_processes():
    yield
    shutdown_sandbox()


def resident(**policy) -> Preload:
    """A Preload of its own (a fresh tag), run in resident mode with this policy."""
    return Preload(f"{T}:setup", (new_marker(),), resident=Resident(**policy))


def call(target, preload, *args, limits=LIMITS):
    return run_plugin_sandboxed(f"{T}:{target}", *args, limits=limits, preload=preload)


def calls_at_once(target, preload, count):
    """`count` calls released together from threads of their own; their results."""
    barrier = threading.Barrier(count)
    results = []

    def one() -> None:
        barrier.wait()
        results.append(call(target, preload))

    threads = [threading.Thread(target=one) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


class TestResidentCalls:
    def test_calls__run_in_one_process_that_ran_setup_once(self):
        """Three calls share one process (same pid), whose warm-up ran once; mode is resident."""
        preload = resident()
        results = [call("info", preload) for _ in range(3)]
        assert all(r.ok for r in results), [r.error for r in results]
        assert {r.value["pid"] for r in results} == {results[0].value["pid"]}
        assert [r.value["setups"] for r in results] == [1, 1, 1]
        assert [r.value["calls"] for r in results] == [1, 2, 3]
        assert {r.mode for r in results} == {"resident"}

    def test_fork_mode__each_call_in_a_new_process(self):
        """Without a Resident policy each call forks anew and says mode fork."""
        preload = Preload(f"{T}:setup", (new_marker(),))
        first, second = call("info", preload), call("info", preload)
        assert first.value["pid"] != second.value["pid"]
        assert (first.mode, second.value["calls"]) == ("fork", 1)

    def test_output__each_call_gets_its_own_and_the_first_the_setups(self):
        """stdout is per call; setup()'s stderr comes with the first call only."""
        preload = resident()
        first = call("info", preload, "first note")
        second = call("info", preload, "second note")
        assert first.stdout == "first note\n" and second.stdout == "second note\n"
        assert "setup of" in first.stderr and "setup of" not in second.stderr

    def test_exception__keeps_the_process(self):
        """A plugin that raises is an error outcome; the process lives on for the next call."""
        preload = resident()
        before = call("info", preload)
        failed = call("boom", preload)
        after = call("info", preload)
        assert (failed.outcome, failed.error_type) == (Outcome.ERROR, "ValueError")
        assert after.value["pid"] == before.value["pid"]


class TestResidentIsolation:
    def test_hang__killed_at_timeout_and_the_next_call_works(self):
        """A call past timeout_s is a timeout; its process is gone and the next call runs anew."""
        preload = resident(backoff_s=0.05)
        before = call("info", preload)
        hung = call("hang", preload, limits=Limits(timeout_s=1))
        assert (hung.outcome, hung.limit) == (Outcome.TIMEOUT, "timeout_s")
        assert wait_until(lambda: not is_running(before.value["pid"]))
        after = call("info", preload)
        assert after.ok, after.error
        assert after.value["pid"] != before.value["pid"] and after.value["setups"] == 1

    def test_rss_limit__kills_the_process_with_the_peak_and_the_next_call_works(self):
        """Growing to 300 MB under memory_mb=150 is outcome memory; a new process follows."""
        preload = resident(backoff_s=0.05)
        limits = Limits(timeout_s=20, memory_mb=150)
        grown = call("grow", preload, 300, limits=limits)
        assert (grown.outcome, grown.limit, grown.signal) == (
            Outcome.MEMORY,
            "memory_mb",
            "SIGKILL",
        )
        assert grown.peak_rss_kb > 150 * 1024
        assert grown.memory_mechanism == "rss-sampling"
        after = call("info", preload, limits=limits)
        assert after.ok and after.value["calls"] == 1, after.error

    def test_crashes__back_off_then_are_refused_with_the_reason(self):
        """Each restart after a crash waits twice as long; past max_restarts calls are refused."""
        preload = resident(backoff_s=0.5, max_restarts=2)
        crashes, returned_at = [], []
        for _ in range(3):
            crashes.append(call("crash", preload))
            returned_at.append(time.monotonic())
        assert [c.signal for c in crashes] == ["SIGSEGV"] * 3
        assert "Segmentation fault" in crashes[0].stderr  # faulthandler's traceback
        # A backoff counts from the death, before its call returned: lower bounds only, as a
        # loaded machine may add to any call but never take from a backoff.
        apart = [later - earlier for earlier, later in itertools.pairwise(returned_at)]
        assert apart[0] >= 0.5 and apart[1] >= 1.0, apart
        refused = call("info", preload)
        assert (refused.outcome, refused.limit, refused.error_type) == (
            Outcome.CRASHED,
            "max_restarts",
            "CrashLoop",
        )
        assert "ended abnormally 3 times" in refused.error
        assert "more than Resident.max_restarts (2)" in refused.error
        assert refused.duration_ms < 500  # refused at once, nothing started

    def test_crash_loop__a_discarded_preload_starts_afresh(self):
        """After a refusal, discarding the Preload (a reload) lets the next call run."""
        preload = resident(backoff_s=0.05, max_restarts=0)
        call("crash", preload)
        assert call("info", preload).limit == "max_restarts"
        assert discard_preload(preload)
        assert call("info", preload).ok


class TestResidentCpuLimit:
    def test_cpu_s__a_busy_loop_ends_as_in_fork_mode_and_the_next_call_works(self):
        """A busy loop under cpu_s=1 is fork mode's CPU-limit outcome; a fresh process follows."""
        preload = resident(backoff_s=0.05)
        limits = Limits(timeout_s=30, cpu_s=1)
        before = call("info", preload)
        spun = call("spin", preload, limits=limits)
        forked = call("spin", Preload(f"{T}:setup", (new_marker(),)), limits=limits)
        assert (spun.outcome, spun.limit, spun.error_type) == (
            forked.outcome,
            forked.limit,
            forked.error_type,
        )
        assert (spun.outcome, spun.limit, spun.error_type) == (
            Outcome.TIMEOUT,
            "cpu_s",
            "CPUTimeLimit",
        )
        assert "its CPU limit of 1 CPU seconds" in spun.error
        assert spun.duration_ms < 10_000  # stopped by its CPU time, long before timeout_s
        assert wait_until(lambda: not is_running(before.value["pid"]))
        after = call("info", preload)
        assert after.ok, after.error
        assert after.value["pid"] != before.value["pid"] and after.value["calls"] == 1

    def test_cpu_s__counts_per_call_not_over_the_process_life(self):
        """Three calls of 0.6 CPU seconds each under cpu_s=1 all succeed, in one process."""
        preload = resident()
        results = [call("burn", preload, 0.6, limits=Limits(timeout_s=30, cpu_s=1)) for _ in "abc"]
        assert all(r.ok for r in results), [r.error for r in results]
        assert len({r.value["pid"] for r in results}) == 1

    def test_cpu_s__a_spinning_child_counts_for_the_call_and_dies_with_it(self):
        """A call whose child process burns the CPU is stopped at cpu_s; the child is gone."""
        preload = resident(backoff_s=0.05)
        spun = call("spin_in_child", preload, limits=Limits(timeout_s=30, cpu_s=1))
        assert (spun.outcome, spun.limit) == (Outcome.TIMEOUT, "cpu_s"), spun.error
        child = int(spun.stdout.split()[0])
        assert wait_until(lambda: not is_running(child))

    def test_no_fd_leak__over_calls_with_memory_and_cpu_limits(self):
        """50 resident calls under memory_mb and cpu_s leave the portal's open fds as they were."""
        preload = resident()
        limits = Limits(timeout_s=10, memory_mb=512, cpu_s=5)
        assert call("info", preload, limits=limits).ok
        before = len(os.listdir("/proc/self/fd"))
        for _ in range(50):
            assert call("info", preload, limits=limits).ok
        assert len(os.listdir("/proc/self/fd")) == before


class TestResidentRecycling:
    def test_max_calls__a_new_process_after_that_many_calls(self):
        """With max_calls=2 the third call runs in a new process that ran setup() once."""
        preload = resident(max_calls=2)
        results = [call("info", preload) for _ in range(3)]
        pids = [r.value["pid"] for r in results]
        assert pids[0] == pids[1] != pids[2]
        assert results[2].value == {"pid": pids[2], "setups": 1, "calls": 1}
        assert wait_until(lambda: not is_running(pids[0]))

    def test_max_memory_mb__a_process_left_past_it_is_replaced(self):
        """A call that leaves 80 MB kept in the process past max_memory_mb=60 retires it."""
        preload = resident(max_memory_mb=60)
        kept = call("keep", preload, 80)
        assert kept.ok, kept.error
        after = call("info", preload)
        assert after.value["pid"] != kept.value["pid"]
        assert wait_until(lambda: not is_running(kept.value["pid"]))

    def test_concurrency__two_calls_at_once_in_two_processes(self):
        """concurrency=2: two calls in flight at once each have a process of their own."""
        preload = resident(concurrency=2)
        results = calls_at_once("info", preload, 2)
        assert len({r.value["pid"] for r in results}) == 2
        assert all(r.value["setups"] == 1 for r in results)

    def test_discard__stops_its_processes(self):
        """discard_preload stops the resident process and its working directory goes."""
        preload = resident()
        pid = call("info", preload).value["pid"]
        workdir = psutil.Process(pid).cwd()
        assert discard_preload(preload)
        assert wait_until(lambda: not is_running(pid))
        assert wait_until(lambda: not os.path.exists(workdir))

    def test_crash__the_log_line_names_the_resident_process(self, caplog):
        """A resident process that dies mid-call is logged as a resident process, not a host."""
        preload = resident(backoff_s=0.05)
        pid = call("info", preload).value["pid"]
        with caplog.at_level("ERROR", logger="sandbox"):
            assert call("crash", preload).signal == "SIGSEGV"
        lines = [record.getMessage() for record in caplog.records]
        dying = f"the resident process (pid {pid}) died from SIGSEGV"
        assert any(line.startswith(f"sandbox: {dying}") for line in lines), lines
        assert not any("host" in line for line in lines), lines

    def test_crash__its_working_directory_is_removed(self):
        """A resident process that crashed leaves no working directory behind."""
        preload = resident(backoff_s=0.05)
        pid = call("info", preload).value["pid"]
        workdir = psutil.Process(pid).cwd()
        assert call("crash", preload).signal == "SIGSEGV"
        assert wait_until(lambda: not os.path.exists(workdir))


@pytest.fixture
def max_warm_hosts():
    """Set SandboxConfig.max_warm_hosts for one test, then put the old config back."""
    olds = []
    yield lambda cap: olds.append(configure_sandbox(max_warm_hosts=cap))
    for old in reversed(olds):
        configure_sandbox(old)


def listed_pids() -> set[int]:
    return {entry["pid"] for entry in sandbox_status()}


class TestResidentAndMaxWarmHosts:
    def test_resident_processes_count__the_least_recently_used_idle_one_is_stopped(
        self, max_warm_hosts
    ):
        """Cap 2: a warm host after two resident pools stops the older pool's process, and a
        resident start stops the next least recently used one; evicted pools start afresh."""
        max_warm_hosts(2)
        first, second = resident(), resident()
        warm = Preload(f"{T}:setup", (new_marker(),))  # fork mode: a warm host
        first_pid = call("info", first).value["pid"]
        second_pid = call("info", second).value["pid"]
        assert call("info", warm).ok
        (warm_host,) = (e["pid"] for e in sandbox_status() if e["mode"] == "fork")
        assert wait_until(lambda: not is_running(first_pid))
        assert is_running(second_pid) and first_pid not in listed_pids()
        again = call("info", first)
        assert again.ok, again.error
        assert again.value["pid"] != first_pid and again.value["calls"] == 1
        assert wait_until(lambda: not is_running(second_pid))
        assert is_running(warm_host) and listed_pids() == {warm_host, again.value["pid"]}

    def test_concurrent_processes_each_count(self, max_warm_hosts):
        """Cap 2: a pool's two processes fill it, so another pool's start stops them both."""
        max_warm_hosts(2)
        busy, other = resident(concurrency=2), resident()
        results = calls_at_once("info", busy, 2)
        pids = {r.value["pid"] for r in results}
        assert len(pids) == 2
        assert call("info", other).ok
        assert wait_until(lambda: not any(is_running(pid) for pid in pids))

    def test_a_busy_resident_process_is_never_stopped_mid_call(self, max_warm_hosts, tmp_path):
        """Cap 1: another pool starting while one is in a call exceeds the cap; the call ends ok."""
        max_warm_hosts(1)
        held, other = resident(), resident()
        started, release = tmp_path / "started", tmp_path / "release"
        results = []
        holder = threading.Thread(
            target=lambda: results.append(call("hold", held, str(started), str(release)))
        )
        holder.start()
        try:
            assert wait_until(started.exists, timeout=30)
            assert call("info", other).ok
        finally:
            release.touch()
            holder.join(30)
        assert results and results[0].ok, results and results[0].error
        assert is_running(results[0].value["pid"])


class TestForkAfterCuda:
    def test_fork_mode__a_warm_up_that_initialised_cuda_is_refused(self):
        """Fork mode after a warm-up that initialised CUDA: refused, unavailable, saying why."""
        preload = Preload(f"{T}:setup_touching_cuda", (new_marker(),))
        refused = call("info", preload)
        assert (refused.outcome, refused.phase, refused.fault) == (
            Outcome.ERROR,
            Phase.WARM_UP,
            Fault.UNAVAILABLE,
        )
        assert refused.detail == {"cuda_initialized": True}
        assert "resident" in refused.error

    def test_resident_mode__the_same_warm_up_serves_calls(self):
        """In resident mode nothing forks after the warm-up, so CUDA is fine there."""
        preload = Preload(f"{T}:setup_touching_cuda", (new_marker(),), resident=Resident())
        assert call("info", preload).ok


class TestResidentDirectories:
    def test_janitor_sweep__keeps_a_live_resident_process_directory(self):
        """Another portal's janitor removing dead hosts' directories keeps a live resident's."""
        preload = resident()
        pid = call("info", preload).value["pid"]
        workdir = psutil.Process(pid).cwd()
        remove_dead_hosts_dirs(os.path.dirname(workdir))
        assert os.path.isdir(workdir)
        assert call("info", preload).value["calls"] == 2
