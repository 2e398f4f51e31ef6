"""The sandbox machinery under stress: hosts dying or wedging, concurrent callers, a forked
portal (gunicorn pre-fork), and no fd leaks in the portal."""

import os
import pickle
import signal
import threading
import time

import pytest

from sandbox import (
    Limits,
    Outcome,
    configure_sandbox,
    run_plugin_sandboxed,
    sandbox_status,
    shutdown_sandbox,
)
from tests.sandbox_targets.process_checks import (
    assert_nothing_left,
    host_pids,
    idle_spares,
    is_running,
    open_fd_count,
    wait_until,
)

BASIC = "tests.sandbox_targets.basic"
HOSTILE = "tests.sandbox_targets.hostile"
GRACE_S = 3.0


def warm_default_host() -> int:
    assert run_plugin_sandboxed(f"{BASIC}:add", 1, 1).ok
    (pid,) = host_pids()
    return pid


def run_in_thread(target, *args, **kwargs):
    box = {}

    def body():
        box["result"] = run_plugin_sandboxed(target, *args, **kwargs)

    thread = threading.Thread(target=body)
    thread.start()
    return thread, box


class TestHostFailures:
    def test_host_killed_mid_call_fails_that_call_and_the_next_call_restarts_it(self):
        """A host killed mid-call fails that call naming SIGKILL; the next call gets a new host."""
        host = warm_default_host()
        thread, box = run_in_thread(f"{HOSTILE}:sleep", 30, limits=Limits(timeout_s=20))
        time.sleep(0.5)  # let the call start
        os.kill(host, signal.SIGKILL)
        thread.join(GRACE_S)
        assert not thread.is_alive(), "the call did not return after its host died"
        result = box["result"]
        assert result.outcome is Outcome.SANDBOX_FAILURE
        assert "SIGKILL" in result.error and f"pid {host}" in result.error
        assert_nothing_left()
        after = run_plugin_sandboxed(f"{BASIC}:add", 2, 2)
        assert after.ok and after.value == 4
        assert host_pids() and host_pids() != [host]

    def test_idle_host_killed_is_replaced_transparently(self):
        """A host killed while idle is replaced without the next call noticing."""
        host = warm_default_host()
        os.kill(host, signal.SIGKILL)
        wait_until(lambda: not is_running(host))
        result = run_plugin_sandboxed(f"{BASIC}:add", 2, 3)
        assert result.ok and result.value == 5

    def test_wedged_host_is_killed_after_timeout_plus_grace(self):
        """A host that stops answering fails the call after timeout plus grace, and is replaced."""
        old = configure_sandbox(grace_s=1.0)
        try:
            host = warm_default_host()
            os.kill(host, signal.SIGSTOP)  # alive but answering nothing
            started = time.monotonic()
            result = run_plugin_sandboxed(f"{BASIC}:add", 1, 2, limits=Limits(timeout_s=1))
            elapsed = time.monotonic() - started
            assert result.outcome is Outcome.SANDBOX_FAILURE
            assert "did not answer" in result.error
            # timeout_s + grace_s, plus slack; no terminate-and-wait on a wedged host
            assert elapsed < 1 + 1 + 1.5
            assert wait_until(lambda: not is_running(host))
            assert run_plugin_sandboxed(f"{BASIC}:add", 1, 2).value == 3
        finally:
            configure_sandbox(old)

    def test_shutdown_then_call_starts_a_new_host(self):
        """After shutdown_sandbox the old host is gone and the next call starts a new one."""
        host = warm_default_host()
        shutdown_sandbox()
        assert wait_until(lambda: not is_running(host))
        assert run_plugin_sandboxed(f"{BASIC}:add", 1, 2).value == 3


