"""The plugin commands: loadplugins, runplugin, rerunplugins, pluginhealth, prunepluginruns."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.utils import timezone

from plugins_app import pipeline, selectors, services
from plugins_app.models import Plugin, PluginRun, PluginState, RunStatus
from tests.concurrency_support import database_url

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "plugins"


@pytest.fixture
def loaded(plugins):
    """Three plugins loaded: ok (healthy), echo (returns its params), broken (FAILED)."""
    plugins.add("ok", "def run(): return {'fine': True}\n")
    plugins.add("echo", "def run(**params): return params\n")
    plugins.add("fails", "def run(): raise RuntimeError('always')\n")
    pipeline.load_plugins(actor="test")
    return plugins


def command(*args: str, stdout=None) -> str:
    out = stdout or io.StringIO()
    call_command(*args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def failing(*args: str) -> tuple[int, str, str]:
    """Run a command that must fail: (returncode, message, stdout)."""
    out = io.StringIO()
    with pytest.raises(CommandError) as raised:
        call_command(*args, stdout=out, stderr=io.StringIO())
    return raised.value.returncode, str(raised.value), out.getvalue()


def manage(*args: str, timeout: float = 60, **popen) -> subprocess.CompletedProcess:
    """manage.py in a separate process, on the test database and the settings' plugin dirs."""
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=portal_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        **popen,
    )


