"""Reasons are actionable: every builder and every failure path writes a sentence, not a word."""

from __future__ import annotations

import dataclasses
import enum
import inspect
import itertools
import re
import types
import typing
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from plugins_app import (
    reasons,
    reasons_cancel,
    reasons_environment,
    reasons_policy,
    reasons_schedules,
    services,
)
from plugins_app.errors import IllegalTransition, PluginRefused
from plugins_app.models import EventKind, Plugin, PluginEvent, PluginRun, RunStatus

# Realistic values per parameter type; each builder is called with every combination of these.
SAMPLES: dict[Any, list[Any]] = {
    str: ["yolo", ""],
    int: [3],
    float: [1250.5],
    bool: [True, False],
    datetime: [datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)],
    timedelta: [timedelta(seconds=90)],
    Path: [Path("/srv/plugins/yolo.py")],
    type(None): [None],
}
MAX_CALLS_PER_BUILDER = 64


# Public functions of reasons.py that return something other than a whole reason.
NOT_REASONS = {
    "is_actionable": "the checker itself",
    "pip_name": "a pip package name, one part of the missing-module reason",
}


# Builders whose sentence is about no one plugin, and why.
PLUGINLESS = {
    "counters_reset": "summarises counters; the event row names the plugin",
    "invalid_params": "about a request's params, refused before any plugin is involved",
    "too_many_vanished": "about several plugins at once, named in a list",
    "queue_unserved": "about a worker queue and every plugin routed to it, named in a list",
}


def builders() -> list[Callable[..., str]]:
    """Every public function reasons.py and its siblings (reasons_policy.py,
    reasons_schedules.py, reasons_environment.py, reasons_cancel.py) define, except the helpers
    named in
    NOT_REASONS."""
    return [
        function
        for module in (
            reasons,
            reasons_policy,
            reasons_schedules,
            reasons_environment,
            reasons_cancel,
        )
        for name, function in inspect.getmembers(module, inspect.isfunction)
        if function.__module__ == module.__name__
        and not name.startswith("_")
        and name not in NOT_REASONS
    ]


def samples_for(annotation: Any) -> list[Any]:
    """Sample values for a type: unions, enums, dataclasses and containers included."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return [value for arg in typing.get_args(annotation) for value in samples_for(arg)]
    if origin is typing.Literal:
        return list(typing.get_args(annotation))
    if origin in (list, tuple, set, frozenset):
        items = samples_for(typing.get_args(annotation)[0]) if typing.get_args(annotation) else []
        return [origin(items[:1]), origin()]
    if origin is dict or annotation is dict:
        return [{"memory_mb": 512}, {}]
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return list(annotation)
    if dataclasses.is_dataclass(annotation) and isinstance(annotation, type):
        hints = typing.get_type_hints(annotation)
        fields = {f.name: samples_for(hints[f.name])[0] for f in dataclasses.fields(annotation)}
        return [annotation(**fields)]
    if annotation in SAMPLES:
        return SAMPLES[annotation]
    raise LookupError(
        f"no sample for {annotation!r}: add one to SAMPLES in tests/plugins_app/test_reasons.py"
    )


def calls(builder: Callable[..., str]) -> Iterator[tuple[dict[str, Any], str]]:
    """(arguments, reason) for combinations of sample arguments of one builder."""
    hints = typing.get_type_hints(builder)
    parameters = inspect.signature(builder).parameters
    choices = [samples_for(hints[name]) for name in parameters]
    for values in itertools.islice(itertools.product(*choices), MAX_CALLS_PER_BUILDER):
        arguments = dict(zip(parameters, values, strict=True))
        yield arguments, builder(**arguments)


def problems_with(reason: str, arguments: dict[str, Any] | None = None) -> list[str]:
    """Why a reason is not actionable; empty when it is."""
    found = []
    if not reasons.is_actionable(reason):
        found.append("not an actionable sentence")
    if re.search(r"\{[a-z_]+\}", reason):
        found.append("an unformatted {placeholder}")
    if arguments and None in arguments.values() and re.search(r"\bNone\b", reason):
        found.append("shows None for a missing value")
    return found


class TestIsActionable:
    @pytest.mark.parametrize(
        "vague",
        ["", "Error", "failed", "Unknown", "crashed.", "Plugin failed", "Timeout after 30 s"],
    )
    def test_vague_reason__rejected(self, vague):
        """A bare word or a fragment shorter than a sentence is not a reason."""
        assert not reasons.is_actionable(vague)
        assert problems_with(vague) == ["not an actionable sentence"]

    def test_sentence_with_next_step__accepted(self):
        """The house example is actionable."""
        reason = (
            "Missing Python module 'torch' required by plugin 'yolo' "
            "(install with: pip install torch)"
        )
        assert problems_with(reason) == []

    def test_placeholder_and_none__rejected(self):
        """A forgotten f prefix or a None shown to the operator is caught."""
        assert "an unformatted {placeholder}" in problems_with(
            "Plugin {name} could not be loaded from its file (fix the import and reload it)"
        )
        assert problems_with(
            "Run 3 of plugin 'yolo' stopped responding, last seen at None (rerun it)",
            {"last_seen": None},
        ) == ["shows None for a missing value"]


class TestBuilders:
    def test_every_builder__has_samples(self):
        """Every builder's parameters have samples, so none escapes the vagueness check."""
        assert builders(), "reasons.py defines no builder"
        for builder in builders():
            assert list(calls(builder)), builder.__name__

    @pytest.mark.parametrize("builder", builders(), ids=lambda builder: builder.__name__)
    def test_builder__actionable_for_every_input(self, builder):
        """A builder's sentence stays actionable with empty, missing and enum inputs."""
        for arguments, reason in calls(builder):
            assert problems_with(reason, arguments) == [], (builder.__name__, arguments, reason)

    def test_counters_reset__names_previous_values_and_note(self):
        """The reset summary keeps what was lost and who said why."""
        reason = reasons.counters_reset(successes=4, errors=2, consecutive=1, note="after fix")
        assert (
            reason == "Counters reset from 4 successes, 2 errors, 1 consecutive failures: after fix"
        )


