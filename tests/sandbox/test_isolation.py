"""Optional isolation (off by default): no network, and an unprivileged user. When asked
for but unavailable, the result says so instead of pretending."""

import logging
import os
import pwd
import socket
import sys
import threading

import pytest

from sandbox import (
    Limits,
    Outcome,
    SandboxConfig,
    run_plugin_sandboxed,
)

NET = "tests.sandbox_targets.net"
IDENTITY = "tests.sandbox_targets.identity"
LIMITS = Limits(timeout_s=10)


@pytest.fixture
def loopback_server():
    """A TCP listener on 127.0.0.1 that accepts and closes connections."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                conn, _ = server.accept()
                conn.close()
            except OSError:
                continue

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join(2)
    server.close()


def test_network_is_reachable_by_default(loopback_server):
    """Without SANDBOX_NO_NETWORK a plugin can connect to a server on the loopback address."""
    result = run_plugin_sandboxed(f"{NET}:try_connect", loopback_server, limits=LIMITS)
    assert result.value == "connected"


def test_no_network_isolates_plugins(loopback_server, sandbox_settings):
    """With no_network on, a plugin cannot connect even to loopback, and no warning is given."""
    sandbox_settings(no_network=True)
    result = run_plugin_sandboxed(f"{NET}:try_connect", loopback_server, limits=LIMITS)
    assert result.ok, result.error
    assert result.value != "connected"
    assert not result.warnings


def test_no_network_from_the_environment(loopback_server, sandbox_settings, monkeypatch):
    """SANDBOX_NO_NETWORK=1 in the environment cuts plugins off the network."""
    monkeypatch.setenv("SANDBOX_NO_NETWORK", "1")
    sandbox_settings(**vars_of(SandboxConfig.from_env()))
    result = run_plugin_sandboxed(f"{NET}:try_connect", loopback_server, limits=LIMITS)
    assert result.value != "connected"


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping to another user needs root")
def test_run_as_drops_privileges(sandbox_settings, targets_readable_by_anyone):
    """The call runs as the SANDBOX_RUN_AS user, wherever the checkout lies."""
    nobody = pwd.getpwnam("nobody")
    sandbox_settings(run_as="nobody")
    identity = f"{targets_readable_by_anyone}.identity"
    result = run_plugin_sandboxed(f"{identity}:identity", limits=LIMITS)
    assert result.ok, result.error
    assert result.value == {"uid": nobody.pw_uid, "gid": nobody.pw_gid, "groups": []}
    # As nobody the plugin can no longer lift its own limits.
    limits = LIMITS.replace(address_space_mb=4096)  # an rlimit: memory_mb is the host's
    raised = run_plugin_sandboxed(f"{identity}:raise_own_memory_limit", limits=limits)
    assert raised.outcome is Outcome.ERROR
    assert raised.error_type in ("ValueError", "PermissionError")


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping to another user needs root")
def test_run_as_user_who_cannot_read_the_stdlib_is_warned_about(
    sandbox_settings, targets_readable_by_anyone
):
    """An interpreter the run_as user cannot read is warned about; its import fails cleanly."""
    stdlib = os.path.dirname(os.__file__)
    sandbox_settings(run_as="nobody")
    identity = f"{targets_readable_by_anyone}.identity"
    result = run_plugin_sandboxed(f"{identity}:import_unloaded_stdlib_module", limits=LIMITS)
    readable = not any(stdlib in w for w in result.warnings)
    if readable:
        assert result.value == "colorsys"
    else:  # e.g. a Python under /root (mode 700): reported, and the failure is clean
        assert any("cannot read" in w and "SANDBOX_RUN_AS" in w for w in result.warnings)
        assert result.outcome is Outcome.ERROR
        assert result.error_type in ("ModuleNotFoundError", "ImportError", "PermissionError")


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping to another user needs root")
def test_run_as_user_who_cannot_read_the_target_is_told_why(sandbox_settings, tmp_path):
    """A target in a directory the run_as user cannot read fails naming that directory."""
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    (private / "secret_plugin_probe.py").write_text("def run():\n    return 1\n")
    sys.path.insert(0, str(private))
    try:
        sandbox_settings(run_as="nobody")
        result = run_plugin_sandboxed("secret_plugin_probe:run", limits=LIMITS)
    finally:
        sys.path.remove(str(private))
    assert result.outcome is Outcome.ERROR
    assert "SANDBOX_RUN_AS=nobody cannot read" in result.error
    assert str(private) in result.error


def test_unavailable_isolation_is_reported_not_pretended(sandbox_settings, caplog):
    """An unknown SANDBOX_RUN_AS user is logged and warned about in the result; the call runs."""
    sandbox_settings(run_as="no-such-user-for-the-sandbox")
    with caplog.at_level(logging.WARNING, logger="sandbox"):
        result = run_plugin_sandboxed(f"{IDENTITY}:identity", limits=LIMITS)
    assert result.ok, result.error
    assert any("no-such-user-for-the-sandbox" in w for w in result.warnings)
    assert "no-such-user-for-the-sandbox" in caplog.text


def vars_of(config: SandboxConfig) -> dict:
    return {name: getattr(config, name) for name in config.__dataclass_fields__}
