"""Preload: one warm host per distinct Preload value; calls fork from it and do not pay
the warm-up again; failing warm-ups are reported, and retried at most once per call."""

import threading
import time

import pytest

from sandbox import (
    Limits,
    Outcome,
    Preload,
    configure_sandbox,
    discard_preload,
    run_plugin_sandboxed,
    sandbox_status,
    shutdown_sandbox,
)
from tests.sandbox_targets.process_checks import is_running, new_marker, wait_until

WARM = "tests.sandbox_targets.warm"
LIMITS = Limits(timeout_s=10)


@pytest.fixture(scope="module", autouse=True)
def stop_warm_hosts():
    yield
    shutdown_sandbox()


@pytest.fixture
def attempts_log(tmp_path):
    path = tmp_path / "attempts.log"

    def attempts() -> int:
        return len(path.read_text().split()) if path.exists() else 0

    attempts.path = str(path)
    return attempts


def call(target, preload, *args):
    return run_plugin_sandboxed(f"{WARM}:{target}", *args, limits=LIMITS, preload=preload)


def test_calls_fork_from_the_warm_host_without_repeating_the_warm_up(attempts_log):
    """Calls with one Preload each fork from one warm host, which warmed up only once."""
    preload = Preload(f"{WARM}:warm", (new_marker(), 0.3, attempts_log.path))
    first = call("state", preload)
    second = call("state", preload)
    assert first.ok and second.ok, (first.error, second.error)
    assert first.value["tag"] == preload.args[0]
    assert first.value["warm_pid"] == second.value["warm_pid"]  # same warm host
    assert first.value["warmed_at"] == second.value["warmed_at"]  # warmed once
    assert first.value["pid"] != first.value["warm_pid"]  # the call ran in a fork
    assert attempts_log() == 1
    warm_hosts = [
        h for h in sandbox_status() if h["preload"] and h["preload"]["args"] == preload.args
    ]
    assert len(warm_hosts) == 1 and warm_hosts[0]["pid"] == first.value["warm_pid"]


def test_each_call_starts_from_the_warm_state_not_the_last_call(attempts_log):
    """A call's changes to the warm state are not seen by the next: each starts from the warm-up."""
    preload = Preload(f"{WARM}:warm", (new_marker(), 0, attempts_log.path))
    assert [call("bump", preload).value for _ in range(3)] == [1, 1, 1]


def test_distinct_preloads_get_distinct_warm_hosts():
    """Two different Preloads are warmed up in two different hosts."""
    a = call("state", Preload(f"{WARM}:warm", (new_marker(),))).value
    b = call("state", Preload(f"{WARM}:warm", (new_marker(),))).value
    assert a["warm_pid"] != b["warm_pid"] and a["tag"] != b["tag"]


def test_crash_in_a_call_leaves_the_warm_host_alone(attempts_log):
    """A call that segfaults is CRASHED while its warm host lives on, not warmed up again."""
    preload = Preload(f"{WARM}:warm", (new_marker(), 0, attempts_log.path))
    before = call("state", preload).value
    crashed = call("crash", preload)
    assert crashed.outcome is Outcome.CRASHED and crashed.signal == "SIGSEGV"
    after = call("state", preload).value
    assert after["warm_pid"] == before["warm_pid"]
    assert attempts_log() == 1


def test_warm_up_that_raises_is_reported_and_retried_once_per_call(attempts_log):
    """A raising warm-up is an ERROR saying where and why; each new call tries it once more."""
    preload = Preload(f"{WARM}:warm_raises", (attempts_log.path,))
    for expected_attempts in (1, 2):
        result = call("state", preload)
        assert result.outcome is Outcome.ERROR
        assert result.error_type == "RuntimeError"
        assert "warm-up" in result.error and "cannot load model weights" in result.error
        assert "warm.py" in result.error  # where it was raised
        assert "RuntimeError" in result.traceback
        assert attempts_log() == expected_attempts


def test_warm_up_that_kills_the_host_is_reported_and_not_restarted_in_a_loop(attempts_log):
    """A warm-up that segfaults is CRASHED naming the warm-up; only the next call tries it again."""
    preload = Preload(f"{WARM}:warm_segfaults", (attempts_log.path,))
    result = call("state", preload)
    assert result.outcome is Outcome.CRASHED
    assert result.signal == "SIGSEGV"
    assert "warm-up" in result.error and "SIGSEGV" in result.error
    time.sleep(0.5)  # nothing may restart it behind our back
    assert attempts_log() == 1
    assert call("state", preload).outcome is Outcome.CRASHED
    assert attempts_log() == 2


def test_warm_up_that_exits_is_reported(attempts_log):
    """A warm-up that exits is an ERROR naming the warm-up and its exit code."""
    result = call("state", Preload(f"{WARM}:warm_exits", (attempts_log.path,)))
    assert result.outcome is Outcome.ERROR
    assert result.exit_code == 3
    assert "warm-up" in result.error and "exit code 3" in result.error


def test_missing_warm_up_module_is_an_import_error():
    """A Preload naming a module that does not exist is an ERROR of type ModuleNotFoundError."""
    result = call("state", Preload("tests.sandbox_targets.no_such_module:warm"))
    assert result.outcome is Outcome.ERROR
    assert result.error_type == "ModuleNotFoundError"


