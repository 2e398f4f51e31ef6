"""The boundary for what plugins produce: every value from a plugin is checked and made
storable here before the registry writes it. Pure functions, no Django.

A plugin controls its output, its exception names and messages, its docstring and, by
tampering with the loader in its own process, the load report itself. Databases refuse NUL
characters (PostgreSQL) and every driver refuses lone surrogates; terminals obey control
characters. So each function returns the cleaned value and what it changed, in words:

    line(value, limit=...)            one line for a terminal (reasons, error types)
    block(value, limit=..., keep=...) text with lines (tracebacks, output tails, docstrings)
    data(value)                       JSON data (results, declarations), at any depth
    integer(value, low=..., high=...) / number(...)   a measurement or None
    load_report(value, ...)           the plugin host's load report, or MalformedReport

NULs, lone surrogates and control characters become U+FFFD (newlines and tabs stay in a
block); text over its limit is cut, with an ellipsis, keeping the start (or the end).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, Literal, NamedTuple, TypeVar, cast

# The loader's report vocabulary: the contract the plugin side writes (plugin_contract).
from plugin_contract import (
    LOAD_STAGES,
    LOAD_STATUSES,
    MISSING_KINDS,
    QUEUE_PATTERN,
    REPORT_KEYS,
    LoadReport,
)
from plugin_contract.policies import normalised_retry, quarantine_after_problem, retry_problem
from plugin_contract.resident import normalised_resident, resident_problem

T = TypeVar("T")

REPLACEMENT = "\ufffd"
ELLIPSIS = "…"
MAX_DEPTH = 500  # of JSON data: deeper structures overflow encoders and database parsers


_SURROGATE = re.compile(r"[\ud800-\udfff]")
_UNSTORABLE = re.compile(r"[\x00\ud800-\udfff]")
# C0 and C1 controls, DEL, line separators and the bidirectional overrides that reorder
# what a terminal shows (the "Trojan Source" characters).
_SUSPECT = re.compile(
    r"[\x00-\x1f\x7f-\x9f\ud800-\udfff\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]"
)
# The same without newline and tab, which a block keeps: most tracebacks need no rewriting.
_SUSPECT_IN_BLOCK = re.compile(
    r"[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]"
)
_LINE_SPACES = frozenset("\t\n\r\x0b\x0c\x1c\x1d\x1e\x1f\x85\u2028\u2029")


class Cleaned(NamedTuple, Generic[T]):
    """A value fit to store, and what was changed to make it so (empty when nothing)."""

    value: T
    changes: tuple[str, ...] = ()


class MalformedReport(ValueError):
    """A load report that is not what the plugin host writes; the message says what is wrong."""


# --- Text ----------------------------------------------------------------------------------


def line(value: object, *, limit: int | None = None) -> Cleaned[str]:
    """One line fit for a terminal: line breaks and tabs become spaces, other controls U+FFFD."""
    text, changes = _as_text(value)
    if _SUSPECT.search(text):
        text, replaced = _replace(text, multiline=False)
        changes += replaced
    return _cut(text, limit, "start", changes)


def block(
    value: object, *, limit: int | None = None, keep: Literal["start", "end"] = "start"
) -> Cleaned[str]:
    """Text with lines: newlines and tabs stay (CR and CRLF become newlines), other controls
    become U+FFFD; over `limit`, the start (or the end) is kept."""
    text, changes = _as_text(value)
    if _SUSPECT_IN_BLOCK.search(text):
        text, replaced = _replace(text, multiline=True)
        changes += replaced
    return _cut(text, limit, keep, changes)


def _as_text(value: object) -> tuple[str, tuple[str, ...]]:
    if value is None:
        return "", ()
    if isinstance(value, str):
        return value, ()
    return repr(value), (f"{_kind(value)}, not text, stored as its repr",)


def _replace(text: str, *, multiline: bool) -> tuple[str, tuple[str, ...]]:
    if _SURROGATE.search(text):
        # Surrogate pairs become the character they encode; only lone ones remain.
        text = text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "surrogatepass")
    if multiline:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    counts = {"nul": 0, "surrogate": 0, "control": 0}

    def replacement(match: re.Match[str]) -> str:
        char = match.group()
        if multiline and char in "\n\t":
            return char
        if multiline and char in "\u2028\u2029":
            return "\n"
        if not multiline and char in _LINE_SPACES:
            return " "
        kind = "nul" if char == "\x00" else "surrogate" if _SURROGATE.match(char) else "control"
        counts[kind] += 1
        return REPLACEMENT

    text = _SUSPECT.sub(replacement, text)
    return text, _replaced_words(counts)


def _replaced_words(counts: dict[str, int]) -> tuple[str, ...]:
    words = {
        "nul": ("NUL character", "NUL characters"),
        "surrogate": ("lone surrogate", "lone surrogates"),
        "control": ("control character", "control characters"),
    }
    parts = [f"{count} {words[kind][count != 1]}" for kind, count in counts.items() if count]
    if not parts:
        return ()
    listed = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    return (f"{listed} replaced with U+FFFD",)


def _cut(
    text: str, limit: int | None, keep: Literal["start", "end"], changes: tuple[str, ...]
) -> Cleaned[str]:
    if limit is None or len(text) <= limit:
        return Cleaned(text, changes)
    cut = text[: limit - 1] + ELLIPSIS if keep == "start" else ELLIPSIS + text[-(limit - 1) :]
    return Cleaned(cut, (*changes, f"cut from {len(text)} to {limit} characters"))


# --- Data ----------------------------------------------------------------------------------


def has_unstorable(json_text: str) -> bool:
    """Whether text from json.dumps() (ASCII, the default) may hold a NUL or a lone surrogate:
    a check at C speed, so that only such data pays for data()'s walk.

    Surrogate escapes of characters outside the BMP (emoji) also answer True; data() keeps them.
    """
    return "\\u0000" in json_text or "\\ud" in json_text


def data(value: Any) -> Cleaned[Any]:
    """JSON data with NULs and lone surrogates in strings and keys replaced, at any depth.

    Other values are left for the JSON encoder to accept or refuse; ValueError when the data
    nests deeper than MAX_DEPTH.
    """
    counts = {"nul": 0, "surrogate": 0, "control": 0}
    cleaned = _data(value, counts, 0)
    return Cleaned(cleaned, _replaced_words(counts))


def _data(value: Any, counts: dict[str, int], depth: int) -> Any:
    if isinstance(value, str):
        return _storable(value, counts)
    if not isinstance(value, dict | list | tuple):
        return value
    if depth >= MAX_DEPTH:
        raise ValueError(f"it nests deeper than {MAX_DEPTH} levels")
    # Loops, not comprehensions: one stack frame per level, so MAX_DEPTH levels fit.
    if isinstance(value, dict):
        cleaned: dict[Any, Any] = {}
        for key, item in value.items():
            cleaned[_storable(key, counts) if isinstance(key, str) else key] = _data(
                item, counts, depth + 1
            )
        return cleaned
    items = []
    for item in value:
        items.append(_data(item, counts, depth + 1))
    return items


def _storable(text: str, counts: dict[str, int]) -> str:
    if not _UNSTORABLE.search(text):
        return text
    if _SURROGATE.search(text):
        text = text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "surrogatepass")
    counts["nul"] += text.count("\x00")
    lone = len(_SURROGATE.findall(text))
    counts["surrogate"] += lone
    return _UNSTORABLE.sub(REPLACEMENT, text)


# --- Numbers -------------------------------------------------------------------------------


def integer(value: object, *, low: int, high: int) -> Cleaned[int | None]:
    """An integer between low and high; anything else becomes None, saying why."""
    if value is None:
        return Cleaned(None)
    if isinstance(value, bool) or not isinstance(value, int):
        return Cleaned(None, (f"{_kind(value)}, not an integer, left empty",))
    if not low <= value <= high:
        return Cleaned(None, (f"{_preview(value)} is outside {low} to {high}, left empty",))
    return Cleaned(value)


def number(value: object, *, low: float, high: float) -> Cleaned[float | None]:
    """A finite number between low and high, as a float; anything else becomes None."""
    if value is None:
        return Cleaned(None)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return Cleaned(None, (f"{_kind(value)}, not a number, left empty",))
    try:
        as_float = float(value)
    except OverflowError:
        as_float = math.inf
    if not math.isfinite(as_float) or not low <= as_float <= high:
        return Cleaned(None, (f"{_preview(value)} is outside {low:g} to {high:g}, left empty",))
    return Cleaned(as_float)


# --- Load reports --------------------------------------------------------------------------


@dataclass(frozen=True)
class MissingItem:
    """One thing the environment lacks, as the plugin host reported it."""

    kind: str
    item: str
    path: str = ""
    problem: str = ""
    checked: str = ""


@dataclass(frozen=True)
class LoaderReport:
    """A load report checked and cleaned: what `plugin_contract.loader.load_plugin` returns."""

    status: str
    stage: str
    name: str  # empty when the host did not learn the declared name
    version: str
    description: str
    requires: dict[str, Any]
    limits: dict[str, Any]
    missing: tuple[MissingItem, ...]
    error_type: str
    message: str
    where: str
    traceback: str = ""  # of a failed import or setup(), kept from its end (where it raised)
    changes: tuple[str, ...] = ()
    params_schema: dict[str, Any] | None = None  # as declared; validated by the portal
    run_params: dict[str, Any] | None = None  # run()'s signature, as plugin_contract.RunParams
    queue: str = ""  # the worker queue it declared; empty for the default
    retry: dict[str, Any] | None = None  # plugin_contract.policies.RetryPolicy, or none declared
    quarantine_after: int | None = None  # None: none declared (the portal's default applies)
    schedule: dict[str, Any] | None = None  # as declared; the portal checks its cron and policies
    resident: dict[str, Any] | None = None  # resident mode's knobs (ResidentPolicy); None: fork


def load_report(
    value: object, *, is_name: Callable[[str], bool], max_chars: Mapping[str, int]
) -> LoaderReport:
    """The plugin host's load report, checked and cleaned; MalformedReport when it is not one.

    `max_chars` caps text fields by report key (the registry's column sizes).
    """
    if not isinstance(value, dict):
        raise MalformedReport(f"it is {_kind(value)}, not a dict")
    absent = sorted(REPORT_KEYS - value.keys())
    if absent:
        raise MalformedReport(
            f"key '{absent[0]}' is missing"
            if len(absent) == 1
            else f"keys {', '.join(absent)} are missing"
        )
    # Read through the type the loader writes, so mypy checks every key below against it;
    # the values are the plugin host's, checked one by one.
    report = cast(LoadReport, value)
    status = _choice("status", report["status"], LOAD_STATUSES)
    stage = _choice("stage", report["stage"], LOAD_STAGES)
    if status == "ok" and stage in ("import", "declarations"):
        raise MalformedReport(f"'stage' is '{stage}' for a plugin that loaded")
    name = report["name"]
    if name is not None and not isinstance(name, str):
        raise MalformedReport(f"'name' is {_kind(name)}, not text")
    if name and not is_name(name):
        raise MalformedReport(f"'name' is {_preview(name)}, not a plugin name")
    changes: list[str] = []

    def text(key: str, raw: object, *, lines: bool = False, optional: bool = False) -> str:
        if not isinstance(raw, str) and not (optional and raw is None):
            raise MalformedReport(f"'{key}' is {_kind(raw)}, not text")
        clean = block if lines else line
        cleaned, changed = clean(raw, limit=max_chars.get(key))
        changes.extend(f"{key}: {change}" for change in changed)
        return cleaned

    version = text("version", report["version"])
    description = text("description", report["description"], lines=True)
    error_type = text("error_type", report["error_type"], optional=True)
    message = text("message", report["message"], optional=True)
    where = text("where", report["where"], optional=True)
    # Not among REPORT_KEYS: a report without one (an older loader's) is still a report.
    raw_traceback = report.get("traceback")
    if not isinstance(raw_traceback, str | None):
        raise MalformedReport(f"'traceback' is {_kind(raw_traceback)}, not text")
    traceback, changed = block(raw_traceback, limit=max_chars.get("traceback"), keep="end")
    changes.extend(f"traceback: {change}" for change in changed)
    requires = _declared("requires", report["requires"], changes)
    limits = _declared("limits", report["limits"], changes)
    schema = report.get("params_schema")
    params_schema = None if schema is None else _declared("params_schema", schema, changes)
    declared_schedule = report.get("schedule")
    schedule = (
        None if declared_schedule is None else _declared("schedule", declared_schedule, changes)
    )
    return LoaderReport(
        status=status,
        stage=stage,
        name=name or "",
        version=version,
        description=description,
        requires=requires,
        limits=limits,
        missing=_missing(report["missing"], status),
        error_type=error_type,
        message=message,
        where=where,
        traceback=traceback,
        changes=tuple(changes),
        params_schema=params_schema,
        run_params=_run_params(report.get("run_params")),
        queue=_queue(report.get("queue")),
        retry=_retry(report.get("retry")),
        quarantine_after=_quarantine_after(report.get("quarantine_after")),
        schedule=schedule,
        resident=_resident(report.get("resident")),
    )


def _resident(value: object) -> dict[str, Any] | None:
    """Resident mode's knobs, checked as the plugin side checked them, with every key."""
    return _declared_knobs(
        value, "'resident' is not resident mode's knobs", resident_problem, normalised_resident
    )


def _queue(value: object) -> str:
    """The declared worker queue: a queue name, or '' when none was declared."""
    if value is None:
        return ""
    if not isinstance(value, str) or not QUEUE_PATTERN.fullmatch(value):
        raise MalformedReport(f"'queue' is {_preview(value)}, not a queue name")
    return value


def _retry(value: object) -> dict[str, Any] | None:
    """The declared retry policy, checked as the plugin side checked it, with every key."""
    return _declared_knobs(value, "'retry' is not a retry policy", retry_problem, normalised_retry)


def _declared_knobs(
    value: object,
    refusal: str,
    problem_of: Callable[[object], str | None],
    normalised: Callable[[Mapping[str, Any]], Mapping[str, object]],
) -> dict[str, Any] | None:
    """A declared dict of knobs with the plugin contract's own check and defaults, or None."""
    if value is None:
        return None
    problem = problem_of(value)
    if problem:
        raise MalformedReport(f"{refusal}: {problem}")
    return dict(normalised(cast(Mapping[str, Any], value)))


def _quarantine_after(value: object) -> int | None:
    if value is None:
        return None
    if quarantine_after_problem(value):
        raise MalformedReport("'quarantine_after' is not a whole number of failures from 0")
    return cast(int, value)


def _run_params(value: object) -> dict[str, Any] | None:
    """run()'s signature as the loader read it: lists of identifiers and a flag, or None."""
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) != {"accepted", "required", "var_keyword"}:
        raise MalformedReport("'run_params' is not {accepted, required, var_keyword}")
    names = [value["accepted"], value["required"]]
    for listed in names:
        if not isinstance(listed, list) or not all(
            isinstance(name, str) and name.isidentifier() for name in listed
        ):
            raise MalformedReport("'run_params' lists something that is not a parameter name")
    if not isinstance(value["var_keyword"], bool):
        raise MalformedReport("'run_params' has a 'var_keyword' that is not true or false")
    return {
        "accepted": list(value["accepted"]),
        "required": list(value["required"]),
        "var_keyword": value["var_keyword"],
    }