def _in_parallel(*commands: list[str]) -> list[subprocess.CompletedProcess]:
    """Several manage.py commands at once (each starts Django: slow on a busy machine)."""
    processes = [
        subprocess.Popen(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=portal_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for args in commands
    ]
    results = []
    for process in processes:
        stdout, stderr = process.communicate(timeout=60)
        results.append(
            subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
        )
    return results


def portal_env() -> dict[str, str]:
    from django.conf import settings

    return {
        **os.environ,
        "DATABASE_URL": database_url(connection.settings_dict),
        "PORTAL_PLUGIN_DIRS": os.pathsep.join(settings.PORTAL_PLUGIN_DIRS),
    }


@pytest.mark.django_db
class TestLoadPlugins:
    def test_prints_one_line_per_plugin__state_and_reason(self, plugins):
        """Each plugin gets a line with its state and, when not healthy, the reason."""
        plugins.add("ok", "def run(): pass\n")
        plugins.add("yolo", "import no_such_torch\ndef run(): pass\n")
        code, _, out = failing("loadplugins")
        assert code == 1  # a plugin is UNAVAILABLE
        assert out == (
            "ok    INITIALIZED\n"
            "yolo  UNAVAILABLE  Missing Python module 'no_such_torch' required by plugin "
            "'yolo' (install with: pip install no_such_torch)\n"
        )

    def test_names__reload_only_those(self, plugins):
        """Named plugins are the only ones re-checked and printed."""
        plugins.add("a", "def run(): pass\n")
        plugins.add("b", "def run(): pass\n")
        command("loadplugins")
        assert command("loadplugins", "b") == "b  INITIALIZED\n"

    def test_unknown_name__exit_2(self, plugins):
        """An unknown name is misuse: exit code 2 with a message."""
        code, message, _ = failing("loadplugins", "ghost")
        assert code == 2
        assert message.startswith("Plugin 'ghost' not found: it is neither registered")

    def test_nothing_found__says_where_to_put_plugins(self, plugins):
        """With no plugins, the command says how to add one."""
        assert command("loadplugins").startswith("No plugins found (put NAME.py files")


@pytest.mark.django_db
class TestRunPlugin:
    def test_success__prints_result(self, loaded):
        """A successful run prints its result as JSON."""
        assert json.loads(command("runplugin", "ok")) == {"fine": True}

    def test_params__json_values_text_and_json_object_merged(self, loaded):
        """--param values are JSON when they parse, text otherwise, over --params-json."""
        out = command(
            "runplugin",
            "echo",
            "--params-json",
            '{"n": 1, "keep": [1]}',
            "--param",
            "n=2",
            "--param",
            "flag=true",
            "--param",
            "city=Paris",
        )
        assert json.loads(out) == {"n": 2, "keep": [1], "flag": True, "city": "Paris"}

    def test_json__prints_run_record(self, loaded):
        """--json prints the whole run record."""
        record = json.loads(command("runplugin", "echo", "--param", "x=1", "--json"))
        assert record["plugin"] == "echo"
        assert (record["status"], record["params"], record["result"]) == (
            "succeeded",
            {"x": 1},
            {"x": 1},
        )
        assert record["actor"] == "command:runplugin"
        assert record["id"] == PluginRun.objects.get().pk

    def test_failed_run__exit_1_with_reason(self, loaded):
        """A failed run exits 1 with the run's reason."""
        code, message, _ = failing("runplugin", "fails")
        assert code == 1
        run = PluginRun.objects.get()
        assert message == f"Run {run.pk} failed: {run.reason}"

    def test_failed_run_json__record_printed_then_exit_1(self, loaded):
        """With --json, a failed run's record is printed before exiting 1."""
        code, _, out = failing("runplugin", "fails", "--json")
        assert code == 1
        assert json.loads(out)["error_type"] == "RuntimeError"

    def test_timeout__timed_out_exit_1(self, plugins):
        """--timeout limits this run; going past it exits 1."""
        plugins.add("nap", "import time\ndef run(s=30): time.sleep(s)\n")
        pipeline.load_plugins(actor="test")
        # A first short run starts the warm host, so 0.5 s times the call, not a slow start.
        assert command("runplugin", "nap", "--param", "s=0")
        code, message, _ = failing("runplugin", "nap", "--timeout", "0.5")
        assert code == 1
        assert "timed_out: Plugin 'nap' did not finish within its 0.5 s timeout" in message

    @pytest.mark.parametrize(
        ("args", "words"),
        [
            (["ghost"], "Plugin 'ghost' not found (list plugins with: manage.py pluginhealth"),
            (["ok", "--param", "novalue"], "--param expects KEY=VALUE, got 'novalue'"),
            (["ok", "--params-json", "{bad"], "--params-json is not valid JSON"),
            (["ok", "--params-json", "[1]"], "--params-json must be a JSON object"),
            (["ok", "--param", "bad-key=1"], "parameter names must be Python identifiers"),
            (["ok", "--timeout", "-1"], "Invalid timeout: -1.0"),
            (["ok", "--timeout", "1e300"], "at most 604800 seconds (7 days)"),
        ],
    )
    def test_misuse__exit_2_with_message(self, loaded, args, words):
        """Unknown plugins and bad params exit 2 with a clear message and run nothing."""
        code, message, _ = failing("runplugin", *args)
        assert (code, words in message) == (2, True), message
        assert PluginRun.objects.count() == 0

    def test_params_not_fitting_run__exit_2_with_the_accepted_names(self, loaded):
        """Params run() does not accept are misuse: exit 2 naming what it accepts, no run."""
        code, message, _ = failing("runplugin", "ok", "--param", "colour=red")
        assert code == 2
        assert message.startswith("Params for plugin 'ok' do not fit its run(): unknown param")
        assert "run() accepts: no params" in message
        assert PluginRun.objects.count() == 0

    def test_refused__exit_1_with_reason(self, loaded):
        """A disabled plugin is refused with the reason, exit 1, no run."""
        services.plugin_disable(name="ok", note="broken upstream", actor="user:ops")
        code, message, _ = failing("runplugin", "ok")
        assert code == 1
        assert "is disabled by user:ops: broken upstream" in message


@pytest.mark.django_db
class TestRunPluginHostile:
    @pytest.mark.parametrize(
        ("args", "code", "status", "reason_start"),
        [
            (
                ["segfault"],
                1,
                "crashed",
                "Plugin 'segfault' crashed with signal SIGSEGV during run()",
            ),
            (
                ["memory_hog"],
                1,
                "crashed",
                "Plugin 'memory_hog' ran out of its 256 MB memory limit",
            ),
            (["forever"], 1, "timed_out", "Plugin 'forever' did not finish within its 2 s timeout"),
            (
                ["flaky", "--param", "fail=true"],
                1,
                "failed",
                "Plugin 'flaky' raised ConnectionError",
            ),
            (
                ["slow", "--param", "seconds=5", "--timeout", "0.5"],
                1,
                "timed_out",
                "Plugin 'slow' did",
            ),
        ],
    )
    def test_hostile_example__run_recorded_with_state_counters_event(
        self, settings, args, code, status, reason_start
    ):
        """Each hostile example run through runplugin is recorded: run, counters, state, event."""
        settings.PORTAL_PLUGIN_DIRS = [str(EXAMPLES)]
        name = args[0]
        pipeline.load_plugins(names=sorted({name, "hello"}), actor="test")
        warm_successes = 0
        if "--timeout" in args:
            # A first short run starts the warm host, so 0.5 s times the call, not a slow start.
            command("runplugin", name, "--param", "seconds=0")
            warm_successes = 1
        exit_code, message, out = failing("runplugin", *args, "--json")
        record = json.loads(out)
        assert (exit_code, record["status"]) == (code, status)
        assert record["reason"].startswith(reason_start), record["reason"]
        assert message == f"Run {record['id']} {status}: {record['reason']}"
        plugin = Plugin.objects.get(name=name)
        assert (plugin.state, plugin.reason) == (PluginState.FAILED, record["reason"])
        counters = (plugin.success_count, plugin.error_count, plugin.running_count)
        assert counters == (warm_successes, 1, 0)
        event = plugin.events.latest("id")
        assert (event.from_state, event.to_state, event.run_id, event.actor) == (
            PluginState.RUNNING,
            PluginState.FAILED,
            record["id"],
            "command:runplugin",
        )
        # The portal is unharmed: the next run of a healthy plugin just works.
        assert pipeline.run_plugin(name="hello", params={}, actor="test").status == "succeeded"


@pytest.mark.django_db(transaction=True)
@pytest.mark.portal_processes
class TestRunPluginProcess:
    def test_exit_codes__0_1_2_and_no_traceback(self, loaded):
        """From a shell: 0 on success, 1 for a failed run, 2 for misuse, never a traceback."""
        ok, failed, misuse = _in_parallel(
            ["runplugin", "ok"], ["runplugin", "fails"], ["runplugin", "ghost"]
        )
        assert (ok.returncode, failed.returncode, misuse.returncode) == (0, 1, 2)
        assert json.loads(ok.stdout) == {"fine": True}
        assert "Plugin 'fails' raised RuntimeError in run(): always" in failed.stderr
        assert "Plugin 'ghost' not found" in misuse.stderr
        for result in (ok, failed, misuse):
            assert "Traceback" not in result.stderr

    def test_kill_9_mid_run__reconciled_interrupted_once(self, settings):
        """A runplugin process killed mid-run leaves a run that reconciliation interrupts once."""
        settings.PORTAL_PLUGIN_DIRS = [str(EXAMPLES)]
        pipeline.load_plugins(names=["slow"], actor="test")
        process = subprocess.Popen(
            [sys.executable, "manage.py", "runplugin", "slow", "--param", "seconds=60"],
            cwd=ROOT,
            env=portal_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 30
            while not PluginRun.objects.filter(status=RunStatus.RUNNING).exists():
                assert process.poll() is None, "runplugin ended before its run started"
                assert time.monotonic() < deadline, "the run never started"
                time.sleep(0.1)
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        finally:
            _kill_group(process.pid)
        run = PluginRun.objects.get()
        assert run.status == RunStatus.RUNNING  # nobody finished it: the process is gone
        assert run.stale_after == timedelta(seconds=60)  # the command's limit, the default
        silent_since = timezone.now() - run.stale_after - timedelta(seconds=1)
        PluginRun.objects.filter(pk=run.pk).update(heartbeat_at=silent_since)
        assert [r.pk for r in pipeline.reconcile_interrupted(actor="system")] == [run.pk]
        assert pipeline.reconcile_interrupted(actor="system") == []
        run.refresh_from_db()
        plugin = Plugin.objects.get(name="slow")
        assert (run.status, plugin.error_count, plugin.running_count, plugin.state) == (
            RunStatus.INTERRUPTED,
            1,
            0,
            PluginState.FAILED,
        )
        assert run.reason == plugin.reason
        assert plugin.reason.startswith(
            f"Run {run.pk} of plugin 'slow' was interrupted: the process running it "
            f"({run.worker}) stopped responding, last seen at "
        )
        assert run.worker.endswith(f":{process.pid}")


NEEDS_VARIABLE = """
import os

requires = {"env": ["PORTAL_TEST_WEATHER_URL"]}
_url = None


def setup():
    global _url
    _url = os.environ["PORTAL_TEST_WEATHER_URL"]


def run():
    return {"url": _url, "now": os.environ["PORTAL_TEST_WEATHER_URL"]}
"""


@pytest.mark.django_db(transaction=True)
@pytest.mark.portal_processes
class TestRunPluginRequirementsAtCallTime:
    def test_variable_set_at_load_unset_in_the_runs_shell__unavailable_uncounted(
        self, plugins, monkeypatch
    ):
        """Loaded where its variable was set, run from a shell lacking it: UNAVAILABLE, no error."""
        plugins.add("weather", NEEDS_VARIABLE)
        monkeypatch.setenv("PORTAL_TEST_WEATHER_URL", "https://weather.example.com")
        assert command("loadplugins") == "weather  INITIALIZED\n"
        monkeypatch.delenv("PORTAL_TEST_WEATHER_URL")
        shell = manage("runplugin", "weather")
        reason = (
            "Environment variable 'PORTAL_TEST_WEATHER_URL' required by plugin 'weather' is not "
            "set (set it in the portal's environment, then reload the plugin)"
        )
        assert shell.returncode == 1, shell.stderr
        assert reason in shell.stderr
        assert "KeyError" not in shell.stderr and "Traceback" not in shell.stderr
        plugin = Plugin.objects.get(name="weather")
        assert (plugin.state, plugin.reason) == (PluginState.UNAVAILABLE, reason)
        assert (plugin.success_count, plugin.error_count, plugin.running_count) == (0, 0, 0)
        assert plugin.consecutive_failures == 0
        run = PluginRun.objects.get()
        assert (run.status, run.outcome) == (RunStatus.FAILED, "refused")
        assert shell.stderr.strip() == f"CommandError: Run {run.pk} failed: {run.reason}"
        # The same reason a load in that shell gives: the load and the run agree.
        assert failing("loadplugins")[::2] == (1, f"weather  UNAVAILABLE  {reason}\n")
        event = plugin.events.filter(run=run).latest("id")
        assert (event.from_state, event.to_state) == (PluginState.RUNNING, PluginState.UNAVAILABLE)

    def test_required_file_removed_after_a_warm_run__next_run_unavailable_uncounted(self, plugins):
        """A required file removed between two runs makes the second run UNAVAILABLE, uncounted."""
        (plugins.path / "labels.txt").write_text("cat\ndog\n")
        plugins.add(
            "labeller",
            "requires = {'files': ['labels.txt']}\ndef run(): return {'labels': 2}\n",
        )
        pipeline.load_plugins(actor="test")
        first = pipeline.run_plugin(name="labeller", params={}, actor="test")
        assert first.status == RunStatus.SUCCEEDED
        (plugins.path / "labels.txt").unlink()
        second = pipeline.run_plugin(name="labeller", params={}, actor="test")
        plugin = Plugin.objects.get(name="labeller")
        reason = (
            f"Model file not found: {plugins.path / 'labels.txt'} (declared in requires.files "
            "of plugin 'labeller'); put the file there, then reload the plugin"
        )
        assert (second.status, second.outcome) == (RunStatus.FAILED, "refused")
        assert (plugin.state, plugin.reason) == (PluginState.UNAVAILABLE, reason)
        assert (plugin.success_count, plugin.error_count, plugin.running_count) == (1, 0, 0)
        # Refused from now on, with that reason, until a reload finds the file again.
        code, message, _ = failing("runplugin", "labeller")
        assert (code, reason in message) == (1, True)
        (plugins.path / "labels.txt").write_text("cat\n")
        assert command("loadplugins", "labeller") == "labeller  INITIALIZED\n"


def _kill_group(pgid: int) -> None:
    """Whatever the killed command left behind (its sandbox hosts) goes too."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.django_db(transaction=True)
class TestRerunPlugins:
    def test_failed__reruns_failed_plugins_with_last_params(self, loaded):
        """--failed reruns each FAILED plugin with its last params and prints a summary."""
        loaded.add("echo", "def run(fail=False):\n    if fail: raise ValueError('no')\n")
        pipeline.load_plugins(names=["echo"], actor="test")
        pipeline.run_plugin(name="echo", params={"fail": True}, actor="test")
        pipeline.run_plugin(name="fails", params={}, actor="test")
        code, message, out = failing("rerunplugins", "--failed")
        assert code == 1
        assert message == "2 of 2 rerun(s) failed"
        lines = out.splitlines()
        assert {line.split(" ", 1)[1] for line in lines[:2]} == {"echo: failed", "fails: failed"}
        assert lines[2] == "PLUGIN  SUCCEEDED  FAILED  LAST REASON"
        assert lines[3].startswith("echo    0          1       Plugin 'echo' raised ValueError")
        assert lines[4].startswith("fails   0          1       Plugin 'fails' raised RuntimeError")
        assert lines[-1] == "2 rerun(s): 0 succeeded, 2 failed"
        assert PluginRun.objects.filter(plugin__name="echo").latest("id").params == {"fail": True}

    def test_all__every_runnable_plugin_succeeds_exit_0(self, plugins):
        """--all reruns every enabled plugin that can run; all succeeding exits 0."""
        plugins.add("a", "def run(): return 1\n")
        plugins.add("b", "def run(): return 2\n")
        plugins.add("gone", "import not_installed_x\ndef run(): pass\n")
        pipeline.load_plugins(actor="test")
        out = command("rerunplugins", "--all", "--concurrency", "2")
        assert out.splitlines()[-1] == "2 rerun(s): 2 succeeded, 0 failed"
        assert set(PluginRun.objects.values_list("plugin__name", flat=True)) == {"a", "b"}

    def test_terminal__progress_bar(self, loaded):
        """On a terminal the progress shows as a bar that fills up."""
        out = command("rerunplugins", "ok", stdout=_Terminal())
        assert out.startswith("\r[------------------------------] 0/1")
        assert "\r[##############################] 1/1\n" in out

    @pytest.mark.parametrize(
        ("args", "words"),
        [
            ([], "Name the plugins to rerun, or pass --failed or --all"),
            (["ghost"], "Plugin 'ghost' not found"),
            (["ok", "--concurrency", "0"], "--concurrency must be 1 or more"),
        ],
    )
    def test_misuse__exit_2(self, loaded, args, words):
        """Nothing selected, an unknown plugin or a bad concurrency exit 2."""
        code, message, _ = failing("rerunplugins", *args)
        assert (code, words in message) == (2, True), message


@pytest.mark.django_db
class TestPluginHealth:
    def test_all_enabled_available__exit_0_table(self, plugins):
        """Every enabled plugin available: exit 0; a disabled broken one does not count."""
        plugins.add("ok", "def run(): pass\n")
        plugins.add("yolo", "import no_such_torch\ndef run(): pass\n")
        pipeline.load_plugins(actor="test")
        services.plugin_disable(name="yolo", note="", actor="user:ops")
        lines = command("pluginhealth").splitlines()
        assert lines[0] == "NAME  STATE        ENABLED  OK/ERR  REASON"
        assert lines[1] == "ok    INITIALIZED  yes      0/0"
        assert lines[2].startswith("yolo  UNAVAILABLE  no       0/0     Missing Python module")

    def test_enabled_unavailable__exit_1_naming_it(self, loaded):
        """An enabled plugin that is not available makes the exit code 1."""
        pipeline.run_plugin(name="fails", params={}, actor="test")
        code, message, _ = failing("pluginhealth")
        assert (code, message) == (1, "1 enabled plugin(s) not available: fails")

    def test_json__same_records_as_the_api(self, loaded):
        """--json prints the selectors' health records, the ones the API serves."""
        printed = json.loads(command("pluginhealth", "--json"))
        expected = selectors.health_records()
        for record in printed + expected:
            record.pop("checked_at")
            record.pop("uptime_seconds")
        assert printed == expected

    def test_name__one_record(self, loaded):
        """With a name, only that plugin's record is printed."""
        assert json.loads(command("pluginhealth", "ok", "--json"))["name"] == "ok"

    def test_unknown_name__exit_2(self, loaded):
        """An unknown plugin name is misuse: exit 2."""
        code, message, _ = failing("pluginhealth", "ghost")
        assert code == 2
        assert message.startswith("Plugin 'ghost' not found")


@pytest.mark.django_db
class TestPrunePluginRuns:
    def test_prunes_old_runs_keeps_counters(self, make_plugin, finish_run):
        """Old finished runs are deleted and counted in the output; counters stay."""
        make_plugin("p")
        old, recent = finish_run("p"), finish_run("p")
        PluginRun.objects.filter(pk=old.pk).update(finished_at=timezone.now() - timedelta(days=9))
        out = command("prunepluginruns", "--older-than", "7", "--batch-size", "1")
        assert out == (
            "Deleted 1 finished run(s) older than 7 day(s); plugin counters are unchanged.\n"
        )
        assert list(PluginRun.objects.values_list("pk", flat=True)) == [recent.pk]
        assert Plugin.objects.get(name="p").success_count == 2

    @pytest.mark.parametrize(
        ("args", "words"),
        [
            (["--older-than", "-1"], "--older-than must be a number of days from 0 to 36500"),
            (["--older-than", "1", "--batch-size", "0"], "--batch-size must be from 1 to 10000"),
            (["--older-than", "nan"], "--older-than must be a number of days from 0 to 36500"),
            (["--older-than", "inf"], "--older-than must be a number of days from 0 to 36500"),
            (["--older-than", "1e12"], "--older-than must be a number of days from 0 to 36500"),
            (["--older-than", "36501"], "--older-than must be a number of days from 0 to 36500"),
            (["--older-than", "1", "--batch-size", "10" * 12], "--batch-size must be from 1 to"),
        ],
    )
    def test_misuse__exit_2(self, args, words):
        """Negative, non-finite or huge ages and empty or huge batches are misuse: exit 2."""
        code, message, _ = failing("prunepluginruns", *args)
        assert (code, words in message) == (2, True)

    def test_missing_age__parser_error(self):
        """--older-than is required; the parser says so."""
        _, message, _ = failing("prunepluginruns")
        assert "the following arguments are required: --older-than" in message


DEEP_JSON = "[" * 5000 + "]" * 5000


@pytest.mark.django_db(transaction=True)
@pytest.mark.portal_processes
class TestHostileArguments:
    """Real `manage.py` processes given what a shell can pass: exit 2, a message, no traceback."""

    @pytest.mark.parametrize(
        ("args", "words"),
        [
            (["runplugin", b"\xff"], "The name argument '\\udcff' is not UTF-8 text (b'\\xff')"),
            (["runplugin", "ok", "--param", b"k=\xff"], "The param argument 'k=\\udcff' is not"),
            (["rerunplugins", b"ok\xfe"], "The names argument 'ok\\udcfe' is not UTF-8 text"),
            (["pluginhealth", b"\xff"], "The name argument '\\udcff' is not UTF-8 text"),
            (["loadplugins", b"\xc3"], "The names argument '\\udcc3' is not UTF-8 text"),
            (["issuetoken", b"\xff"], "The username argument '\\udcff' is not UTF-8 text"),
            (["runplugin", "ok", "--params-json", DEEP_JSON], "--params-json is nested deeper"),
            (["runplugin", "ok", "--param", f"k={DEEP_JSON}"], "--param k is nested deeper"),
            (
                ["runplugin", "ok", "--params-json", '{"k": ' + "[" * 101 + "]" * 101 + "}"],
                "A parameter is nested deeper than the 100 levels",
            ),
            (
                ["runplugin", "ok", "--params-json", r'{"text": "\udcff"}'],
                "Invalid params: params.text: contains a lone surrogate (\\udcff)",
            ),
            (
                ["runplugin", "ok", "--params-json", r'{"a": {"b": ["x\u0000"]}}'],
                "Invalid params: params.a.b[0]: contains a NUL character",
            ),
        ],
        ids=[
            "name",
            "param",
            "rerun name",
            "health name",
            "load name",
            "token user",
            "deep json",
            "deep param",
            "over 100 levels",
            "surrogate",
            "nul",
        ],
    )
    def test_bad_argument__exit_2_with_message_no_traceback(self, loaded, args, words):
        """Bad text or a too-deep value on the command line: exit 2 and the reason, no run."""
        result = manage(*args)
        assert result.returncode == 2, result.stderr
        assert words in result.stderr
        assert "Traceback" not in result.stderr
        assert PluginRun.objects.count() == 0

    def test_rerun__stored_bad_params_exit_2_naming_the_plugin(self, loaded):
        """Last params stored by an older version with a lone surrogate: not rerun, exit 2."""
        if connection.vendor != "sqlite":
            pytest.skip("PostgreSQL cannot store a lone surrogate in jsonb at all")
        services.run_queue(name="echo", params={"text": "\udcff"}, actor="old version")
        result = manage("rerunplugins", "echo")
        assert result.returncode == 2, result.stderr
        assert "Cannot rerun 'echo' with its last params, params.text: contains a lone" in (
            result.stderr
        )
        assert "Traceback" not in result.stderr
        assert PluginRun.objects.count() == 1
