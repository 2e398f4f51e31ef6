"""memory_mb limits the resident memory of the call's process tree, not its address space."""

from __future__ import annotations

from sandbox import Limits, Outcome, run_plugin_sandboxed

TARGETS = "tests.sandbox_targets.memory"


class TestResidentMemory:
    def test_large_address_space_small_rss__runs(self):
        """4 GB mapped but 64 MB resident passes a 256 MB limit (RLIMIT_AS would refuse it)."""
        limits = Limits(timeout_s=20, memory_mb=256)
        result = run_plugin_sandboxed(f"{TARGETS}:map_large_touch_little", 4096, 64, limits=limits)
        assert result.ok, result.error
        assert result.memory_mechanism == "rss-sampling"
        assert 64 * 1024 <= result.peak_rss_kb < 256 * 1024

    def test_rss_past_limit_in_a_large_mapping__killed_with_the_peak(self):
        """Touching 400 MB of a 4 GB mapping under memory_mb=256: memory, with its peak."""
        limits = Limits(timeout_s=20, memory_mb=256)
        result = run_plugin_sandboxed(f"{TARGETS}:map_large_touch_little", 4096, 400, limits=limits)
        assert (result.outcome, result.limit, result.signal) == (
            Outcome.MEMORY,
            "memory_mb",
            "SIGKILL",
        )
        assert result.peak_rss_kb > 256 * 1024
        assert f"used {result.peak_rss_kb // 1024} MB of resident memory" in result.error

    def test_child_process_counts__the_tree_is_killed(self):
        """A child that holds the memory counts: the whole tree is stopped, reported as memory."""
        limits = Limits(timeout_s=20, memory_mb=200)
        result = run_plugin_sandboxed(f"{TARGETS}:child_hoards", 300, limits=limits)
        assert (result.outcome, result.limit) == (Outcome.MEMORY, "memory_mb")
        assert result.peak_rss_kb > 200 * 1024

    def test_no_memory_limit__no_mechanism(self):
        """memory_mb=None: nothing is sampled and the result says no mechanism was in use."""
        limits = Limits(timeout_s=20, memory_mb=None)
        result = run_plugin_sandboxed(f"{TARGETS}:map_large_touch_little", 64, 8, limits=limits)
        assert result.ok and result.memory_mechanism is None
