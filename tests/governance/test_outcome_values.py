"""One list of run outcomes: every value the portal writes to PluginRun.outcome is a choice."""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path

import pytest

from plugins_app import pipeline, services
from plugins_app.models import (
    Plugin,
    PluginRun,
    PluginState,
    RunOutcomeKind,
    RunStatus,
    SourceKind,
)
from plugins_app.sources import PluginSource
from sandbox import Outcome

ROOT = Path(__file__).resolve().parents[2]
PLUGINS_APP = ROOT / "plugins_app"
# Enums the source may name an outcome through: `RunOutcomeKind.REFUSED`, `Outcome.OK.value`.
OUTCOME_ENUMS = {"RunOutcomeKind": RunOutcomeKind, "Outcome": Outcome}
# Lookups read outcomes (`runs.filter(outcome=...)`); they write none.
QUERY_METHODS = frozenset({"filter", "exclude", "get", "get_queryset"})


def _outcome_values(expr: ast.expr) -> tuple[set[str], bool]:
    """(values `expr` names, whether it only passes on an outcome chosen elsewhere)."""
    if isinstance(expr, ast.Constant):
        return {str(expr.value)}, False
    if isinstance(expr, ast.Name):
        return set(), True  # a RunOutcome handed to run_finish, or a value chosen elsewhere
    if isinstance(expr, ast.Attribute):
        chain = ast.unparse(expr).split(".")
        if chain[-1] == "value":
            chain = chain[:-1]
        if chain[-1] == "outcome":
            return set(), True  # copied from another RunOutcome or a SandboxResult
        if len(chain) >= 2 and chain[-2] in OUTCOME_ENUMS:
            return {OUTCOME_ENUMS[chain[-2]][chain[-1]].value}, False
    return {ast.unparse(expr)}, False


def _called_name(call: ast.Call) -> str:
    func = call.func
    return func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")


def written_outcomes(source: str) -> set[str]:
    """Every outcome value a module's source writes: `outcome=` arguments, `"outcome":` keys."""
    written: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        values: list[ast.expr] = []
        if isinstance(node, ast.Call) and _called_name(node) not in QUERY_METHODS:
            values += [kw.value for kw in node.keywords if kw.arg == "outcome"]
        elif isinstance(node, ast.Dict):
            values += [
                value
                for key, value in zip(node.keys, node.values, strict=True)
                if isinstance(key, ast.Constant) and key.value == "outcome"
            ]
        for value in values:
            written |= _outcome_values(value)[0]
    return written


def portal_sources() -> dict[str, str]:
    return {
        str(path.relative_to(ROOT)): path.read_text()
        for path in PLUGINS_APP.rglob("*.py")
        if "migrations" not in path.parts
    }


class TestOneListOfOutcomes:
    def test_every_outcome_the_portal_writes__is_a_choice(self):
        """Each outcome value plugins_app can write to a run row is a RunOutcomeKind member."""
        members = set(RunOutcomeKind.values)
        strays = {
            (path, value)
            for path, source in portal_sources().items()
            for value in written_outcomes(source)
            if value not in members
        }
        assert strays == set()

    def test_every_sandbox_outcome__is_a_choice(self):
        """What the sandbox reports (disk_limit included) is stored as one of the choices."""
        assert {outcome.value for outcome in Outcome} <= set(RunOutcomeKind.values)

    def test_run_outcome_field__offers_exactly_the_choices(self):
        """The admin filter and the API schema list the same outcomes, each fitting the field."""
        field = PluginRun._meta.get_field("outcome")
        assert list(field.choices) == list(RunOutcomeKind.choices)
        assert max(len(value) for value in RunOutcomeKind.values) <= field.max_length

    def test_stray_outcome__found_by_the_scan(self):
        """A literal that is not a member, in a call or a dict, is what the scan reports."""
        source = textwrap.dedent(
            """\
            RunOutcome(outcome="rejected")
            runs.filter(outcome=chosen).exclude(outcome="read, not written")
            facts = {"outcome": Outcome.DISK_LIMIT.value}
            finish(outcome=RunOutcomeKind.INVALID_DECLARATION, other=outcome.outcome)
            """
        )
        assert written_outcomes(source) == {"rejected", "disk_limit", "invalid_declaration"}


@pytest.mark.django_db
class TestRefusedIsNotInvalidDeclaration:
    def test_refused_run__not_counted(self, make_plugin):
        """A run closed because its plugin was disabled while it waited is 'refused', uncounted."""
        make_plugin("ocr")
        run = services.run_queue(name="ocr", params={}, actor="test")
        services.plugin_disable(name="ocr", note="maintenance", actor="user:ann")
        run = pipeline.execute_run(run.pk)
        plugin = Plugin.objects.get(name="ocr")
        assert (run.status, run.outcome) == (RunStatus.FAILED, RunOutcomeKind.REFUSED)
        assert (plugin.error_count, plugin.consecutive_failures) == (0, 0)

    def test_invalid_declared_limits__counted_failure_of_its_own(self, plugin_dir):
        """Limits that turn invalid at run time fail the run as 'invalid_declaration', counted."""
        source = plugin_dir.add("ocr", "def run():\n    return 1\n")
        recorded = PluginSource(location=str(source), kind=SourceKind.FILE)
        metadata = services.PluginMetadata(source=recorded, limits={"timeout_s": -1})
        services.plugin_register(name="ocr", metadata=metadata, actor="test")
        services.plugin_mark_initialized(name="ocr", actor="test")
        run = services.run_queue(name="ocr", params={}, actor="test")
        run = pipeline.execute_run(run.pk)
        plugin = Plugin.objects.get(name="ocr")
        assert (run.status, run.outcome) == (RunStatus.FAILED, RunOutcomeKind.INVALID_DECLARATION)
        assert run.get_outcome_display() == "invalid declaration"
        assert (plugin.state, plugin.error_count) == (PluginState.FAILED, 1)
