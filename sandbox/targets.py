"""Naming plugin callables: "module.path:attribute" strings, and the Preload value."""

from __future__ import annotations

import dataclasses
import re

__all__ = ["Preload", "Resident", "check_target_string", "describe_target"]

_TARGET_RE = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


@dataclasses.dataclass(frozen=True, slots=True)
class Resident:
    """Resident mode: a Preload's calls run inside long-lived processes that ran its warm-up
    once, instead of a fresh fork per call (docs/sandbox.md, *Resident mode*).

    ``concurrency`` processes, each running one call at a time; each is replaced after
    ``max_calls`` calls, or after a call that leaves its resident memory above
    ``max_memory_mb`` (None: never for memory). A process that crashes, hangs past the call's
    timeout or passes its ``memory_mb`` is killed, its call ends with that outcome, and the
    next call starts a new one after ``backoff_s`` (doubled for each crash in a row); after
    more than ``max_restarts`` crashes within ``restart_window_s``, calls are refused (outcome
    ``crashed``, limit ``max_restarts``) until the oldest leaves the window or the Preload is
    discarded.
    """

    concurrency: int = 1
    max_calls: int = 1000
    max_memory_mb: int | None = None
    max_restarts: int = 5
    restart_window_s: float = 600.0
    backoff_s: float = 1.0

    def __post_init__(self) -> None:
        for name in ("concurrency", "max_calls", "max_memory_mb", "max_restarts"):
            value = getattr(self, name)
            if value is None and name == "max_memory_mb":
                continue
            low = 0 if name == "max_restarts" else 1
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"Resident {name} must be a whole number >= {low}, not {value!r}")
        for name in ("restart_window_s", "backoff_s"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or isinstance(value, bool) or not value > 0:
                raise ValueError(f"Resident {name} must be a number of seconds > 0, not {value!r}")

    def backoff_after(self, crashes_in_a_row: int) -> float:
        """The wait before starting a process after this many crashes in a row: 1, 2, 4 ...
        times backoff_s, at most MAX_BACKOFF_S."""
        if crashes_in_a_row <= 0:
            return 0.0
        return min(self.backoff_s * 2 ** min(crashes_in_a_row - 1, 30), MAX_BACKOFF_S)


MAX_BACKOFF_S = 60.0  # the longest wait before restarting a crashing resident process


@dataclasses.dataclass(frozen=True, slots=True)
class Preload:
    """A warm-up run once in a dedicated host; calls with this preload fork from it.

    ``target`` is a "module.path:attribute" string, called as ``target(*args)`` once when
    the warm host starts (import the heavy library there, cache state in module globals).
    ``args`` must be hashable and picklable: the Preload value is the key of its host.
    ``env`` names environment variables this host's warm-up and calls need beyond what
    every plugin gets (a plugin's ``requires.env``): passed from the portal's environment
    when the host starts, except names that look like secrets (unless ``SANDBOX_ENV_ALLOW``
    names them) and names ``SANDBOX_ENV_DENY`` lists. Exact names, in any order.
    ``python`` is the interpreter this host runs with (an absolute path: a plugin's own
    venv, say); ``None`` runs it with ``SandboxConfig.python``. That interpreter's own
    ``sys.path`` is kept (not the portal's), with the sandbox's code added: check it first
    with ``sandbox.interpreters.probe_interpreter``. ``resident`` (a ``Resident``) runs its
    calls in long-lived processes instead of forking one per call; None: fork per call.
    """

    target: str
    args: tuple = ()
    env: tuple[str, ...] = ()
    python: str | None = None
    resident: Resident | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.target, str):
            raise TypeError(
                f"Preload target must be a 'module.path:attribute' string, "
                f"got {type(self.target).__name__}"
            )
        check_target_string(self.target)
        object.__setattr__(self, "args", tuple(self.args))
        try:
            hash(self.args)
        except TypeError as exc:
            raise TypeError(f"Preload args must be hashable (tuples, not lists): {exc}") from None
        object.__setattr__(self, "env", _env_names(self.env))
        if self.python is not None and (
            not isinstance(self.python, str) or not self.python.startswith("/")
        ):
            raise ValueError(
                f"Preload python must be an absolute interpreter path, got {self.python!r}"
            )
        if self.resident is not None and not isinstance(self.resident, Resident):
            raise TypeError(
                f"Preload resident must be a sandbox.Resident or None, got {self.resident!r}"
            )


def _env_names(env: object) -> tuple[str, ...]:
    """Sorted and unique, so the same names make the same host key."""
    if isinstance(env, str) or not isinstance(env, list | tuple | set | frozenset):
        raise TypeError(f"Preload env must be a list of variable names, got {env!r}")
    for name in env:
        if not isinstance(name, str) or not name or "=" in name or "\0" in name:
            raise ValueError(
                f"Preload env must hold environment variable names (not empty, no '=' or "
                f"NUL), got {name!r}"
            )
    return tuple(sorted(set(env)))


def check_target_string(target: str) -> None:
    """Raise ValueError unless ``target`` looks like "module.path:attribute" (not imported)."""
    if not _TARGET_RE.match(target):
        raise ValueError(
            f"Plugin target {target!r} must look like 'module.path:attribute' "
            "(attribute may be dotted, e.g. 'pkg.mod:Class.method')"
        )


def describe_target(target: object) -> str:
    """A short "module:qualname" name for messages; never imports anything."""
    if isinstance(target, str):
        return target
    func = getattr(target, "__func__", target)  # bound methods: name the function
    module = getattr(func, "__module__", None) or "?"
    qualname = getattr(func, "__qualname__", None) or type(target).__qualname__
    return f"{module}:{qualname}"
