"""Cancelling a call in flight: its process group is killed, the result says it was
cancelled, the host and its other calls go on."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from sandbox import CancelToken, Limits, Outcome, run_plugin_sandboxed
from tests.sandbox_targets.process_checks import (
    assert_nothing_left,
    host_pids,
    is_running,
    new_marker,
    wait_until,
)

HOSTILE = "tests.sandbox_targets.hostile"
SLOW = Limits(timeout_s=60)


def call_in_thread(target: str, *args, **kwargs) -> tuple[threading.Thread, list]:
    """Run a sandboxed call on a thread; its result lands in the returned list."""
    results: list = []
    thread = threading.Thread(
        target=lambda: results.append(run_plugin_sandboxed(target, *args, **kwargs)),
        daemon=True,
    )
    thread.start()
    return thread, results


def pids_written(pid_file: Path) -> list[int]:
    assert wait_until(pid_file.exists, timeout=30), "the call never started"
    return [int(pid) for pid in pid_file.read_text().split()]


class TestCancel:
    def test_cancel_in_flight__process_group_killed_and_result_cancelled(self, tmp_path):
        """A running call and the child it started are killed; the result is `cancelled`."""
        marker, pid_file, token = new_marker(), tmp_path / "pids", CancelToken()
        thread, results = call_in_thread(
            f"{HOSTILE}:spawn_sleeper_and_wait", marker, str(pid_file), limits=SLOW, cancel=token
        )
        call_pid, child_pid = pids_written(pid_file)
        hosts = host_pids()
        cancelled_at = time.monotonic()
        token.cancel()
        thread.join(10)
        assert not thread.is_alive(), "the call did not end after its cancel"
        assert time.monotonic() - cancelled_at < 5
        [result] = results
        assert (result.ok, result.outcome, result.error_type) == (
            False,
            Outcome.CANCELLED,
            "Cancelled",
        )
        assert "was cancelled" in result.error and "killed" in result.error
        assert not is_running(call_pid) and not is_running(child_pid)
        assert_nothing_left(marker, pids=[call_pid, child_pid])
        assert host_pids() == hosts, "cancelling a call must not cost its host"

    def test_cancelled_before_the_call__never_starts(self, tmp_path):
        """A token cancelled already: the target never runs, the result is `cancelled`."""
        token = CancelToken()
        token.cancel()
        pid_file = tmp_path / "pids"
        result = run_plugin_sandboxed(
            f"{HOSTILE}:spawn_sleeper_and_wait", new_marker(), str(pid_file), cancel=token
        )
        assert result.outcome == Outcome.CANCELLED
        assert not pid_file.exists()

    def test_cancel_one_call__other_calls_of_the_host_go_on(self, tmp_path):
        """Only the cancelled call dies: a call running beside it in the same host returns."""
        token = CancelToken()
        doomed, doomed_results = call_in_thread(
            f"{HOSTILE}:spawn_sleeper_and_wait",
            new_marker(),
            str(tmp_path / "doomed"),
            limits=SLOW,
            cancel=token,
        )
        kept, kept_results = call_in_thread(
            f"{HOSTILE}:spawn_sleeper_and_wait", new_marker(), str(tmp_path / "kept"), 1.5
        )
        pids_written(tmp_path / "doomed")
        pids_written(tmp_path / "kept")
        token.cancel()
        doomed.join(10)
        kept.join(30)
        assert doomed_results[0].outcome == Outcome.CANCELLED
        assert (kept_results[0].outcome, kept_results[0].value) == (Outcome.OK, "not cancelled")

    def test_cancel_after_the_call__changes_nothing(self):
        """A token cancelled once the call returned leaves its result as it was."""
        token = CancelToken()
        result = run_plugin_sandboxed("tests.sandbox_targets.basic:add", 2, 3, cancel=token)
        token.cancel()
        assert (result.outcome, result.value, token.cancelled) == (Outcome.OK, 5, True)


class TestCancelResident:
    def test_cancel__kills_the_resident_process_and_the_next_call_starts_at_once(self):
        """A cancelled resident call ends `cancelled`, its process is gone, and the kill is not
        a crash: with max_restarts=0 the next call still runs, with no backoff."""
        from sandbox import Preload, Resident, shutdown_sandbox

        target = "tests.sandbox_targets.resident"
        preload = Preload(
            f"{target}:setup", (new_marker(),), resident=Resident(max_restarts=0, backoff_s=30)
        )
        try:
            before = run_plugin_sandboxed(f"{target}:info", limits=SLOW, preload=preload)
            assert before.ok, before.error
            token = CancelToken()
            thread, results = call_in_thread(
                f"{target}:hang", limits=SLOW, preload=preload, cancel=token
            )
            assert wait_until(lambda: token._hooks, timeout=30), "the call never started"
            token.cancel()
            thread.join(10)
            [result] = results
            assert (result.outcome, result.mode) == (Outcome.CANCELLED, "resident")
            assert wait_until(lambda: not is_running(before.value["pid"]))
            after = run_plugin_sandboxed(f"{target}:info", limits=SLOW, preload=preload)
            assert after.ok, after.error
            assert after.value["pid"] != before.value["pid"] and after.duration_ms < 10_000
        finally:
            shutdown_sandbox()
