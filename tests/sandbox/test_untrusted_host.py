"""A process that ran plugin code is untrusted: what it sends is data, bounded and checked,
never code the portal runs; its processes never outlive the portal that owns them."""

import contextlib
import json
import os
import pickle
import pwd
import resource
import signal
import subprocess
import sys
import textwrap
import time
import tracemalloc

import pytest

from sandbox import Limits, Outcome, Preload, run_plugin_sandboxed, shutdown_sandbox
from sandbox.portal.leftovers import process_token
from sandbox.portal.wire import decode_value
from tests.sandbox_targets.process_checks import is_running, wait_until

HOST = "tests.sandbox_targets.hostile_host"
RESULT = "tests.sandbox_targets.hostile_result"
LIMITS = Limits(timeout_s=10)
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(autouse=True)
def _stop_hosts():
    yield
    shutdown_sandbox()


def warm_call(warm_up, *warm_args, target="noop", limits=LIMITS):
    preload = Preload(f"{HOST}:{warm_up}", warm_args)
    return run_plugin_sandboxed(f"{HOST}:{target}", limits=limits, preload=preload)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class TestForgedFrames:
    def test_a_pickle_frame_from_a_warm_up_runs_nothing_in_the_portal(self, monkeypatch):
        """A warm-up that writes a code-running pickle on the control socket is refused."""
        monkeypatch.delenv("SANDBOX_PWNED", raising=False)
        result = warm_call("forge_pickle_hello")
        assert "SANDBOX_PWNED" not in os.environ
        assert result.outcome is Outcome.SANDBOX_FAILURE
        assert "malformed" in result.error and "warm-up" in result.error

    def test_a_pickle_bomb_value_does_not_expand_in_the_portal(self):
        """A host that answers with a 46-byte pickle of a 1 GB bytearray costs no memory."""
        before = peak_rss_mb()
        result = warm_call("answer_with_pickle_bomb")
        assert peak_rss_mb() - before < 100
        assert result.outcome is Outcome.UNSERIALISABLE
        assert "JSON" in result.error

    def test_fields_of_the_wrong_type_kill_the_host_and_say_so(self):
        """exit_code="zzz" and a 2**70 peak RSS are refused; the next call gets a new host."""
        first = warm_call("answer_with_bad_types")
        assert first.outcome is Outcome.SANDBOX_FAILURE
        assert "malformed" in first.error and "exit_code" in first.error
        assert first.exit_code is None and first.peak_rss_kb is None
        plain = run_plugin_sandboxed(f"{HOST}:noop", limits=LIMITS)
        assert plain.ok and plain.value == "ok"

    def test_output_larger_than_its_limit_is_refused_before_it_is_read(self):
        """A host may not send more stdout than limits.output_bytes."""
        result = warm_call("answer_with_huge_stdout")
        assert result.outcome is Outcome.SANDBOX_FAILURE
        assert "stdout" in result.error and "output_bytes" in result.error


class TestForgedRecords:
    @pytest.mark.parametrize("exit_code", ["zzz", 2**70])
    def test_a_record_with_a_lying_envelope_is_garbage(self, exit_code):
        """The child's envelope is schema-checked: a wrong type is reported, not believed."""
        result = run_plugin_sandboxed(f"{RESULT}:forged_record", exit_code, limits=LIMITS)
        assert result.outcome is Outcome.EXITED
        assert result.exit_code == 0
        assert any("exit_code" in warning for warning in result.warnings)


class TestJsonValues:
    def test_tuples_and_str_subclasses_come_back_as_plain_values(self):
        """A tuple becomes a list and a str subclass a str, as JSON carries them."""
        result = run_plugin_sandboxed(f"{RESULT}:tuple_and_str_subclass", limits=LIMITS)
        assert result.ok, result.error
        assert result.value == {"pair": [1, 2], "version": "2.13.0"}
        assert type(result.value["version"]) is str

    @pytest.mark.parametrize(
        ("target", "words"),
        [
            ("opaque_object", "object"),
            ("raw_bytes", "bytes"),
            ("not_a_number", "NaN"),
        ],
    )
    def test_values_json_cannot_carry_are_refused_with_advice(self, target, words):
        """Unknown types, bytes and NaN are unserialisable, and the reason says what to return."""
        result = run_plugin_sandboxed(f"{RESULT}:{target}", limits=LIMITS)
        assert result.outcome is Outcome.UNSERIALISABLE
        assert words in result.error
        assert "return plain data" in result.error

    def test_a_deeply_nested_value_is_refused_not_a_crash(self):
        """Nesting past the interpreter's recursion limit is unserialisable."""
        result = run_plugin_sandboxed(f"{RESULT}:nested", 100_000, limits=LIMITS)
        assert result.outcome is Outcome.UNSERIALISABLE

    def test_parsed_size_is_bounded_by_the_bytes(self):
        """The worst JSON for memory (empty containers) grows at most ~30x when parsed."""
        data = ("[" + ",".join(["[]"] * 300_000) + "]").encode()
        tracemalloc.start()
        try:
            value = decode_value(data)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert len(value) == 300_000
        assert peak < 30 * len(data)

    def test_a_hostile_host_cannot_send_nan_or_deep_json(self):
        """The portal's parser refuses what the child's encoder never writes."""
        for data in (b'{"x": NaN}', b"[" * 100_000 + b"]" * 100_000):
            with pytest.raises(ValueError):
                decode_value(data)


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping to another user needs root")
def test_run_as_applies_to_the_warm_up_too(sandbox_settings, targets_readable_by_anyone):
    """With SANDBOX_RUN_AS the warm host drops privileges before the plugin's import runs."""
    nobody = pwd.getpwnam("nobody")
    sandbox_settings(run_as="nobody")
    module = f"{targets_readable_by_anyone}.hostile_host"
    preload = Preload(f"{module}:record_uid", ())
    result = run_plugin_sandboxed(f"{module}:identity", limits=LIMITS, preload=preload)
    assert result.ok, result.error
    assert result.value == {"call_uid": nobody.pw_uid, "warm_uid": nobody.pw_uid}


