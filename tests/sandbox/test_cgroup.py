"""How memory_mb is enforced: a per-call cgroup v2 where a delegated one with the memory
controller exists, else RSS sampling; detection says which, and why it fell back."""

from __future__ import annotations

from pathlib import Path

import pytest

from sandbox import Limits, run_plugin_sandboxed, sandbox_status, shutdown_sandbox
from sandbox.zygote import cgroup

MOUNTINFO = "41 31 0:38 / {mount} rw,relatime - cgroup2 cgroup2 rw\n"


def fake_cgroup(tmp_path: Path, controllers: str) -> tuple[Path, Path]:
    """A /proc/self and a cgroup2 mount under tmp_path: this process in /portal."""
    proc, mount = tmp_path / "proc", tmp_path / "cgroup"
    proc.mkdir()
    (proc / "mountinfo").write_text(MOUNTINFO.format(mount=mount))
    (proc / "cgroup").write_text("4:memory:/x\n0::/portal\n")
    own = mount / "portal"
    own.mkdir(parents=True)
    (own / "cgroup.controllers").write_text(controllers + "\n")
    (own / "cgroup.subtree_control").write_text("\n")
    return proc, own


class TestDetection:
    def test_this_machine__falls_back_to_rss_sampling_with_its_reason(self):
        """Here (v1/v2 hybrid, no delegated v2 subtree) detection refuses and says why."""
        directory, reason = cgroup.detect()
        assert directory is None
        assert "memory controller" in reason or "cgroup v2" in reason, reason

    def test_delegated_directory_with_memory__used_and_its_children_get_the_controller(
        self, tmp_path
    ):
        """A writable cgroup v2 directory offering memory is used; memory is enabled below it."""
        proc, own = fake_cgroup(tmp_path, "cpu io memory pids")
        assert cgroup.detect(proc=str(proc)) == (str(own), "")
        assert (own / "cgroup.subtree_control").read_text() == "+memory"

    def test_no_memory_controller__the_reason_lists_what_there_is(self, tmp_path):
        """Without the memory controller the reason names the directory and its controllers."""
        proc, own = fake_cgroup(tmp_path, "cpu pids")
        directory, reason = cgroup.detect(proc=str(proc))
        assert directory is None
        assert reason == (
            f"the memory controller is not available in {own} (its controllers: cpu pids; "
            "on a v1/v2 hybrid it belongs to cgroup v1)"
        )

    def test_configured_directory_not_a_cgroup__says_so(self, tmp_path):
        """SANDBOX_CGROUP naming a plain directory is refused with that reason."""
        proc, _ = fake_cgroup(tmp_path, "memory")
        plain = tmp_path / "plain"
        plain.mkdir()
        directory, reason = cgroup.detect(str(plain), proc=str(proc))
        assert (directory, reason) == (None, f"{plain} is not a cgroup v2 directory")

    def test_events_and_peak__read_from_the_groups_files(self, tmp_path):
        """oom_kill in memory.events means the kernel killed for memory.max; memory.peak in KiB."""
        (tmp_path / "memory.events").write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n")
        (tmp_path / "memory.peak").write_text(f"{300 * 1024 * 1024}\n")
        assert cgroup.oom_killed(str(tmp_path)) and cgroup.peak_kb(str(tmp_path)) == 300 * 1024


class TestMechanismShown:
    @pytest.fixture(autouse=True)
    def _stop_hosts(self):
        yield
        shutdown_sandbox()

    def test_call_and_host__say_rss_sampling_and_why(self):
        """A call under memory_mb says rss-sampling; the host's status says why not cgroups."""
        result = run_plugin_sandboxed(
            "tests.sandbox_targets.basic:add", 1, 2, limits=Limits(memory_mb=256)
        )
        assert (result.value, result.memory_mechanism) == (3, "rss-sampling")
        (host,) = [entry for entry in sandbox_status() if entry["preload"] is None]
        assert host["memory_mechanism"] == "rss-sampling"
        assert host["memory_fallback"] == cgroup.detect()[1]

    def test_delegated_cgroup__the_call_joins_a_group_of_its_own_with_memory_max(
        self, tmp_path, monkeypatch
    ):
        """Under SANDBOX_CGROUP (cgroup files faked in a plain directory: no delegated cgroup
        here), the host makes the call a group with memory.max, puts the call's process in it
        before it runs, and the result says cgroup-memory.max."""
        delegated = tmp_path / "delegated"
        delegated.mkdir()
        (delegated / "cgroup.controllers").write_text("cpu memory\n")
        (delegated / "cgroup.subtree_control").write_text("memory\n")
        monkeypatch.setenv("SANDBOX_CGROUP", str(delegated))
        shutdown_sandbox()  # the next host reads it
        result = run_plugin_sandboxed(
            "tests.sandbox_targets.basic:process_info", limits=Limits(memory_mb=256)
        )
        assert result.ok, result.error
        assert result.memory_mechanism == "cgroup-memory.max"
        (group,) = [path for path in delegated.iterdir() if path.is_dir()]
        assert (group / "memory.max").read_text() == str(256 * 1024 * 1024)
        assert (group / "cgroup.procs").read_text() == str(result.value["pid"])
