"""Small input serializers (unknown keys rejected) and the output shapes the schema documents."""

from __future__ import annotations

import re
from typing import Any

from django.conf import settings
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from plugins_app import selectors
from plugins_app.api.errors import InvalidInput
from plugins_app.models import PluginRun, PluginState, RunOutcomeKind, RunStatus
from plugins_app.storable import value_problem


def validated(serializer_class: type[serializers.Serializer], data: Any, *, where: str) -> dict:
    """The serializer's validated data, or a 400 naming the field and the problem."""
    serializer = serializer_class(data=data)
    if not serializer.is_valid():
        raise InvalidInput(where, serializer.errors)
    return dict(serializer.validated_data)


def validated_query(serializer_class: type[serializers.Serializer], params: Any) -> dict:
    """Query parameters the serializer defines, each given once; others are ignored.

    An empty value is a value (`?page_size=` is a 400), except where a field allows blank.
    """
    known = serializer_class().fields
    repeated = {key: len(params.getlist(key)) for key in known if len(params.getlist(key)) > 1}
    if repeated:
        raise InvalidInput(
            "query parameter",
            {key: [f"Given {count} times; give it once."] for key, count in repeated.items()},
        )
    given = {key: params[key] for key in known if key in params}
    return validated(serializer_class, given, where="query parameter")


class StrictSerializer(serializers.Serializer):
    """Refuses keys it does not define, so a typo is a 400 instead of silently ignored."""

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                allowed = ", ".join(sorted(self.fields)) or "none"
                raise serializers.ValidationError(
                    {
                        key: [f"Unknown field '{key}' (allowed fields: {allowed})."]
                        for key in unknown
                    }
                )
        return super().to_internal_value(data)


# --- query parameters (unknown query parameters are ignored: monitors add cache busters) ---


class PluginListQuery(serializers.Serializer):
    state = serializers.ChoiceField(
        choices=PluginState.choices,
        required=False,
        allow_blank=True,
        help_text="Only plugins in this state (in capitals).",
        error_messages={
            "invalid_choice": '"{input}" is not a state; use one of '
            + ", ".join(PluginState.values)
            + " (in capitals, such as state=FAILED)"
        },
    )
    enabled = serializers.ChoiceField(
        choices=["true", "false"],
        required=False,
        allow_blank=True,
        help_text="Only enabled (true) or disabled (false) plugins.",
    )

    def validate_enabled(self, value: str) -> bool | None:
        return {"true": True, "false": False}.get(value)


class OpaqueStringField(serializers.CharField):
    """Any string, taken as it is (a cursor is checked by the paginator, not here)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(allow_blank=True, trim_whitespace=False, **kwargs)
        self.validators = []  # CharField refuses NUL characters; a bad cursor is a 404 later


class RunListQuery(serializers.Serializer):
    cursor = OpaqueStringField(
        required=False, help_text="Where a page starts: from a response's next/previous link."
    )
    page_size = serializers.IntegerField(
        required=False, min_value=1, max_value=200, help_text="Runs per page (default 50)."
    )


class RunSubmitQuery(serializers.Serializer):
    wait = serializers.FloatField(
        required=False,
        min_value=0,
        max_value=settings.PORTAL_API_MAX_WAIT_S,  # for the schema; checked again per request
        help_text="Wait up to this many seconds for the run to finish (see PORTAL_API_MAX_WAIT_S).",
    )

    def validate_wait(self, value: float) -> float:
        limit = settings.PORTAL_API_MAX_WAIT_S
        if value > limit:
            raise serializers.ValidationError(f"Ensure this value is at most {limit:g} seconds.")
        return value


# --- request bodies ---


PARAM_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
# Deeper values break json.dumps/pickle on the way to the sandbox (recursion limit), so refuse.
MAX_PARAM_DEPTH = 100


def nesting_depth(value: Any) -> int:
    """How many arrays/objects deep a parsed JSON value goes (iterative: no recursion)."""
    deepest, pending = 0, [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, depth)
            children = item.values() if isinstance(item, dict) else item
            pending.extend((child, depth + 1) for child in children)
    return deepest


@extend_schema_field(
    {
        "type": "object",
        "propertyNames": {"type": "string", "pattern": PARAM_NAME_PATTERN},
        "additionalProperties": True,
    }
)
class ParamsField(serializers.DictField):
    """Keyword arguments for a plugin's run(): names are plain identifiers (ASCII)."""

    def to_internal_value(self, data: Any) -> dict:
        if nesting_depth(data) > MAX_PARAM_DEPTH:
            raise serializers.ValidationError(
                f"Parameters nest at most {MAX_PARAM_DEPTH} levels deep (flatten the value or "
                f"pass it as a string)."
            )
        problem = value_problem(data, "params")
        if problem:
            raise serializers.ValidationError(f"{problem}; nothing was stored or run.")
        params = super().to_internal_value(data)
        bad = [key for key in params if not re.match(PARAM_NAME_PATTERN, key)]
        if bad:
            raise serializers.ValidationError(
                f"Parameter names must be identifiers (letters, digits, _; not starting with a "
                f"digit), not {', '.join(map(repr, bad))}."
            )
        return params


