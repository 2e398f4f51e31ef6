"""What makes a sandbox call cheap, and what it must not cost: compiled plugin code is cached
even when the portal writes no bytecode; a call is answered before its process has finished
exiting only when it left nothing behind; spares get ready at low priority and in batches
that shrink back when calls stop; a killed host's directories do not pile up."""

import os
import signal
import sys
import textwrap

import psutil
import pytest

from sandbox import (
    Limits,
    SandboxConfig,
    run_plugin_sandboxed,
    sandbox_status,
    shutdown_sandbox,
)
from tests.sandbox_targets.process_checks import (
    assert_nothing_left,
    host_pids,
    idle_spares,
    is_running,
    new_marker,
    wait_until,
)

BASIC = "tests.sandbox_targets.basic"
HOSTILE = "tests.sandbox_targets.hostile"


@pytest.fixture
def compiled_plugin(tmp_path, monkeypatch):
    """A plugin module in a directory of its own, reporting where its bytecode lives."""
    source = tmp_path / "plugin_src"
    source.mkdir()
    (source / "cache_probe.py").write_text(
        textwrap.dedent(
            """
            import os, sys

            def where():
                cached = __cached__
                return {
                    "cached": cached,
                    "mtime_ns": os.stat(cached).st_mtime_ns if os.path.exists(cached) else None,
                    "env": {k: os.environ.get(k) for k in
                            ("PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX")},
                }
            """
        )
    )
    monkeypatch.syspath_prepend(str(source))
    return source


class TestBytecodeCache:
    def test_plugin_code_is_compiled_once_when_the_portal_writes_no_bytecode(
        self, compiled_plugin, sandbox_settings, monkeypatch
    ):
        """Under PYTHONDONTWRITEBYTECODE a plugin compiles once per host, outside its sources."""
        monkeypatch.setattr(sys, "dont_write_bytecode", True)
        monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")
        monkeypatch.delenv("PYTHONPYCACHEPREFIX", raising=False)
        sandbox_settings(tmp_dir=str(compiled_plugin.parent))
        first = run_plugin_sandboxed("cache_probe:where")
        second = run_plugin_sandboxed("cache_probe:where")
        assert first.ok and second.ok, (first.error, second.error)
        # The second call read what the first compiled, from the host's private directory.
        assert first.value["mtime_ns"] is not None
        assert second.value["mtime_ns"] == first.value["mtime_ns"]
        assert "sandbox-pycache-" in first.value["cached"]
        assert not (compiled_plugin / "__pycache__").exists()  # the source tree stays clean
        # Plugins see the environment the portal has, not the host's start-up tweaks.
        assert second.value["env"] == {"PYTHONDONTWRITEBYTECODE": "1", "PYTHONPYCACHEPREFIX": None}

    def test_turned_off_nothing_is_written(self, compiled_plugin, sandbox_settings, monkeypatch):
        """With the bytecode cache turned off, no compiled plugin code is written anywhere."""
        monkeypatch.setattr(sys, "dont_write_bytecode", True)
        sandbox_settings(tmp_dir=str(compiled_plugin.parent), bytecode_cache=False)
        result = run_plugin_sandboxed("cache_probe:where")
        assert result.ok, result.error
        assert result.value["mtime_ns"] is None
        assert not list(compiled_plugin.parent.glob("sandbox-pycache-*"))

    def test_setting_comes_from_the_environment(self):
        """SANDBOX_BYTECODE_CACHE is on by default, 0 turns it off, other values are refused."""
        assert SandboxConfig.from_env({}).bytecode_cache is True
        assert SandboxConfig.from_env({"SANDBOX_BYTECODE_CACHE": "0"}).bytecode_cache is False
        with pytest.raises(ValueError, match="SANDBOX_BYTECODE_CACHE"):
            SandboxConfig.from_env({"SANDBOX_BYTECODE_CACHE": "maybe"})


