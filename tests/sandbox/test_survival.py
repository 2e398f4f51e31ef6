"""What the sandbox must survive. Each test runs the real misbehaviour and then checks that
the call returned in time, the result says what happened, and nothing it started is left."""

import signal
import time
from pathlib import Path

import pytest

from sandbox import Limits, Outcome, run_plugin_sandboxed
from tests.sandbox_targets.process_checks import (
    assert_nothing_left,
    host_pids,
    new_marker,
    rss_bytes,
)

HOSTILE = "tests.sandbox_targets.hostile"
GRACE_S = 3.0  # generous: the suite shares 2 cores with other engineers' runs


def run_timed(target, *args, limits, **kwargs):
    started = time.monotonic()
    result = run_plugin_sandboxed(target, *args, limits=limits, **kwargs)
    return result, time.monotonic() - started


@pytest.fixture(autouse=True)
def hosts_survive():
    """Whatever the plugin did, the host it ran in is still there afterwards."""
    run_plugin_sandboxed("tests.sandbox_targets.basic:add", 1, 1)
    before = host_pids()
    yield
    assert host_pids() == before, "a plugin took the sandbox host down with it"


class TestRunaway:
    def test_infinite_loop_is_killed_at_the_timeout(self):
        """An endless loop is a TIMEOUT at limits.timeout_s, naming it, with no process left."""
        result, elapsed = run_timed(f"{HOSTILE}:infinite_loop", limits=Limits(timeout_s=1))
        assert result.outcome is Outcome.TIMEOUT
        assert result.error_type == "Timeout"
        assert "wall-clock timeout of 1 s" in result.error
        assert "limits.timeout_s" in result.error
        assert 0.9 < elapsed < 1 + GRACE_S
        assert_nothing_left()

    def test_cpu_limit_is_reported_as_a_timeout_naming_cpu_seconds(self):
        """Going over limits.cpu_s is a TIMEOUT by SIGXCPU that names CPU seconds and the limit."""
        limits = Limits(timeout_s=20, cpu_s=1)
        result, elapsed = run_timed(f"{HOSTILE}:infinite_loop", limits=limits)
        assert result.outcome is Outcome.TIMEOUT
        assert result.error_type == "CPUTimeLimit"
        assert result.signal == "SIGXCPU"
        assert "CPU seconds" in result.error and "limits.cpu_s" in result.error
        assert elapsed < 1 + 1 + GRACE_S

    def test_plugin_ignoring_sigterm_is_still_killed(self):
        """A plugin that ignores SIGTERM is still killed at its timeout, leaving nothing behind."""
        limits = Limits(timeout_s=1)
        result, elapsed = run_timed(f"{HOSTILE}:ignore_sigterm_and_sleep", 30, limits=limits)
        assert result.outcome is Outcome.TIMEOUT
        assert elapsed < 1 + GRACE_S
        assert_nothing_left()

    def test_unbounded_allocation_hits_the_memory_limit(self):
        """Allocating without end is MEMORY past limits.memory_mb, naming it and the peak."""
        limits = Limits(timeout_s=20, memory_mb=256)
        result, _ = run_timed(f"{HOSTILE}:allocate_forever", limits=limits)
        assert result.outcome is Outcome.MEMORY
        assert result.error_type == "MemoryLimit"
        assert "(256 MB)" in result.error and "limits.memory_mb" in result.error
        assert result.peak_rss_kb is not None and result.peak_rss_kb > 256 * 1024
        assert_nothing_left()


class TestCrashes:
    def test_segfault(self):
        """A segfault is CRASHED by SIGSEGV, with faulthandler's traceback and no exit code."""
        result, _ = run_timed(f"{HOSTILE}:segfault", limits=Limits(timeout_s=10))
        assert result.outcome is Outcome.CRASHED
        assert result.signal == "SIGSEGV"
        assert result.error_type == "SIGSEGV"
        assert "SIGSEGV" in result.error
        assert "Fatal Python error" in result.stderr  # faulthandler's traceback
        assert "segfault" in result.stderr
        assert result.exit_code is None
        assert_nothing_left()

    def test_abort(self):
        """os.abort() in a plugin is CRASHED with SIGABRT."""
        result, _ = run_timed(f"{HOSTILE}:abort", limits=Limits(timeout_s=10))
        assert result.outcome is Outcome.CRASHED
        assert result.signal == "SIGABRT"

    def test_plugin_signalling_its_own_process_group_only_hurts_itself(self):
        """A plugin that signals its own process group kills only its call (CRASHED, SIGTERM)."""
        result, _ = run_timed(f"{HOSTILE}:call_process_group_kill", limits=Limits(timeout_s=10))
        assert result.outcome is Outcome.CRASHED
        assert result.signal == "SIGTERM"


