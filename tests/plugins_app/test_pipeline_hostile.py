"""Hostile plugins through the real pipeline: what they emit never breaks the registry.

NUL characters, lone surrogates and over-long names are refused by PostgreSQL, not by SQLite:
run this file on both (DATABASE_URL=postgres://... for PostgreSQL).
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Iterator

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from plugins_app import pipeline, services
from plugins_app.models import Plugin, PluginRun, PluginState, RunStatus
from sandbox import Limits, Outcome, SandboxResult

pytestmark = pytest.mark.django_db

ACTOR = "user:tester"
HEALTHY = '"""Healthy beside it."""\ndef run():\n    return "healthy"\n'
REFUSED_MARK = "refused-by-the-database"


@pytest.fixture(autouse=True)
def _bounded_loads(settings) -> Iterator[None]:
    """A load that waits for a neighbour that never comes fails in seconds, not minutes."""
    settings.PORTAL_PLUGIN_LOAD_TIMEOUT_S = 20
    yield


@pytest.fixture
def database_refuses():
    """Make the real database refuse writes of TABLE rows whose COLUMN holds REFUSED_MARK."""
    made: list[str] = []

    def refuse(table: str, column: str) -> None:
        trigger = f"refuse_{table}_{column}"
        with connection.cursor() as cursor:
            if connection.vendor == "sqlite":
                for event in ("INSERT", "UPDATE"):
                    cursor.execute(
                        f"CREATE TRIGGER {trigger}_{event} BEFORE {event} ON {table} "
                        f"WHEN NEW.{column} LIKE '%{REFUSED_MARK}%' "
                        "BEGIN SELECT RAISE(ABORT, 'the test database refuses this value'); END"
                    )
                    made.append(f"DROP TRIGGER IF EXISTS {trigger}_{event}")
            else:
                cursor.execute(
                    f"CREATE FUNCTION {trigger}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                    f"IF NEW.{column} LIKE '%{REFUSED_MARK}%' THEN "
                    "RAISE EXCEPTION 'the test database refuses this value'; END IF; "
                    "RETURN NEW; END $$"
                )
                cursor.execute(
                    f"CREATE TRIGGER {trigger} BEFORE INSERT OR UPDATE ON {table} "
                    f"FOR EACH ROW EXECUTE FUNCTION {trigger}()"
                )
                made.append(f"DROP TRIGGER IF EXISTS {trigger} ON {table}")
                made.append(f"DROP FUNCTION IF EXISTS {trigger}()")

    yield refuse
    with connection.cursor() as cursor:
        for statement in made:
            with contextlib.suppress(Exception):
                cursor.execute(statement)


def load_all() -> dict[str, pipeline.LoadReport]:
    return {report.name: report for report in pipeline.load_plugins(actor=ACTOR)}


def run(name: str) -> PluginRun:
    """Run a plugin through the pipeline and return its run as stored."""
    finished = pipeline.run_plugin(name=name, params={}, actor=ACTOR)
    return PluginRun.objects.get(pk=finished.pk)


def counters(name: str) -> tuple[str, int, int, int]:
    plugin = Plugin.objects.get(name=name)
    return (plugin.state, plugin.success_count, plugin.error_count, plugin.running_count)


def assert_healthy_runs() -> None:
    healthy = run("healthy")
    assert (healthy.status, healthy.result, healthy.warnings) == ("succeeded", "healthy", [])
    assert counters("healthy") == (PluginState.INITIALIZED, 1, 0, 0)


class TestHostileRunOutput:
    def test_nul_in_stdout__run_succeeds_with_replacement_and_warning(self, plugins):
        """A NUL printed by run() is stored as U+FFFD, the success kept, a warning recorded."""
        plugins.add("p", "def run():\n    print('before\\x00after')\n    return {'ok': True}\n")
        plugins.add("healthy", HEALTHY)
        load_all()
        stored = run("p")
        assert (stored.status, stored.result) == (RunStatus.SUCCEEDED, {"ok": True})
        assert stored.stdout_tail == "before\ufffdafter\n"
        (warning,) = stored.warnings
        assert warning.startswith(
            "Plugin 'p' produced values the registry cannot store as they are; they were "
            "changed before storing: stdout: 1 NUL character replaced with U+FFFD"
        )
        assert counters("p") == (PluginState.INITIALIZED, 1, 0, 0)
        assert_healthy_runs()

    def test_nul_and_surrogates_in_result__replaced_at_any_depth(self, plugins):
        """NULs and lone surrogates in result keys and values, however deep, become U+FFFD."""
        plugins.add(
            "p",
            "def run():\n"
            "    deep = {'deep': ['\\udcff', 7]}\n"
            "    return {'key\\x00': ['a\\x00b', deep], 'pair': '\\ud83d\\ude00'}\n",
        )
        plugins.add("healthy", HEALTHY)
        load_all()
        stored = run("p")
        assert stored.status == RunStatus.SUCCEEDED
        assert stored.result == {
            "key\ufffd": ["a\ufffdb", {"deep": ["\ufffd", 7]}],
            "pair": "\U0001f600",
        }
        (warning,) = stored.warnings
        assert "result: 2 NUL characters and 1 lone surrogate replaced with U+FFFD" in warning
        assert counters("p") == (PluginState.INITIALIZED, 1, 0, 0)
        assert_healthy_runs()

    def test_overlong_exception_class_name__failed_run_with_name_cut(self, plugins):
        """An exception class named with 300 characters fails the run, its type cut to 200."""
        plugins.add(
            "p",
            "def run():\n    raise type('E' * 300, (Exception,), {})('boom')\n",
        )
        plugins.add("healthy", HEALTHY)
        load_all()
        stored = run("p")
        assert stored.status == RunStatus.FAILED
        assert stored.error_type == "E" * 199 + "…"
        assert stored.reason.startswith(f"Plugin 'p' raised {'E' * 199}… in run(): boom at ")
        assert stored.reason.endswith(
            "(see the run's traceback; fix the plugin or its input, then rerun)"
        )
        assert counters("p") == (PluginState.FAILED, 0, 1, 0)
        assert Plugin.objects.get(name="p").reason == stored.reason
        assert_healthy_runs()

    def test_control_characters_in_exception__reason_one_clean_line(self, plugins):
        """Terminal escapes, NULs and newlines in a message leave the reason one clean line."""
        plugins.add(
            "p",
            "def run():\n    raise ValueError('bad\\x1b[2J\\x00 input\\r\\nsecond \\u202eline')\n",
        )
        load_all()
        stored = run("p")
        assert stored.status == RunStatus.FAILED
        assert "raised ValueError in run(): bad\ufffd[2J\ufffd input second \ufffdline at " in (
            stored.reason
        )
        assert "ValueError: bad\ufffd[2J\ufffd input\nsecond \ufffdline\n" in stored.traceback
        assert (
            "traceback: 1 NUL character and 2 control characters replaced" in (stored.warnings[0])
        )
        assert counters("p") == (PluginState.FAILED, 0, 1, 0)


class TestOutcomeNotStored:
    def test_database_refuses_the_outcome__failed_run_with_true_reason(
        self, plugins, database_refuses
    ):
        """A run outcome the database refuses is recorded FAILED, saying so; never RUNNING."""
        plugins.add("p", f"def run():\n    print({REFUSED_MARK!r})\n    return 1\n")
        plugins.add("healthy", HEALTHY)
        load_all()
        database_refuses("plugins_app_pluginrun", "stdout_tail")
        finished = pipeline.run_plugin(name="p", params={}, actor=ACTOR)
        stored = PluginRun.objects.get(pk=finished.pk)
        assert (finished.status, stored.status) == (RunStatus.FAILED, RunStatus.FAILED)
        assert stored.reason.startswith(
            f"The outcome of run {stored.pk} of plugin 'p' (succeeded) could not be stored: "
            "the database refused it ("
        )
        assert stored.reason.endswith(
            "(the run is recorded as failed without its result and output; see the portal "
            "log for the error, then rerun the plugin)"
        )
        assert (stored.stdout_tail, stored.result) == ("", None)
        assert counters("p") == (PluginState.FAILED, 0, 1, 0)
        assert_healthy_runs()


class TestHostileLoads:
    @pytest.mark.parametrize("bad", ["\\x00", "\\udcff"], ids=["nul", "lone-surrogate"])
    def test_bad_character_in_docstring__loaded_with_replacement(self, plugins, bad):
        """A NUL or lone surrogate in a docstring is stored as U+FFFD; the others still load."""
        plugins.add("a", f'"""Reads{bad} text."""\ndef run():\n    return 1\n')
        plugins.add("healthy", HEALTHY)
        reports = load_all()
        assert (reports["a"].state, reports["healthy"].state) == ("INITIALIZED", "INITIALIZED")
        assert Plugin.objects.get(name="a").description == "Reads\ufffd text."
        assert_healthy_runs()

    @pytest.mark.parametrize("bad", ["\\x00", "\\udcff"], ids=["nul", "lone-surrogate"])
    def test_bad_character_in_setup_error__failed_with_clean_reason(self, plugins, bad):
        """A setup() error with a NUL or lone surrogate is FAILED, readable; the others load."""
        path = plugins.add(
            "a", f"def setup():\n    raise RuntimeError('license{bad}server')\ndef run(): pass\n"
        )
        plugins.add("healthy", HEALTHY)
        reports = load_all()
        assert reports["a"].state == PluginState.FAILED
        assert reports["a"].reason == (
            f"setup() of plugin 'a' raised RuntimeError: license\ufffdserver at {path}:2 in "
            "setup (fix the cause, then reload the plugin)"
        )
        assert Plugin.objects.get(name="a").reason == reports["a"].reason
        assert reports["healthy"].state == PluginState.INITIALIZED
        assert_healthy_runs()

    def test_overlong_exception_class_at_import__failed_with_name_cut(self, plugins):
        """An import raising a 300-character exception class is FAILED with the name cut."""
        plugins.add("a", "raise type('E' * 300, (Exception,), {})('boom')\n")
        plugins.add("healthy", HEALTHY)
        reports = load_all()
        assert reports["a"].state == PluginState.FAILED
        assert reports["a"].reason.startswith(f"Plugin 'a' failed to import: {'E' * 199}…: boom")
        assert reports["healthy"].state == PluginState.INITIALIZED

    @pytest.mark.parametrize(
        ("forged", "problem"),
        [
            ("{'status': 'ok'}", "keys description, error_type, limits, message, missing,"),
            (
                "{**real(*args, **kwargs), 'version': 2 ** 70}",
                "'version' is an int, not text",
            ),
            (
                "{**real(*args, **kwargs), 'status': 'unavailable', 'missing': []}",
                "'missing' lists nothing missing for an unavailable plugin",
            ),
            (
                "{**real(*args, **kwargs), 'status': 'unavailable', 'missing': [{'kind': 'env'}]}",
                "'missing' item 1 has no 'item'",
            ),
            (
                "{**real(*args, **kwargs), 'name': 'healthy/../admin'}",
                "'name' is 'healthy/../admin', not a plugin name",
            ),
        ],
        ids=["no-stage", "int-version", "nothing-missing", "item-without-name", "bad-name"],
    )
    def test_forged_load_report__failed_malformed_and_others_load(self, plugins, forged, problem):
        """A plugin that makes the loader return a malformed report is FAILED; others load."""
        path = plugins.add(
            "forger",
            f"""
            import sys
            host = sys.modules["plugin_contract.loader"]
            real = host._report
            host._report = lambda *args, **kwargs: {forged}
            def run():
                return 1
            """,
        )
        plugins.add("healthy", HEALTHY)
        reports = load_all()
        assert reports["forger"].state == PluginState.FAILED
        assert reports["forger"].reason.startswith(
            "The sandbox's load report for plugin 'forger' is malformed: "
        )
        assert problem in reports["forger"].reason
        assert reports["forger"].reason.endswith(
            f"(its code may tamper with the portal's loader: check {path}, fix it, then reload "
            "the plugin)"
        )
        assert Plugin.objects.get(name="forger").reason == reports["forger"].reason
        assert reports["healthy"].state == PluginState.INITIALIZED
        assert_healthy_runs()

    def test_database_refuses_a_plugin__failed_and_loadplugins_goes_on(
        self, plugins, database_refuses
    ):
        """A plugin row the database refuses is FAILED saying so; loadplugins loads the rest."""
        plugins.add("a", f'"""{REFUSED_MARK}"""\ndef run(): pass\n')
        plugins.add("healthy", HEALTHY)
        database_refuses("plugins_app_plugin", "description")
        out = io.StringIO()
        with pytest.raises(CommandError) as unwell:  # exit 1: a plugin ended FAILED
            call_command("loadplugins", stdout=out, stderr=io.StringIO())
        assert unwell.value.returncode == 1
        lines = out.getvalue().splitlines()
        reason = "What loading plugin 'a' found could not be stored: the database refused it ("
        assert lines[0].startswith(f"a        FAILED       {reason}")
        assert lines[0].endswith(
            "(it is recorded as FAILED without what it declared; see the portal log for the "
            "error, then reload the plugin)"
        )
        assert lines[1] == "healthy  INITIALIZED"
        plugin = Plugin.objects.get(name="a")
        assert (plugin.state, plugin.description) == (PluginState.FAILED, "")
        assert plugin.reason.startswith(reason)
        assert_healthy_runs()


class TestHostileDeclarations:
    def test_limit_too_large_for_a_float__failed_and_others_load(self, plugins):
        """A declared limit of 10**400 (an OverflowError in float()) is FAILED; others load."""
        path = plugins.add("a", "limits = {'timeout_s': 10 ** 400}\ndef run(): pass\n")
        plugins.add("healthy", HEALTHY)
        reports = load_all()
        assert reports["a"].state == PluginState.FAILED
        assert reports["a"].reason == (
            "Plugin 'a' has an invalid declaration: limits: int too large to convert to float "
            f"(fix it in {path}, then reload the plugin)"
        )
        assert reports["healthy"].state == PluginState.INITIALIZED
        assert_healthy_runs()


class TestForgedSandboxFacts:
    def test_numbers_out_of_range__stored_empty_saying_so(self, make_plugin):
        """Forged exit code, peak memory and duration are stored empty, with a warning."""
        make_plugin("p")
        forged = SandboxResult(
            ok=False,
            value=None,
            outcome=Outcome.EXITED,
            error_type="ProcessExit\x00",
            exit_code=2**70,
            peak_rss_kb=-5,
            duration_ms=float("inf"),
            signal="SIG" * 20,
        )
        outcome = pipeline.outcome_from_result("p", forged, Limits())
        queued = services.run_queue(name="p", params={}, actor=ACTOR)
        services.run_start(run_id=queued.pk, worker="w:1")
        services.run_finish(run_id=queued.pk, outcome=outcome)
        stored = PluginRun.objects.get(pk=queued.pk)
        assert (stored.exit_code, stored.peak_rss_kb, stored.duration_ms) == (None, None, None)
        assert (stored.error_type, stored.signal) == ("ProcessExit\ufffd", "SIG" * 6 + "S…")
        assert stored.reason == (
            "Plugin 'p' ended its process during run() without returning a result (remove the "
            "sys.exit()/os._exit() call from the plugin)"
        )
        (warning,) = stored.warnings
        assert (
            "exit_code: 1180591620717411303424 is outside -2147483648 to 2147483647, left empty"
            in warning
        )
        assert "peak_rss_kb: -5 is outside 0 to 9223372036854775807, left empty" in warning
        assert "duration_ms: inf is outside 0 to 1e+12, left empty" in warning
        assert counters("p") == (PluginState.FAILED, 0, 1, 0)


class TestNeighbourKillsTheHost:
    def test_plugin_killing_its_host__fails_alone_and_neighbour_loads(self, plugins, tmp_path):
        """A plugin that kills the shared sandbox host is FAILED; the plugin beside it loads."""
        meet, never = tmp_path / "meet", tmp_path / "never"
        os.mkfifo(meet)
        os.mkfifo(never)
        attempts = tmp_path / "attempts"
        attempts.mkdir()
        first_attempt = f"""
            import os, signal
            with open(os.path.join({str(attempts)!r}, __name__), "a") as count:
                count.write("x")
            with open(os.path.join({str(attempts)!r}, __name__)) as count:
                first = count.read() == "x"
            """
        plugins.add(
            "killer",
            first_attempt
            + f"""
            if first:
                with open({str(meet)!r}) as fifo:  # until the neighbour's import has begun
                    fifo.read()
            os.kill(os.getppid(), signal.SIGKILL)
            def run(): pass
            """,
        )
        plugins.add(
            "healthy",
            first_attempt
            + f"""
            if first:
                with open({str(meet)!r}, "w"):
                    pass
                open({str(never)!r}).read()  # no writer ever: waits until its process dies
            def run():
                return "healthy"
            """,
        )
        reports = load_all()
        assert reports["healthy"] == pipeline.LoadReport(
            "healthy", "INITIALIZED", "", str(plugins.path / "healthy.py")
        )
        assert reports["killer"].state == PluginState.FAILED
        assert reports["killer"].reason.startswith(
            "Loading plugin 'killer' lost the sandbox host that ran it, also in a host of its "
            "own: the sandbox host (pid "
        )
        assert "died from SIGKILL" in reports["killer"].reason
        assert reports["killer"].reason.endswith(
            "(its import or setup() may be killing the process that loads it: fix the "
            "plugin, then reload it)"
        )
        assert_healthy_runs()