class RunSubmitBody(StrictSerializer):
    params = ParamsField(
        required=False,
        default=dict,
        help_text="Keyword arguments for the plugin's run(), as a JSON object.",
    )


class EmptyBody(StrictSerializer):
    """A reload takes no fields; an empty body or `{}`."""


# --- responses ---


class ErrorSerializer(serializers.Serializer):
    detail = serializers.CharField(help_text="What went wrong and what to do, in one sentence.")
    # The response's field is named "errors", shadowing Serializer.errors: this serializer only
    # documents the schema and never validates data.
    errors = serializers.DictField(  # type: ignore[assignment]
        required=False, help_text="For invalid input: the messages by field."
    )


class NoSnapshotSerializer(serializers.Serializer):
    detail = serializers.CharField()
    stale = serializers.BooleanField()
    checked_at = serializers.DateTimeField(allow_null=True)


class RetryPolicySerializer(serializers.Serializer):
    max_attempts = serializers.IntegerField(
        min_value=1, help_text="Attempts in all, the first run included (1: no retry)."
    )
    backoff_s = serializers.FloatField(
        help_text="Wait before the second attempt, doubled per attempt, with jitter."
    )
    max_backoff_s = serializers.FloatField(help_text="The longest wait between two attempts.")
    on_error = serializers.BooleanField(
        help_text="Whether runs whose plugin raised an exception are retried too (timeouts, "
        "crashes, memory, interruptions and sandbox failures always are)."
    )


class QuarantineSerializer(serializers.Serializer):
    state = serializers.ChoiceField(
        choices=["closed", "open", "half_open"],
        help_text="closed: runs go; open: runs are refused (not counted) until `until`; "
        "half_open: the cooldown is over and one probe run may go, whose success lifts it.",
    )
    reason = serializers.CharField(
        allow_null=True, help_text="Why it is quarantined and what to do; null when closed."
    )
    until = serializers.DateTimeField(
        allow_null=True, help_text="When the cooldown ends and a probe run is let through."
    )


class HealthRecordSerializer(serializers.Serializer):
    """Documents `selectors.health_record`: every key is always present, null where unknown."""

    name = serializers.CharField()
    state = serializers.ChoiceField(choices=PluginState.choices)
    description = serializers.CharField(allow_null=True)
    reason = serializers.CharField(
        allow_null=True, help_text="Why the plugin is in this state and what to do next."
    )
    version = serializers.CharField(allow_null=True)
    uptime_seconds = serializers.FloatField(
        allow_null=True, help_text="Seconds since it became available; null unless available."
    )
    success_count = serializers.IntegerField(min_value=0)
    error_count = serializers.IntegerField(min_value=0)
    enabled = serializers.BooleanField()
    consecutive_failures = serializers.IntegerField(min_value=0)
    last_run_at = serializers.DateTimeField(allow_null=True)
    last_success_at = serializers.DateTimeField(allow_null=True)
    last_error_at = serializers.DateTimeField(allow_null=True)
    last_duration_ms = serializers.FloatField(allow_null=True)
    avg_duration_ms = serializers.FloatField(allow_null=True)
    params_schema = serializers.DictField(
        allow_null=True,
        help_text="The JSON Schema the plugin declares for its run params (`params_schema`); "
        "runs with params against it are refused with a 400. Null when it declares none.",
    )
    retry_policy = RetryPolicySerializer(
        help_text="The retry policy in force: an operator's override, else what the plugin "
        "declares (`retry`), else one attempt (no retry)."
    )
    quarantine_after = serializers.IntegerField(
        min_value=0,
        help_text="Consecutive failures that quarantine the plugin (0: never); the override, "
        "else the declared `quarantine_after`, else 5.",
    )
    next_retry_at = serializers.DateTimeField(
        allow_null=True,
        help_text="When the earliest retry queued for the plugin may start; null: none queued.",
    )
    quarantine = QuarantineSerializer(
        help_text="The automatic quarantine (circuit breaker) of the plugin."
    )
    next_scheduled_at = serializers.DateTimeField(
        allow_null=True,
        help_text="When the plugin's next scheduled run is due (the earliest of its enabled "
        "schedules); null when it has none.",
    )
    checked_at = serializers.DateTimeField(
        help_text="When the node's health snapshot holding this record was read from the database."
    )
    stale = serializers.BooleanField(
        help_text="True when that snapshot is older than PORTAL_HEALTH_STALE_AFTER_S or its last "
        "refresh failed (the database did not answer): the last known record."
    )
    stale_since = serializers.DateTimeField(
        allow_null=True,
        help_text="Since when the record is stale (the first failed refresh, or when the snapshot "
        "aged past PORTAL_HEALTH_STALE_AFTER_S); null while fresh.",
    )