def _choice(key: str, chosen: object, allowed: tuple[str, ...]) -> str:
    if not isinstance(chosen, str) or chosen not in allowed:
        raise MalformedReport(f"'{key}' is {_preview(chosen)}, not one of {', '.join(allowed)}")
    return chosen


def _declared(key: str, declared: object, changes: list[str]) -> dict[str, Any]:
    if not isinstance(declared, dict):
        raise MalformedReport(f"'{key}' is {_kind(declared)}, not a dict")
    if not all(isinstance(name, str) for name in declared):
        raise MalformedReport(f"'{key}' has a key that is not text")
    try:
        cleaned, changed = data(declared)
        json.dumps(cleaned, allow_nan=False)
    except (TypeError, ValueError) as exc:
        detail = line(str(exc), limit=200).value
        raise MalformedReport(f"'{key}' is not JSON data ({detail})") from None
    changes.extend(f"{key}: {change}" for change in changed)
    return cleaned


def _missing(items: object, status: str) -> tuple[MissingItem, ...]:
    if not isinstance(items, list):
        raise MalformedReport(f"'missing' is {_kind(items)}, not a list")
    if status == "unavailable" and not items:
        raise MalformedReport("'missing' lists nothing missing for an unavailable plugin")
    found = []
    for index, item in enumerate(items, start=1):
        where = f"'missing' item {index}"
        if not isinstance(item, dict):
            raise MalformedReport(f"{where} is {_kind(item)}, not a dict")
        kind = item.get("kind")
        if kind not in MISSING_KINDS:
            raise MalformedReport(
                f"{where} has kind {_preview(kind)}, not one of {', '.join(MISSING_KINDS)}"
            )
        if "item" not in item:
            raise MalformedReport(f"{where} has no 'item'")
        fields = {}
        for key in ("item", "path", "problem", "checked"):
            raw = item.get(key)
            if not isinstance(raw, str) and not (raw is None and key != "item"):
                raise MalformedReport(f"{where} has {key!r} as {_kind(raw)}, not text")
            fields[key] = line(raw, limit=1000).value
        found.append(MissingItem(kind=kind, **fields))
    return tuple(found)


# --- Words ---------------------------------------------------------------------------------


def _kind(value: object) -> str:
    name = type(value).__name__
    return f"{'an' if name[:1].lower() in 'aeiou' else 'a'} {name}"


def _preview(value: object) -> str:
    """A short, terminal-safe repr of a plugin's value, for a message about it."""
    try:
        text = repr(value)
    except ValueError:  # an int too long for repr
        text = f"<{_kind(value)}>"
    return line(text, limit=60).value
