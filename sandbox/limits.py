"""Per-call resource limits: the one place their defaults are defined and documented."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

__all__ = ["MAXIMA", "Limits"]


@dataclasses.dataclass(frozen=True, slots=True)
class Limits:
    """Resource limits for one sandboxed plugin call.

    Every field has its default here and nowhere else.

    timeout_s:    wall-clock seconds before the call's whole process group is SIGKILLed.
    cpu_s:        CPU seconds (RLIMIT_CPU, rounded up to whole seconds); the kernel sends
                  SIGXCPU, reported as outcome ``timeout`` with a reason naming CPU seconds.
    memory_mb:    resident memory (RSS) in MiB of the call's whole process tree, which the
                  host samples from /proc while the call runs; past it the call's process
                  group is SIGKILLed (outcome ``memory``, with the peak).
    address_space_mb: address space in MiB (RLIMIT_AS), off by default: libraries such as
                  CUDA reserve far more address space than they use; a MemoryError under it
                  is outcome ``memory``.
    output_bytes: how much of the *tail* of stdout and of stderr is kept, each; the rest is
                  read and discarded, never buffered whole.
    result_bytes: largest pickled return value accepted; bigger is ``output_limit``.
    open_files:   file descriptors (RLIMIT_NOFILE).
    file_size_mb: largest file the plugin may write, in MiB (RLIMIT_FSIZE).
    disk_mb:      disk budget in MiB: the allocated size of everything in the call's working
                  directory, which the host measures while the call runs and when it ends;
                  past it the call's process group is SIGKILLed (outcome ``disk_limit``).

    ``cpu_s``, ``address_space_mb``, ``open_files`` and ``file_size_mb`` may be ``None`` to
    leave that rlimit as the sandbox host has it (usually unlimited); ``memory_mb`` and
    ``disk_mb`` may be ``None`` for no budget.

    Each limit has a maximum (``MAXIMA``); a larger value raises ``ValueError``, since
    e.g. ``timeout_s=1e300`` would overflow the timers that enforce it.
    """

    timeout_s: float = 30.0
    cpu_s: float | None = 60.0
    memory_mb: int | None = 1024
    output_bytes: int = 64 * 1024
    result_bytes: int = 16 * 1024 * 1024
    open_files: int | None = 256
    file_size_mb: int | None = 256
    disk_mb: int | None = 1024
    address_space_mb: int | None = None

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            _check_value(field.name, getattr(self, field.name))

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any], base: Limits | None = None) -> Limits:
        """Build limits from a plugin's declaration, e.g. ``{"timeout_s": 5, "memory_mb": 512}``.

        Keys not given keep the value from ``base`` (or the defaults). Raises ``ValueError``
        naming the first unknown key or bad value.
        """
        if not isinstance(mapping, Mapping):
            raise TypeError(f"sandbox limits must be a mapping, got {type(mapping).__name__}")
        base = base if base is not None else cls()
        return base.replace(**dict(mapping))

    def replace(self, **overrides: Any) -> Limits:
        """A copy with some limits changed; unknown names raise ``ValueError``."""
        for name in overrides:
            if name not in _FIELD_NAMES:
                known = ", ".join(sorted(_FIELD_NAMES))
                raise ValueError(f"Unknown sandbox limit {name!r} (known limits: {known})")
        return dataclasses.replace(self, **overrides)

    def as_dict(self) -> dict[str, float | int | None]:
        return {name: getattr(self, name) for name in _FIELD_NAMES}


# Limits that map onto an rlimit may be None ("leave as is"), and the disk budget ("none");
# the others always apply.
_NULLABLE = frozenset(
    {"cpu_s", "memory_mb", "open_files", "file_size_mb", "disk_mb", "address_space_mb"}
)
_FIELD_NAMES = tuple(f.name for f in dataclasses.fields(Limits))
_WEEK_S = 7 * 24 * 3600
_MiB_PER_TiB = 1024 * 1024
# Largest accepted value per limit: beyond these, timers overflow or memory cannot hold it.
MAXIMA: dict[str, int] = {
    "timeout_s": _WEEK_S,
    "cpu_s": _WEEK_S,
    "memory_mb": _MiB_PER_TiB,
    "output_bytes": 64 * 1024 * 1024,  # each tail is held whole in the host and the result
    "result_bytes": 1024 * 1024 * 1024,  # the pickled value is held whole in the portal
    "open_files": 1024 * 1024,  # Linux's default fs.nr_open
    "file_size_mb": _MiB_PER_TiB,
    "disk_mb": _MiB_PER_TiB,
    "address_space_mb": _MiB_PER_TiB,
}


def _check_value(name: str, value: object) -> None:
    if value is None and name in _NULLABLE:
        return
    # bool is an int subclass; `True` seconds is always a mistake in a declaration.
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        allowed = "a positive number" + (" or None" if name in _NULLABLE else "")
        raise ValueError(f"Sandbox limit {name!r} must be {allowed}, got {value!r}")
    if value > MAXIMA[name]:
        unlimited = ", or None to leave it unlimited" if name in _NULLABLE else ""
        raise ValueError(
            f"Sandbox limit {name!r} is {value!r}, above its maximum: it must be at most "
            f"{MAXIMA[name]} (declare a smaller value{unlimited})"
        )