def outcome_field() -> serializers.ChoiceField:
    # Declared: DRF drops allow_blank from read-only model fields, and a run in progress has "".
    return serializers.ChoiceField(
        choices=RunOutcomeKind.choices,
        allow_blank=True,
        read_only=True,
        help_text="Empty until the run ends; then what the sandbox saw, or why the portal "
        "did not call it.",
    )


class RunSummarySerializer(serializers.ModelSerializer):
    """A run in a list: no params, result or output, which can be large."""

    plugin = serializers.CharField(source="plugin.name", read_only=True)
    status = serializers.ChoiceField(choices=RunStatus.choices, read_only=True)
    outcome = outcome_field()

    class Meta:
        model = PluginRun
        fields = (
            "id",
            "plugin",
            "status",
            "outcome",
            "reason",
            "error_type",
            "duration_ms",
            "actor",
            "attempt",
            "retry_of",
            "not_before",
            "queued_at",
            "started_at",
            "finished_at",
        )
        read_only_fields = fields


@extend_schema_field(
    {
        # A list of types, not oneOf [{}, null]: null matched both branches and was refused.
        # allow_null adds "null" to it.
        "type": ["object", "array", "string", "number", "boolean"],
        "description": "What the plugin's run() returned, as JSON (cut to size: see "
        "`result_truncated`); null while the run is queued or running, when it did not "
        "succeed, or when run() returned None.",
    }
)
class RunResultField(serializers.JSONField):
    """Any JSON value, null included."""


class RunSerializer(serializers.ModelSerializer):
    """A run in full; the plugin's own output needs the run_plugin permission to be shown."""

    plugin = serializers.CharField(source="plugin.name", read_only=True)
    status = serializers.ChoiceField(choices=RunStatus.choices, read_only=True)
    outcome = outcome_field()
    result = RunResultField(allow_null=True, read_only=True)
    params = serializers.DictField(read_only=True)
    warnings = serializers.ListField(
        child=serializers.CharField(),
        read_only=True,
        help_text="What did not fail the run but an operator should know: values the portal "
        "changed so it could store them, output the sandbox cut.",
    )
    traceback = serializers.SerializerMethodField(
        help_text="The plugin's traceback; null without the run_plugin permission."
    )
    stdout_tail = serializers.SerializerMethodField(
        help_text="The end of the plugin's stdout; null without the run_plugin permission."
    )
    stderr_tail = serializers.SerializerMethodField(
        help_text="The end of the plugin's stderr; null without the run_plugin permission."
    )
    environment_changes = serializers.SerializerMethodField(
        help_text="What differs in the environment from the plugin's last successful run "
        "before this one, e.g. 'torch 2.13.0 -> 2.14.1'; empty when nothing did."
    )

    class Meta:
        model = PluginRun
        fields = (
            "id",
            "plugin",
            "status",
            "outcome",
            "params",
            "result",
            "result_truncated",
            "error_type",
            "reason",
            "exit_code",
            "signal",
            "peak_rss_kb",
            "memory_mechanism",
            "mode",
            "duration_ms",
            "actor",
            "cancelled_by",
            "worker",
            "attempt",
            "retry_of",
            "not_before",
            "queued_at",
            "started_at",
            "finished_at",
            "heartbeat_at",
            "warnings",
            "environment",
            "environment_changes",
            "traceback",
            "stdout_tail",
            "stderr_tail",
        )
        read_only_fields = fields

    @extend_schema_field(serializers.ListField(child=serializers.CharField()))
    def get_environment_changes(self, run: PluginRun) -> list[str]:
        return selectors.environment_changes(run)

    def _plugin_output(self, run: PluginRun, field: str) -> str | None:
        return getattr(run, field) if self.context.get("show_output") else None

    @extend_schema_field(serializers.CharField(allow_null=True))
    def get_traceback(self, run: PluginRun) -> str | None:
        return self._plugin_output(run, "traceback")

    @extend_schema_field(serializers.CharField(allow_null=True))
    def get_stdout_tail(self, run: PluginRun) -> str | None:
        return self._plugin_output(run, "stdout_tail")

    @extend_schema_field(serializers.CharField(allow_null=True))
    def get_stderr_tail(self, run: PluginRun) -> str | None:
        return self._plugin_output(run, "stderr_tail")