class TestAnswering:
    def test_a_plain_call_reports_its_own_exit_and_usage_and_leaves_nothing(self):
        """A plain call reports exit code 0 and its memory use, and its process is then gone."""
        result = run_plugin_sandboxed(f"{BASIC}:process_info")
        assert result.ok, result.error
        assert result.exit_code == 0 and result.signal is None
        assert result.peak_rss_kb and result.peak_rss_kb > 1000
        assert_nothing_left(pids=[result.value["pid"]])

    def test_a_call_that_leaves_a_process_is_answered_only_once_it_is_gone(self):
        """A call that started a background process is answered only once that process is dead."""
        # No waiting here: when the answer arrives the escaped process is already dead.
        # Repeated: the call process may have exited before the host reads its result.
        for setsid in (False, True) * 10:
            marker = new_marker()
            result = run_plugin_sandboxed(f"{HOSTILE}:spawn_sleeper", marker, setsid=setsid)
            assert result.ok, result.error
            assert not is_running(result.value), f"setsid={setsid}: still running"

    def test_a_call_process_that_lingers_after_its_answer_is_killed(self):
        """A call whose process hangs while exiting is answered at once; that process dies soon."""
        result = run_plugin_sandboxed(f"{HOSTILE}:hang_on_exit", limits=Limits(timeout_s=60))
        assert result.ok, result.error
        # Answered at once; the hung exit is killed after about a second, not at 60 s.
        assert wait_until(lambda: not is_running(result.value), timeout=5.0)


class TestSpares:
    def test_spares_forked_for_a_burst_of_calls_are_dropped_when_calls_stop(self):
        """After a burst of calls, the idle spare processes shrink back to the configured one."""
        for _ in range(20):
            assert run_plugin_sandboxed(f"{BASIC}:add", 1, 2).ok
        (host,) = host_pids()
        # Idle again: back to SandboxConfig.spare_children (1) within a second or so.
        assert wait_until(lambda: len(idle_spares(host)) == 1, timeout=5.0), idle_spares(host)

    @pytest.mark.skipif(os.geteuid() != 0, reason="raising a priority back needs CAP_SYS_NICE")
    def test_spares_get_ready_at_low_priority_and_calls_run_at_the_hosts(self):
        """Idle spares wait at nice 19, while a call runs at the host's own priority."""
        result = run_plugin_sandboxed(f"{BASIC}:own_priority")
        assert result.ok, result.error
        (host,) = host_pids()
        assert result.value == psutil.Process(host).nice()
        assert wait_until(lambda: len(idle_spares(host)) >= 1)
        assert set(idle_spares(host).values()) == {19}

    def test_a_batch_of_calls__each_runs_at_the_hosts_priority(self):
        """Calls arriving faster than spares get ready take spares forked that instant: none
        runs at the spares' nice 19 (one that lowered itself late once did)."""
        from concurrent.futures import ThreadPoolExecutor

        for _ in range(5):
            shutdown_sandbox()  # a fresh host: no spare is ready when the batch arrives
            with ThreadPoolExecutor(8) as callers:
                results = list(
                    callers.map(lambda _: run_plugin_sandboxed(f"{BASIC}:own_priority"), range(8))
                )
            assert all(r.ok for r in results), [r.error for r in results]
            (host,) = host_pids()
            assert {r.value for r in results} == {psutil.Process(host).nice()}


class TestHostLeftovers:
    def test_a_killed_hosts_directories_are_removed(self, sandbox_settings, tmp_path):
        """A killed host's temporary directories are removed, and a new host takes the next call."""
        sandbox_settings(tmp_dir=str(tmp_path))
        assert run_plugin_sandboxed(f"{BASIC}:add", 1, 2).ok
        (host,) = host_pids()
        assert list(tmp_path.glob(f"sandbox-call-{host}-*"))  # spares' working directories
        os.kill(host, signal.SIGKILL)
        assert wait_until(lambda: not list(tmp_path.glob(f"sandbox-*-{host}-*")))
        assert run_plugin_sandboxed(f"{BASIC}:add", 1, 2).ok  # and a new host takes over

    def test_host_code_comes_from_the_sandbox_package_not_the_working_directory(
        self, sandbox_settings, tmp_path, monkeypatch
    ):
        """A 'sandbox' package in the working directory cannot replace the host's own code."""
        decoy = tmp_path / "sandbox"
        decoy.mkdir()
        (decoy / "__init__.py").write_text("")
        (decoy / "zygote").mkdir()
        (decoy / "zygote" / "__init__.py").write_text("")
        (decoy / "zygote" / "host.py").write_text("raise SystemExit(3)\n")
        monkeypatch.chdir(tmp_path)
        sandbox_settings()  # restart hosts from this working directory
        result = run_plugin_sandboxed(f"{BASIC}:add", 1, 2)
        assert result.ok, result.error
        assert sandbox_status()[0]["alive"]