def test_concurrent_callers_share_one_failing_attempt(attempts_log):
    """Four callers waiting on one failing warm-up all get its ERROR, with no attempt per caller."""
    preload = Preload(f"{WARM}:warm_raises", (attempts_log.path, 1.0))
    results = []
    threads = [
        threading.Thread(target=lambda: results.append(call("state", preload))) for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert [r.outcome for r in results] == [Outcome.ERROR] * 4
    assert attempts_log() <= 2  # callers that waited on an attempt take its answer


def test_slow_warm_up_times_out():
    """A warm-up slower than warmup_timeout_s is a TIMEOUT naming that setting, within seconds."""
    old = configure_sandbox(warmup_timeout_s=1.0, start_timeout_s=3.0)
    try:
        started = time.monotonic()
        result = call("state", Preload(f"{WARM}:warm", (new_marker(), 30)))
        assert result.outcome is Outcome.TIMEOUT
        assert "warmup_timeout_s" in result.error
        assert time.monotonic() - started < 1 + 3 + 3
    finally:
        configure_sandbox(old)


def test_discard_preload_reimports_fresh_code(attempts_log):
    """After discard_preload the next call warms up in a new host; an unknown one gives False."""
    preload = Preload(f"{WARM}:warm", (new_marker(), 0, attempts_log.path))
    first = call("state", preload).value
    assert discard_preload(preload) is True
    assert wait_until(lambda: not is_running(first["warm_pid"]))
    second = call("state", preload).value
    assert second["warm_pid"] != first["warm_pid"]
    assert attempts_log() == 2
    assert discard_preload(Preload(f"{WARM}:warm", ("never-used",))) is False


def test_discard_lets_running_calls_finish():
    """Discarding a Preload while a call runs on it lets that call finish with its value."""
    preload = Preload(f"{WARM}:warm", (new_marker(),))
    assert call("state", preload).ok
    box = {}
    thread = threading.Thread(
        target=lambda: box.update(
            result=run_plugin_sandboxed(
                "tests.sandbox_targets.hostile:sleep", 1.0, limits=LIMITS, preload=preload
            )
        )
    )
    thread.start()
    time.sleep(0.3)
    assert discard_preload(preload)
    thread.join(10)
    assert box["result"].ok and box["result"].value == "slept", box["result"].error


def test_discard_racing_a_first_call__leaves_no_host_that_shutdown_cannot_see(monkeypatch):
    """A call that looked up its preload just before discard_preload still ends up in a host
    the sandbox knows about: it is listed and shutdown_sandbox kills it."""
    from sandbox.portal import pool

    preload = Preload(f"{WARM}:warm", (new_marker(),))
    looked_up = threading.Event()
    discarded = threading.Event()
    real_slot = pool.HostPool._slot

    def slot_then_pause(self, key):
        slot = real_slot(self, key)
        if key == preload and not looked_up.is_set():
            looked_up.set()  # the call is descheduled right after its lookup...
            discarded.wait(5)  # ...while discard_preload runs
        return slot

    monkeypatch.setattr(pool.HostPool, "_slot", slot_then_pause)
    results = []
    caller = threading.Thread(target=lambda: results.append(call("state", preload)))
    caller.start()
    assert looked_up.wait(5)
    discard_preload(preload)
    discarded.set()
    caller.join(30)
    assert results and results[0].ok, results and results[0].error
    warm_pid = results[0].value["warm_pid"]
    assert warm_pid in [entry["pid"] for entry in sandbox_status()]
    shutdown_sandbox()
    assert wait_until(lambda: not is_running(warm_pid))


def test_warm_hosts_beyond_max_warm_hosts__evict_the_least_recently_used_idle_one():
    """With max_warm_hosts=2, a third preload stops the warm host used longest ago."""
    old = configure_sandbox(max_warm_hosts=2)
    try:
        first, second, third = (Preload(f"{WARM}:warm", (new_marker(),)) for _ in range(3))
        pids = {}
        for preload in (first, second, first, third):  # `second` is now the least recent
            result = call("state", preload)
            assert result.ok, result.error
            pids[preload] = result.value["warm_pid"]
        assert wait_until(lambda: not is_running(pids[second]))
        assert is_running(pids[first]) and is_running(pids[third])
        listed = {entry["pid"] for entry in sandbox_status()}
        assert {pids[first], pids[third]} <= listed and pids[second] not in listed
        again = call("state", second)  # an evicted preload simply warms up again
        assert again.ok and again.value["warm_pid"] != pids[second]
    finally:
        configure_sandbox(old)


class TestWarmUpOutput:
    def test_warm_up_output__in_the_first_calls_tails_only(self):
        """What a warm-up writes to fd 2 (as native code does) reaches its host's first call."""
        preload = Preload("os:write", (2, b"UserWarning: native import-time warning\n"))
        try:
            first = run_plugin_sandboxed("os:getpid", preload=preload)
            second = run_plugin_sandboxed("os:getpid", preload=preload)
        finally:
            discard_preload(preload)
        assert first.ok and "native import-time warning" in first.stderr
        assert second.ok and "native import-time warning" not in second.stderr

    def test_warm_up_print__in_the_first_calls_stdout(self):
        """A warm-up's print() is flushed into the first call's stdout, not the terminal."""
        preload = Preload("builtins:print", ("loading the model",))
        try:
            result = run_plugin_sandboxed("os:getpid", preload=preload)
        finally:
            discard_preload(preload)
        assert result.stdout.startswith("loading the model\n")
