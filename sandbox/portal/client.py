"""The sandbox's public functions, and the one host pool of this process.

A forked portal (gunicorn pre-fork) forgets its parent's pool and starts its own; the pool
is shut down at exit.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import pickle
import threading
import time
from collections.abc import Mapping
from typing import Any

from sandbox.cancel import CancelToken
from sandbox.config import SandboxConfig
from sandbox.limits import Limits
from sandbox.portal.outcome import elapsed_ms, failure_result
from sandbox.portal.pool import HostPool
from sandbox.result import Outcome, SandboxResult
from sandbox.targets import Preload, check_target_string, describe_target

__all__ = [
    "configure_sandbox",
    "discard_preload",
    "run_plugin_sandboxed",
    "sandbox_config",
    "sandbox_status",
    "shutdown_sandbox",
]

log = logging.getLogger("sandbox")


def run_plugin_sandboxed(
    target: Any,
    /,
    *args: Any,
    limits: Limits | Mapping[str, Any] | None = None,
    preload: Preload | None = None,
    cancel: CancelToken | None = None,
    **kwargs: Any,
) -> SandboxResult:
    """Run ``target(*args, **kwargs)`` in a fresh, limited process and report how it went.

    ``target`` is a "module.path:attribute" string (imported only in the child) or a
    callable picklable by reference. ``limits``, ``preload`` and ``cancel`` (a CancelToken
    another thread may cancel) are reserved keyword names; every other keyword goes to the
    target. Never raises for anything the plugin does; raises TypeError/ValueError at once
    for mistakes in the call itself.
    """
    started = time.perf_counter()
    limits = _coerce_limits(limits)
    if preload is not None and not isinstance(preload, Preload):
        raise TypeError(f"preload must be a sandbox.Preload or None, got {type(preload).__name__}")
    if cancel is not None and not isinstance(cancel, CancelToken):
        raise TypeError(
            f"cancel must be a sandbox.CancelToken or None, got {type(cancel).__name__}"
        )
    name = describe_target(target)
    payload = _encode_call(name, target, args, kwargs)
    try:
        return _current().call(name, payload, limits, preload, started, cancel)
    except Exception as exc:  # the contract: never raise for a call's fate
        log.exception("sandbox: internal error running %s", name)
        return failure_result(
            name,
            Outcome.SANDBOX_FAILURE,
            type(exc).__name__,
            f"The sandbox failed internally while running plugin call {name!r}: {exc} "
            "(a sandbox bug; the portal log has the traceback)",
            elapsed_ms(started),
        )


def configure_sandbox(config: SandboxConfig | None = None, /, **changes: Any) -> SandboxConfig:
    """Replace the sandbox settings (whole, or some fields) and restart hosts to apply them.

    Returns the previous settings, so callers (tests) can restore them.
    """
    global _CONFIG
    with _CONFIG_LOCK:
        previous = _config()
        new = config if config is not None else previous
        if not isinstance(new, SandboxConfig):
            raise TypeError(f"expected a SandboxConfig, got {type(new).__name__}")
        _CONFIG = new.replace(**changes) if changes else new
    shutdown_sandbox()
    return previous


def sandbox_config() -> SandboxConfig:
    """The settings in force (from the environment unless ``configure_sandbox`` was used)."""
    with _CONFIG_LOCK:
        return _config()


def discard_preload(preload: Preload) -> bool:
    """Drop the warm host of ``preload`` so the next call re-imports fresh plugin code.

    Calls already running in it finish normally. Returns whether there was one.
    """
    if not isinstance(preload, Preload):
        raise TypeError(f"expected a sandbox.Preload, got {type(preload).__name__}")
    return _current().discard(preload)


def shutdown_sandbox() -> None:
    """Stop every host now (running calls end as sandbox_failure). Calls after this start
    new hosts. Registered with atexit."""
    sandbox = _SANDBOX
    if sandbox is not None and sandbox.pid == os.getpid():
        sandbox.shutdown()


def sandbox_status() -> list[dict[str, Any]]:
    """One entry per host: preload, pid, alive, calls in flight, warnings (for health pages)."""
    return _current().status()


# --- call preparation ------------------------------------------------------------------


def _coerce_limits(limits: Any) -> Limits:
    if limits is None:
        return Limits()
    if isinstance(limits, Limits):
        return limits
    if isinstance(limits, Mapping):
        return Limits.from_mapping(limits)
    raise TypeError(
        f"limits must be a sandbox.Limits, a mapping or None, got {type(limits).__name__}"
    )


def _encode_call(name: str, target: Any, args: tuple, kwargs: dict) -> bytes:
    if isinstance(target, str):
        check_target_string(target)
    elif not callable(target):
        raise TypeError(
            f"target must be a callable or a 'module.path:attribute' string, "
            f"got {type(target).__name__}"
        )
    try:
        return pickle.dumps((target, args, kwargs), protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:  # find out which part is at fault
        problem = exc
    try:
        pickle.dumps(target, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:
        raise TypeError(
            f"Plugin target {name!r} cannot be named by reference ({exc}); pass a "
            "module-level function, a bound method of a picklable instance, or a "
            "'module.path:attribute' string"
        ) from None
    raise TypeError(
        f"An argument for plugin call {name!r} cannot be pickled ({problem}); pass plain data"
    ) from None


_CONFIG: SandboxConfig | None = None
_CONFIG_LOCK = threading.Lock()
_SANDBOX: HostPool | None = None
_SANDBOX_LOCK = threading.Lock()
_ABANDONED: list[HostPool] = []  # inherited from a parent process; kept, never touched


def _config() -> SandboxConfig:
    global _CONFIG
    if _CONFIG is None:
        _CONFIG = SandboxConfig.from_env()
    return _CONFIG


def _current() -> HostPool:
    global _SANDBOX
    sandbox = _SANDBOX
    if sandbox is not None and sandbox.pid == os.getpid() and sandbox.config is _CONFIG:
        return sandbox
    if sandbox is not None and sandbox.pid != os.getpid():
        _after_fork_in_child()  # forked by something that bypassed os.register_at_fork
    with _SANDBOX_LOCK:
        with _CONFIG_LOCK:
            config = _config()
        if _SANDBOX is None or _SANDBOX.config is not config:
            old, _SANDBOX = _SANDBOX, HostPool(config)
            if old is not None:
                old.shutdown()
        return _SANDBOX


def _after_fork_in_child() -> None:
    """A forked portal (gunicorn pre-fork) must not share its parent's host connections."""
    global _SANDBOX, _SANDBOX_LOCK, _CONFIG_LOCK
    _SANDBOX_LOCK = threading.Lock()  # the parent's may have been held by another thread
    _CONFIG_LOCK = threading.Lock()
    if _SANDBOX is not None and _SANDBOX.pid != os.getpid():
        _SANDBOX.abandon()
        _ABANDONED.append(_SANDBOX)
        _SANDBOX = None


def _shutdown_at_exit() -> None:
    with contextlib.suppress(Exception):  # interpreter teardown; nothing useful to do
        shutdown_sandbox()


os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_shutdown_at_exit)