class TestBuilderSignatures:
    @pytest.mark.parametrize("builder", builders(), ids=lambda builder: builder.__name__)
    def test_every_parameter__keyword_only(self, builder):
        """No builder takes a positional argument, so a swapped pair is a TypeError."""
        kinds = {p.name: p.kind for p in inspect.signature(builder).parameters.values()}
        positional = [
            name for name, kind in kinds.items() if kind != inspect.Parameter.KEYWORD_ONLY
        ]
        assert positional == [], builder.__name__

    @pytest.mark.parametrize(
        "builder",
        [b for b in builders() if b.__name__ not in PLUGINLESS],
        ids=lambda builder: builder.__name__,
    )
    def test_plugin__first_parameter_and_named_in_reason(self, builder):
        """A builder about a plugin takes it as `plugin=`, first, and names it in quotes."""
        assert next(iter(inspect.signature(builder).parameters)) == "plugin", builder.__name__
        for arguments, reason in calls(builder):
            if arguments["plugin"]:
                assert f"'{arguments['plugin']}'" in reason, (builder.__name__, reason)

    def test_swapped_pair__refused(self):
        """Passing the module and the plugin positionally, in either order, is refused."""
        with pytest.raises(TypeError):
            reasons.missing_module("torch", "yolo")  # type: ignore[misc]
        assert reasons.missing_module(plugin="yolo", module="torch") == (
            "Missing Python module 'torch' required by plugin 'yolo' "
            "(install with: pip install torch)"
        )

    def test_pluginless_builders__exist(self):
        """Every builder listed as about no plugin is still a builder (the list stays true)."""
        assert set(PLUGINLESS) <= {b.__name__ for b in builders()}


def registry_reasons() -> list[tuple[str, str]]:
    """(where, reason) for every non-empty reason the registry holds, operator notes aside."""
    found = [(f"plugin {p.name}", p.reason) for p in Plugin.objects.exclude(reason="")]
    operator_notes = [EventKind.DISABLED, EventKind.ENABLED]
    events = PluginEvent.objects.exclude(reason="").exclude(kind__in=operator_notes)
    found += [(f"event {e.kind} of {e.plugin.name}", e.reason) for e in events]
    runs = PluginRun.objects.exclude(reason="")
    found += [(f"run {r.pk} ({r.status})", r.reason) for r in runs]
    return found


@pytest.mark.django_db
class TestFailurePaths:
    def test_every_service_failure_path__writes_actionable_reasons(self, make_plugin, finish_run):
        """Refusals, interruptions, reload-while-running and resets leave actionable reasons."""
        make_plugin("gone")
        services.plugin_disable(name="gone", note="", actor="user:ann")
        with pytest.raises(PluginRefused) as disabled:
            services.run_queue(name="gone", params={}, actor="test")

        make_plugin("gpu")
        why = "Plugin 'gpu' needs a CUDA GPU and this host has none (run it on a GPU worker)"
        services.plugin_mark_unavailable(name="gpu", reason=why, actor="test")
        with pytest.raises(PluginRefused) as unavailable:
            services.run_queue(name="gpu", params={}, actor="test")

        make_plugin("late")
        queued = services.run_queue(name="late", params={}, actor="test")
        services.plugin_disable(name="late", note="maintenance", actor="user:ann")
        assert services.run_start(run_id=queued.pk, worker="w:1").status == RunStatus.FAILED

        make_plugin("busy")
        running = services.run_queue(name="busy", params={}, actor="test")
        services.run_start(run_id=running.pk, worker="w:1")
        with pytest.raises(IllegalTransition) as reload_refused:
            services.plugin_register(name="busy", metadata=services.PluginMetadata(), actor="t")
        later = datetime.now(UTC) + timedelta(hours=1)
        assert services.runs_reconcile_interrupted(stale_after=timedelta(0), now=later)

        make_plugin("flaky")
        finish_run("flaky", RunStatus.FAILED)
        services.plugin_reset_counters(name="flaky", note="", actor="user:ann")

        written = registry_reasons()
        raised = [("refusal", str(e.value)) for e in (disabled, unavailable, reload_refused)]
        kinds = {where.split(" ")[0] for where, _ in written}
        assert kinds == {"plugin", "event", "run"}
        for where, reason in written + raised:
            assert problems_with(reason) == [], (where, reason)