class TestOutputFloods:
    @pytest.mark.parametrize("stream", ["stdout", "stderr"])
    def test_50_mb_is_captured_up_to_the_cap_without_growing_the_portal(self, stream):
        """50 MB of output keeps its last output_bytes, warns, and leaves portal memory flat."""
        rss_before = rss_bytes()
        limits = Limits(timeout_s=30)
        result, _ = run_timed(f"{HOSTILE}:flood", 50 * 1024 * 1024, stream, limits=limits)
        assert result.ok, result.error
        captured = getattr(result, stream)
        assert len(captured.encode()) <= limits.output_bytes
        assert captured.endswith("THE-END\n")  # the tail is what is kept
        assert any(stream in w and "limits.output_bytes" in w for w in result.warnings)
        assert rss_bytes() - rss_before < 20 * 1024 * 1024


class TestDiskBudget:
    def test_five_100_mb_files_under_a_200_mb_budget__killed_and_removed(self, tmp_path):
        """Writing past limits.disk_mb kills the call (disk_limit) and removes its files."""
        where = tmp_path / "cwd.txt"
        limits = Limits(timeout_s=60, disk_mb=200)
        result, _ = run_timed(f"{HOSTILE}:fill_disk", 5, 100, str(where), limits=limits)
        assert result.outcome is Outcome.DISK_LIMIT, result.error
        assert result.error_type == "DiskLimit"
        assert result.signal == "SIGKILL"  # stopped while writing, not after returning
        assert result.disk_used_kb is not None and result.disk_used_kb > 200 * 1024
        assert f"wrote {result.disk_used_kb // 1024} MB" in result.error
        assert "limits.disk_mb (200 MB)" in result.error
        assert "raise limits.disk_mb, write less, or write" in result.error
        assert not Path(where.read_text()).exists(), "the call's files were left on disk"
        assert_nothing_left()
        assert run_plugin_sandboxed("tests.sandbox_targets.basic:add", 2, 2).value == 4

    def test_burst_past_the_budget_then_return__still_disk_limit(self, tmp_path):
        """A call that wrote past its budget faster than the host looks is caught at its end
        (on a loaded machine the host may look while it writes: disk_limit all the same)."""
        where = tmp_path / "cwd.txt"
        limits = Limits(timeout_s=30, disk_mb=1)
        result, _ = run_timed(f"{HOSTILE}:fill_disk", 1, 3, str(where), limits=limits)
        assert result.outcome is Outcome.DISK_LIMIT, result.error
        assert result.disk_used_kb is not None and result.disk_used_kb > 1024
        assert not Path(where.read_text()).exists()

    def test_within_the_budget__ok_with_the_size_written(self, tmp_path):
        """A call that stays under its budget succeeds and reports what it wrote."""
        where = tmp_path / "cwd.txt"
        limits = Limits(timeout_s=30, disk_mb=10)
        result, _ = run_timed(f"{HOSTILE}:fill_disk", 2, 1, str(where), limits=limits)
        assert result.ok, result.error
        assert 2 * 1024 <= result.disk_used_kb < 3 * 1024

    def test_sparse_file__counts_its_allocated_blocks_not_its_length(self):
        """A 200 MB sparse file under a 10 MB budget is fine: only allocated blocks count."""
        result, _ = run_timed(f"{HOSTILE}:sparse_file", 200, limits=Limits(disk_mb=10))
        assert result.ok, result.error
        assert result.value > 200 * 1024 * 1024
        assert result.disk_used_kb is not None and result.disk_used_kb < 1024

    def test_hard_links__count_once(self):
        """A 3 MB file under six names is 3 MB of disk, within a 10 MB budget."""
        result, _ = run_timed(f"{HOSTILE}:hard_links", 3, 5, limits=Limits(disk_mb=10))
        assert result.ok, result.error
        assert 3 * 1024 <= result.disk_used_kb < 4 * 1024

    def test_data_in_an_unreadable_directory__still_counted(self):
        """Making a directory unreadable does not hide what is in it from the budget."""
        limits = Limits(timeout_s=20, disk_mb=2)
        result, elapsed = run_timed(f"{HOSTILE}:hide_in_unreadable_dir", 4, limits=limits)
        assert result.outcome is Outcome.DISK_LIMIT, result.error
        assert elapsed < 10, "found only at the timeout"
        assert_nothing_left()

    def test_disk_mb_none__no_budget(self, tmp_path):
        """disk_mb=None turns the budget off; nothing is measured."""
        where = tmp_path / "cwd.txt"
        limits = Limits(timeout_s=30, disk_mb=None)
        result, _ = run_timed(f"{HOSTILE}:fill_disk", 1, 3, str(where), limits=limits)
        assert result.ok, result.error
        assert result.disk_used_kb is None


