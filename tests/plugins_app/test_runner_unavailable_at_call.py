"""What a call's process lacked, read by the runner from the result's fault and detail (the
loader's report as data), never from the traceback's text; no database, no sandbox."""

from __future__ import annotations

import json

import pytest

from plugins_app import runner
from plugins_app.untrusted import MissingItem
from sandbox import Fault, Outcome, SandboxResult

REPORT = {
    "status": "unavailable",
    "stage": "requires",
    "name": "p",
    "version": "",
    "description": "",
    "requires": {"env": ["API_KEY"]},
    "limits": {},
    "has_setup": False,
    "missing": [{"kind": "env", "item": "API_KEY"}],
    "error_type": None,
    "message": None,
    "where": None,
    "traceback": None,
    "field": None,
}


def refused(**fields: object) -> SandboxResult:
    fields.setdefault("fault", Fault.UNAVAILABLE)
    fields.setdefault("detail", REPORT)
    return SandboxResult(ok=False, value=None, outcome=Outcome.ERROR, **fields)  # type: ignore[arg-type]


def test_unavailable_fault_with_its_report__what_is_missing():
    """An unavailable fault carrying the load report gives the items the process lacks."""
    assert runner._missing_at_call(refused()) == (MissingItem(kind="env", item="API_KEY"),)


@pytest.mark.parametrize(
    "result",
    [
        refused(
            fault=None,
            error_type="PluginUnavailable",
            traceback=f"PluginUnavailable: {json.dumps(REPORT)}\n",
        ),
        refused(fault=Fault.LOAD),
        refused(detail={"status": "unavailable"}),
        refused(detail={**REPORT, "status": "failed", "missing": []}),
    ],
    ids=["no-fault-report-in-traceback", "load-fault", "malformed-report", "not-unavailable"],
)
def test_anything_else__nothing_missing(result):
    """No unavailable fault, a report that is not one, or one that is not unavailable: the
    run is an ordinary failure (the traceback's text is never read)."""
    assert runner._missing_at_call(result) == ()
