"""A run's params against what the last load recorded of the plugin: run()'s signature
(Plugin.run_params) and its declared JSON Schema (Plugin.params_schema).

A mismatch is the caller's mistake, refused before a run is queued (InvalidParams), so it
never counts against the plugin. The sandbox checks the signature again at the call, for a
plugin whose run() changed since its load.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jsonschema
from jsonschema.exceptions import SchemaError, ValidationError, best_match
from referencing.exceptions import Unresolvable

from plugins_app import reasons
from plugins_app.errors import InvalidParams

DEFAULT_VALIDATOR = jsonschema.Draft202012Validator  # a schema without "$schema"


def check_params(
    *,
    name: str,
    params: Mapping[str, Any],
    run_params: Mapping[str, Any] | None,
    params_schema: Mapping[str, Any] | None,
) -> None:
    """Raise InvalidParams when `params` do not fit run()'s signature or the schema."""
    if run_params is not None:
        problems = signature_problems(params, run_params)
        if problems:
            accepted = ", ".join(run_params["accepted"])
            raise InvalidParams(
                reasons.params_do_not_fit_run(plugin=name, problems=problems, accepted=accepted)
            )
    if params_schema is not None:
        error = schema_violation(params, params_schema)
        if error is not None:
            raise InvalidParams(
                reasons.params_do_not_fit_schema(
                    plugin=name,
                    where=_where(error),
                    message=error.message,
                    rule=str(error.validator),
                )
            )


def signature_problems(params: Mapping[str, Any], run_params: Mapping[str, Any]) -> str:
    """'unknown param 'x'; missing param 'y'', or '' when the params fit."""
    accepted = run_params["accepted"]
    unknown = [] if run_params["var_keyword"] else [p for p in params if p not in accepted]
    missing = [p for p in run_params["required"] if p not in params or p not in accepted]
    parts = []
    if unknown:
        parts.append(_listed("unknown", unknown))
    if missing:
        parts.append(_listed("missing", missing))
    return "; ".join(parts)


def schema_problem(schema: Mapping[str, Any]) -> str | None:
    """Why a declared params_schema is not a JSON Schema, or None when it is one."""
    validator = jsonschema.validators.validator_for(schema, default=DEFAULT_VALIDATOR)
    try:
        validator.check_schema(schema)
    except SchemaError as error:
        where = "".join(f"[{part!r}]" for part in error.absolute_path)
        at = f" at params_schema{where}" if where else ""
        return f"params_schema is not a valid JSON Schema: {error.message}{at}"
    return None


def schema_violation(
    params: Mapping[str, Any], schema: Mapping[str, Any]
) -> ValidationError | None:
    """The most relevant way `params` break `schema`, or None when they fit it."""
    validator = jsonschema.validators.validator_for(schema, default=DEFAULT_VALIDATOR)
    try:
        return best_match(validator(schema).iter_errors(dict(params)))
    except Unresolvable as exc:  # a $ref the schema cannot resolve: said, never a 500
        return ValidationError(
            f"the schema's reference cannot be resolved ({exc})", validator="$ref"
        )


def _where(error: ValidationError) -> str:
    where = "params"
    for part in error.absolute_path:
        where += f"[{part}]" if isinstance(part, int) else f".{part}"
    return where


def _listed(what: str, names: list[str]) -> str:
    quoted = ", ".join(f"'{name}'" for name in names)
    return f"{what} param{'s' if len(names) > 1 else ''} {quoted}"