class TestEscapingProcesses:
    @pytest.mark.parametrize("setsid", [False, True], ids=["same-session", "setsid"])
    def test_grandchild_left_sleeping_is_killed(self, setsid):
        """A process the plugin left sleeping is killed when the call ends, setsid or not."""
        marker = new_marker()
        result, _ = run_timed(
            f"{HOSTILE}:spawn_sleeper", marker, setsid=setsid, limits=Limits(timeout_s=10)
        )
        assert result.ok, result.error
        assert_nothing_left(marker, pids=[result.value])

    def test_grandchild_of_a_timed_out_call_is_killed(self):
        """A detached process started by a call that times out is killed along with the call."""
        marker = new_marker()
        result, elapsed = run_timed(
            f"{HOSTILE}:spawn_sleeper",
            marker,
            setsid=True,
            then_sleep=30,
            limits=Limits(timeout_s=1),
        )
        assert result.outcome is Outcome.TIMEOUT
        assert elapsed < 1 + GRACE_S
        assert_nothing_left(marker)

    def test_double_forked_daemon_is_killed(self, tmp_path):
        """A daemon made by a double fork and setsid does not outlive the call."""
        marker = new_marker()
        result, _ = run_timed(
            f"{HOSTILE}:double_fork_daemon",
            marker,
            str(tmp_path / "pids"),
            limits=Limits(timeout_s=10),
        )
        assert result.ok, result.error
        assert_nothing_left(marker)

    @pytest.mark.parametrize("then", ["return", "hang"])
    def test_bounded_fork_bomb(self, tmp_path, then):
        """200 forked children are all killed, whether the call returns or hangs to its timeout."""
        pid_file = tmp_path / "pids"
        # Room for 200 forks on a loaded 2-core machine (seen: over 3 s) before the hang.
        limits = Limits(timeout_s=8)
        result, elapsed = run_timed(f"{HOSTILE}:fork_bomb", 200, str(pid_file), then, limits=limits)
        if then == "return":
            assert result.ok and result.value == 200, result.error
        else:
            assert result.outcome is Outcome.TIMEOUT
            assert elapsed < 8 + GRACE_S
        pids = [int(p) for p in pid_file.read_text().split()]
        assert len(pids) == 200
        assert_nothing_left(pids=pids)


class TestFileDescriptors:
    def test_plugin_closing_and_redirecting_std_fds_still_returns(self):
        """A plugin that closes every fd and redirects stdout to a file still returns its value."""
        marker = new_marker()
        result, _ = run_timed(f"{HOSTILE}:close_standard_fds", marker, limits=Limits(timeout_s=10))
        assert result.ok, result.error
        assert result.value == "still here"

    def test_plugin_closing_fds_then_crashing(self):
        """A plugin that closes every fd and then aborts is reported CRASHED with SIGABRT."""
        result, _ = run_timed(
            f"{HOSTILE}:close_standard_fds_and_crash", limits=Limits(timeout_s=10)
        )
        assert result.outcome is Outcome.CRASHED
        assert result.signal == signal.Signals.SIGABRT.name
