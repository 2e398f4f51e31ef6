"""How a plugin's calls run (`mode`) and the knobs of resident mode (`resident`), checked the
same way on both sides: by the plugin-side loader (a bad declaration fails the load) and by the
portal (the load report it reads).

    mode = "resident"            # default "fork": a fresh process per call
    resident = {"concurrency": 1, "max_calls": 1000, "max_memory_mb": None,
                "max_restarts": 5, "restart_window_s": 600, "backoff_s": 1.0}

Standard library only and import-light, like the rest of plugin_contract.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypedDict

MODES = ("fork", "resident")


class ResidentPolicy(TypedDict):
    """A resident plugin's processes: how many, how long each lives, how crashes back off."""

    concurrency: int  # processes, each running one call at a time
    max_calls: int  # calls a process serves before it is replaced (Celery's max_tasks_per_child)
    max_memory_mb: int | None  # resident memory after a call past which it is replaced
    max_restarts: int  # restarts after a crash allowed within restart_window_s; more: FAILED
    restart_window_s: float
    backoff_s: float  # wait before the first restart after a crash; doubled for each next one


RESIDENT_DEFAULTS: ResidentPolicy = {
    "concurrency": 1,
    "max_calls": 1000,
    "max_memory_mb": None,
    "max_restarts": 5,
    "restart_window_s": 600.0,
    "backoff_s": 1.0,
}
RESIDENT_KEYS = tuple(RESIDENT_DEFAULTS)
_WHOLE = {  # key: (lowest, highest)
    "concurrency": (1, 64),
    "max_calls": (1, 10**9),
    "max_memory_mb": (1, 1 << 20),
    "max_restarts": (0, 1000),
}
_SECONDS = {"restart_window_s": (1.0, 7 * 24 * 3600.0), "backoff_s": (0.01, 3600.0)}


def mode_problem(mode: Any, resident: Any) -> str | None:
    """What is wrong with a declared `mode` and `resident`, in words that say how to fix it."""
    if mode not in MODES:
        return f"mode must be 'fork' (the default) or 'resident', not {mode!r:.100}"
    if resident is None:
        return None
    if mode != "resident":
        return "resident is declared but mode is 'fork': add mode = 'resident' or remove it"
    return resident_problem(resident)


def resident_problem(resident: Any) -> str | None:
    """What is wrong with a `resident` mapping of knobs; None if fine."""
    if not isinstance(resident, Mapping):
        return (
            f"resident must be a dict such as {{'max_calls': 500}}, not {type(resident).__name__}"
        )
    unknown = sorted(str(key) for key in resident if key not in RESIDENT_KEYS)
    if unknown:
        return (
            f"resident has unknown key(s) {', '.join(unknown)} (known: {', '.join(RESIDENT_KEYS)})"
        )
    for key, (low, high) in _WHOLE.items():
        value = resident.get(key, RESIDENT_DEFAULTS[key])  # type: ignore[literal-required]
        if value is None and key == "max_memory_mb":
            continue
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            return f"resident['{key}'] must be a whole number from {low} to {high}, not {value!r}"
    for key, (lowest, highest) in _SECONDS.items():
        value = resident.get(key, RESIDENT_DEFAULTS[key])  # type: ignore[literal-required]
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if not number or not lowest <= value <= highest:
            return (
                f"resident['{key}'] must be a number of seconds from {lowest:g} to {highest:g}, "
                f"not {value!r}"
            )
    return None


def normalised_resident(resident: Mapping[str, Any]) -> ResidentPolicy:
    """A checked `resident` with every key filled in (call resident_problem first)."""
    merged = {**RESIDENT_DEFAULTS, **resident}
    return {
        "concurrency": int(merged["concurrency"]),
        "max_calls": int(merged["max_calls"]),
        "max_memory_mb": None if merged["max_memory_mb"] is None else int(merged["max_memory_mb"]),
        "max_restarts": int(merged["max_restarts"]),
        "restart_window_s": float(merged["restart_window_s"]),
        "backoff_s": float(merged["backoff_s"]),
    }


__all__ = [
    "MODES",
    "RESIDENT_DEFAULTS",
    "RESIDENT_KEYS",
    "ResidentPolicy",
    "mode_problem",
    "normalised_resident",
    "resident_problem",
]