class TestConcurrency:
    def test_eight_threads_get_their_own_results(self):
        """Eight threads calling at once each get their own arguments back, in 25 calls apiece."""
        errors = []

        def caller(n):
            for i in range(25):
                result = run_plugin_sandboxed(f"{BASIC}:echo", n, i, who=f"thread-{n}")
                expected = {"args": [n, i], "kwargs": {"who": f"thread-{n}"}}
                if not result.ok or result.value != expected:
                    errors.append((n, i, result.outcome, result.error, result.value))

        threads = [threading.Thread(target=caller, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert not errors

    def test_slow_call_does_not_block_fast_calls(self, tmp_path):
        """Ten quick calls all finish while a call that holds its host is still running."""
        started, release = tmp_path / "started", tmp_path / "release"
        thread, box = run_in_thread(
            f"{HOSTILE}:block_until", str(started), str(release), limits=Limits(timeout_s=60)
        )
        assert wait_until(started.exists, timeout=30), "the held call never started"
        try:
            for _ in range(10):
                assert run_plugin_sandboxed(f"{BASIC}:add", 1, 1).ok
            assert thread.is_alive(), "the held call ended before the quick calls"
        finally:
            release.touch()
            thread.join(60)
        assert box["result"].value == "released"


class TestPortalProcess:
    def test_no_fd_leak_over_200_calls(self):
        """200 successful calls leave the portal with as many open file descriptors as before."""
        warm_default_host()
        before = open_fd_count()
        for i in range(200):
            assert run_plugin_sandboxed(f"{BASIC}:add", i, 1).ok
        assert open_fd_count() == before

    def test_no_fd_leak_over_failing_calls(self):
        """Failing calls (an exception, an unsendable value, an exit) leak no fd in the portal."""
        warm_default_host()
        before = open_fd_count()
        for target in ("divide", "unpicklable", "hard_exit"):
            for _ in range(10):
                args = (1, 0) if target == "divide" else (3,) if target == "hard_exit" else ()
                assert not run_plugin_sandboxed(f"{BASIC}:{target}", *args).ok
        assert open_fd_count() == before

    @pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
    def test_forked_portal_starts_its_own_host(self):
        """A forked portal worker gets its own host, gone with it; the parent's is untouched."""
        parent_host = warm_default_host()
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # the "gunicorn worker"
            code = 1
            try:
                os.close(read_end)
                result = run_plugin_sandboxed(f"{BASIC}:add", 20, 22)
                report = {"value": result.value, "error": result.error, "hosts": host_pids()}
                os.write(write_end, pickle.dumps(report))
                code = 0
            finally:
                os._exit(code)
        os.close(write_end)
        with os.fdopen(read_end, "rb") as pipe:
            data = pipe.read()
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        report = pickle.loads(data)
        assert report["value"] == 42, report["error"]
        (child_host,) = report["hosts"]
        assert child_host != parent_host
        # The worker's host goes away with the worker; the parent's is untouched.
        assert wait_until(lambda: not is_running(child_host))
        assert host_pids() == [parent_host]
        assert run_plugin_sandboxed(f"{BASIC}:add", 1, 1).ok
        assert [entry["pid"] for entry in sandbox_status()] == [parent_host]


class TestSandboxFailures:
    def test_host_that_cannot_start_is_a_sandbox_failure_not_an_exception(self, tmp_path):
        """A host that exits at start is a SANDBOX_FAILURE naming its exit code; nothing raises."""
        broken = tmp_path / "python"
        broken.write_text("#!/bin/sh\necho 'no interpreter here' >&2\nexit 3\n")
        broken.chmod(0o755)
        old = configure_sandbox(python=str(broken))
        try:
            result = run_plugin_sandboxed(f"{BASIC}:add", 1, 2)
        finally:
            configure_sandbox(old)
        assert result.outcome is Outcome.SANDBOX_FAILURE
        assert "exit code 3" in result.error and "host" in result.error
        assert run_plugin_sandboxed(f"{BASIC}:add", 1, 2).value == 3

    def test_missing_interpreter_is_a_sandbox_failure(self, tmp_path):
        """A configured Python that does not exist is a SANDBOX_FAILURE: it could not be started."""
        old = configure_sandbox(python=str(tmp_path / "no-such-python"))
        try:
            result = run_plugin_sandboxed(f"{BASIC}:add", 1, 2)
        finally:
            configure_sandbox(old)
        assert result.outcome is Outcome.SANDBOX_FAILURE
        assert "could not be started" in result.error


class TestSpares:
    def test_a_spare_killed_while_idle_is_replaced(self):
        """Killing the idle spares disturbs no call, and the same host forks new spares."""
        host = warm_default_host()
        assert wait_until(lambda: idle_spares(host))
        killed = idle_spares(host)
        for spare in killed:
            os.kill(spare, signal.SIGKILL)
        assert wait_until(lambda: not any(is_running(pid) for pid in killed))
        result = run_plugin_sandboxed(f"{BASIC}:add", 2, 2)
        assert result.ok and result.value == 4, result.error
        assert host_pids() == [host]
        assert wait_until(lambda: idle_spares(host))

    def test_no_spares_configured_still_works(self):
        """With spare_children=0 calls still run, and no spare waits idle."""
        old = configure_sandbox(spare_children=0)
        try:
            host = warm_default_host()
            assert run_plugin_sandboxed(f"{BASIC}:add", 1, 1).ok
            assert idle_spares(host) == {}
        finally:
            configure_sandbox(old)