class TestWarmUpBounds:
    def test_a_hanging_warm_up_is_bounded_by_the_calls_timeout(self, tmp_path):
        """A warm-up that never ends costs a call its own timeout, not the warm-up limit."""
        started = time.monotonic()
        pid_file = tmp_path / "pid"
        result = warm_call("hang", str(pid_file), limits=Limits(timeout_s=2))
        assert time.monotonic() - started < 6
        assert result.outcome is Outcome.TIMEOUT
        assert "warm-up" in result.error
        assert wait_until(lambda: not is_running(int(pid_file.read_text())))


PORTAL_SCRIPT = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, {repo!r})
    from sandbox import Limits, Preload, run_plugin_sandboxed
    run_plugin_sandboxed(
        "{host}:noop", limits=Limits(timeout_s=300),
        preload=Preload("{host}:{warm_up}", ({path!r},)),
    )
    time.sleep(600)  # a portal that goes on serving until it is killed
    """
)


def _start_portal(warm_up: str, path: str) -> subprocess.Popen:
    script = PORTAL_SCRIPT.format(repo=REPO, host=HOST, warm_up=warm_up, path=path)
    return subprocess.Popen([sys.executable, "-c", script])


def _wait_for_pid(path) -> int:
    assert wait_until(lambda: path.exists() and path.read_text().strip(), timeout=20)
    return int(path.read_text())


class TestNothingOutlivesThePortal:
    def test_a_warm_host_stuck_in_its_warm_up_dies_with_a_killed_portal(self, tmp_path):
        """kill -9 of the portal ends a warm host that is busy in the plugin's import."""
        path = tmp_path / "host.pid"
        portal = _start_portal("hang", str(path))
        try:
            host_pid = _wait_for_pid(path)
            portal.send_signal(signal.SIGKILL)
            portal.wait()
            assert wait_until(lambda: not is_running(host_pid), timeout=5)
        finally:
            portal.kill()

    def test_a_process_forked_in_setup_dies_with_a_killed_portal(self, tmp_path):
        """A daemon the warm-up started (own session, SIGTERM ignored) does not survive."""
        path = tmp_path / "child.pid"
        portal = _start_portal("fork_sleeper_and_record", str(path))
        try:
            child = _wait_for_pid(path)
            assert is_running(child)
            portal.send_signal(signal.SIGKILL)
            portal.wait()
            assert wait_until(lambda: not is_running(child), timeout=10)
        finally:
            portal.kill()
            _kill_quietly(path)

    def test_a_process_forked_in_setup_dies_when_its_warm_host_is_discarded(self, tmp_path):
        """discard_preload and shutdown leave no process the warm-up started."""
        path = tmp_path / "child.pid"
        result = warm_call("fork_sleeper_and_record", str(path))
        assert result.ok, result.error
        child = int(path.read_text())
        assert is_running(child)
        shutdown_sandbox()
        try:
            assert wait_until(lambda: not is_running(child), timeout=10)
        finally:
            _kill_quietly(path)


def _kill_quietly(path) -> None:
    with contextlib.suppress(OSError, ValueError):
        os.kill(int(path.read_text()), signal.SIGKILL)


def test_unpickling_is_opt_in_for_trusted_code(sandbox_settings):
    """result_format="pickle" rebuilds allow-listed types; the default never unpickles."""
    sandbox_settings(result_format="pickle")
    result = run_plugin_sandboxed(f"{RESULT}:pair", limits=LIMITS)
    assert result.ok, result.error
    assert result.value == {"pair": (1, 2)}


def test_decode_value_rejects_non_json():
    """The value decoder takes JSON text only."""
    with pytest.raises(ValueError):
        decode_value(pickle.dumps([1]))
    assert decode_value(json.dumps({"a": [1, 2.5, None, True, "é"]}).encode()) == {
        "a": [1, 2.5, None, True, "é"]
    }


def test_a_starting_portal_kills_what_dead_portals_plugins_left(tmp_path):
    """Processes marked by a portal that no longer runs are killed when a portal starts."""
    gone = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.2)"])
    token = process_token(gone.pid)
    gone.wait()
    leftover = subprocess.Popen(["sleep", "600"], env={"SANDBOX_OWNER": f"{token}.1"})
    try:
        portal = f"import sys; sys.path.insert(0, {REPO!r}); import sandbox.portal.spawn as m"
        portal += "; m.spawner()"
        subprocess.run([sys.executable, "-c", portal], check=True, timeout=30)
        assert leftover.wait(timeout=10) == -signal.SIGKILL
    finally:
        leftover.kill()
