"""The house-rule audit (tools/audit/): each rule fires on a broken snippet, not on good code."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tools import audit

ROOT = Path(__file__).resolve().parents[2]
PLUGINS = frozenset({"ocr_plugin", "crashy"})


def found(source: str, path: str = "plugins_app/views.py") -> list[tuple[int, str]]:
    """(line, rule) for every violation the audit reports in `source` at `path`."""
    violations = audit.audit_source(textwrap.dedent(source), path, plugin_names=PLUGINS)
    return [(violation.line, violation.rule) for violation in violations]


class TestDynamicImportRule:
    @pytest.mark.parametrize(
        "call",
        [
            "importlib.import_module(name)",
            "import_module(name)",
            "__import__(name)",
            "importlib.util.spec_from_file_location(name, path)",
            "spec_from_file_location(name, path)",
            "runpy.run_path(path)",
            "runpy.run_module(name)",
            "import_string(dotted)",
            "SourceFileLoader(name, path)",
            "spec.loader.exec_module(module)",
            "exec(compile(source, path, 'exec'))",
            "pkgutil.walk_packages([path])",
        ],
    )
    def test_loading_code_by_name_or_path__flagged(self, call):
        """Every way of importing or executing code by a runtime name or path is reported."""
        source = f"""\
            import importlib
            import importlib.util
            import pkgutil
            import runpy
            from importlib import import_module
            from importlib.util import spec_from_file_location
            from importlib.machinery import SourceFileLoader
            from django.utils.module_loading import import_string

            def load(name, path, dotted, spec, module, source):
                return {call}
            """
        assert found(source) == [(11, "PORTAL001")]

    def test_import_under_an_alias__flagged(self):
        """Renaming importlib does not hide the import."""
        source = """\
            import importlib as il
            from importlib import import_module as grab

            def load(name):
                il.import_module(name)
                return grab(name)
            """
        assert found(source) == [(5, "PORTAL001"), (6, "PORTAL001")]

    def test_literal_plugin_name__flagged(self):
        """A literal name of a module in a plugin directory is plugin code too."""
        source = """\
            import importlib
            importlib.import_module("ocr_plugin.models")
            """
        assert found(source) == [(2, "PORTAL001")]

    def test_static_import_of_plugin_module__flagged(self):
        """`import ocr_plugin` and `from crashy import run` import plugin code into the portal."""
        source = """\
            import ocr_plugin
            from crashy import run
            """
        assert found(source, "tests/test_x.py") == [(1, "PORTAL001"), (2, "PORTAL001")]

    def test_entry_point_load__flagged(self):
        """Loading an installed plugin's entry point imports it; its string value is the way."""
        source = """\
            from importlib.metadata import entry_points

            def discover():
                for ep in entry_points(group="portal.plugins"):
                    yield ep.load()
                yield entry_points(group="portal.plugins")["x"].load()
            """
        assert found(source) == [(5, "PORTAL001"), (6, "PORTAL001")]

    def test_legitimate_imports__clean(self):
        """Literal non-plugin names, find_spec, reload, json.load and entry-point values pass."""
        source = """\
            import importlib
            import importlib.util
            import json
            import pkgutil
            from importlib.metadata import entry_points

            def check(path, requirement):
                importlib.import_module("portal.settings")
                importlib.util.find_spec(requirement)
                importlib.reload(json)
                names = [module.name for module in pkgutil.iter_modules([path])]
                exec("x = 1")
                targets = [ep.value for ep in entry_points(group="portal.plugins")]
                with open(path) as handle:
                    return json.load(handle), targets, names
            """
        assert found(source) == []

    def test_sandbox_and_plugin_dirs__exempt(self):
        """The sandbox imports plugins by design; plugin code and migrations are not audited."""
        source = """\
            import importlib
            module = importlib.import_module(target)
            module.setup()
            """
        assert found(source, "sandbox/child.py") == []
        assert found(source, "examples/plugins/ocr_plugin.py") == []
        assert found(source, "plugins_app/migrations/0002_data.py") == []
        assert found(source, "plugins_app/pipeline.py") == [(2, "PORTAL001"), (3, "PORTAL002")]

    def test_plugin_side_loader__exempt_rest_of_the_contract__not(self):
        """The plugin-side loader imports plugins (in the sandbox); the contract's constants
        are portal code too, so the rules apply to them."""
        source = """\
            import importlib
            module = importlib.import_module(target)
            module.setup()
            """
        assert found(source, "plugin_contract/loader.py") == []
        assert found(source, "plugin_contract/__init__.py") == [(2, "PORTAL001"), (3, "PORTAL002")]


class TestPluginEntryPointRule:
    def test_walrus_bound_plugin__flagged(self):
        """A name bound by := to an unknown call is not trusted either."""
        source = """\
            def go(find):
                if (plugin := find("ocr")) is not None:
                    plugin.setup()
            """
        assert found(source) == [(3, "PORTAL002")]

    @pytest.mark.parametrize(
        "code",
        [
            "plugin.run(params)",
            "module.setup()",
            "plugins[name].run()",
            "self.module.setup()",
            "getattr(module, 'setup')()",
            "run()",
        ],
    )
    def test_direct_plugin_call__flagged(self, code):
        """run/setup on an object of unknown origin (a parameter, a lookup) is reported."""
        source = f"""\
            class Loader:
                def go(self, plugin, module, plugins, name, run):
                    return {code}
            """
        assert (3, "PORTAL002") in found(source)

    def test_dynamically_imported_module__flagged_twice(self):
        """The import and the call are both reported: two broken rules."""
        source = """\
            import importlib
            importlib.import_module(name).run()
            """
        assert found(source) == [(2, "PORTAL001"), (2, "PORTAL002")]

    def test_library_run_and_setup__clean(self):
        """subprocess.run, asyncio.run, django.setup, own methods and library objects pass."""
        source = """\
            import asyncio
            import subprocess
            import threading

            import django
            import schemathesis
            from subprocess import run

            from plugins_app import services

            schema = schemathesis.openapi.from_dict({})


            def main(coro):
                django.setup()
                subprocess.run(["true"], check=True)
                run(["true"], check=True)
                asyncio.run(coro)
                schema.as_state_machine().run()
                services.run_queue(name="x", params={}, actor="system")
                threading.Thread(target=main).run()


            class Worker(threading.Thread):
                def run(self):
                    super().run()
                    self.setup()

                def setup(self):
                    return None
            """
        assert found(source) == []


class TestRegistryWriteRule:
    @pytest.mark.parametrize(
        "code",
        [
            "plugin.state = 'FAILED'",
            "plugin.reason = text",
            "plugin.success_count += 1",
            "run.reason = text",
            "plugin.error_count, plugin.running_count = 0, 0",
            "setattr(plugin, 'consecutive_failures', 0)",
            "Plugin.objects.filter(name=name).update(state='FAILED')",
            "queryset.update(success_count=0)",
            "Plugin.objects.create(name=name, reason=text)",
            "PluginEvent.objects.create(plugin=plugin, reason=text)",
            "Plugin.objects.update_or_create(name=name, defaults={'state': 'LOADED'})",
            "Plugin(name=name, state='FAILED').save()",
        ],
    )
    def test_write_outside_services__flagged(self, code):
        """Each way of writing state, a counter or a reason outside the services is reported."""
        source = f"""\
            from plugins_app.models import Plugin, PluginEvent

            def meddle(plugin, run, queryset, name, text):
                {code}
            """
        assert set(found(source, "plugins_app/admin.py")) == {(4, "PORTAL003")}

    def test_tests__not_exempt(self):
        """Tests set up rows through the services too: a test assigning state is reported."""
        source = """\
            def test_x(make_plugin):
                plugin = make_plugin()
                plugin.state = "FAILED"
                plugin.save()
            """
        assert found(source, "tests/test_x.py") == [(3, "PORTAL003")]

    def test_model_method__flagged(self):
        """`self.state = ...` inside a model class is a registry write."""
        source = """\
            from django.db import models

            class Plugin(models.Model):
                def fail(self):
                    self.state = "FAILED"
            """
        assert found(source, "plugins_app/models.py") == [(5, "PORTAL003")]

    def test_services_module__exempt(self):
        """The service module is the one place that writes the registry."""
        source = """\
            def run_finish(plugin):
                Plugin.objects.filter(pk=plugin.pk).update(state="FAILED", error_count=1)
            """
        assert found(source, "plugins_app/services/runs.py") == []

    def test_legitimate_code__clean(self):
        """Dicts, other fields, reads and non-model objects are not registry writes."""
        source = """\
            from dataclasses import dataclass
            from typing import Any

            from plugins_app.models import PluginRun


            class SandboxGone(Exception):
                def __init__(self, reason):
                    self.reason = reason
                    self.state = "gone"


            def heartbeat_setup(run_id, old, record):
                PluginRun.objects.filter(pk=run_id).update(heartbeat_at=old)
                payload = {"state": "FAILED"}
                payload.update(state="UNKNOWN", reason="the database is down")
                record_copy: dict[str, Any] = dict(record)
                record_copy.update(stale=True, state="FAILED")
                quoted: "dict[str, Any]" = record
                quoted.update(state="FAILED")
                dict(record).update(reason="x")
                assert record["state"] == "FAILED"
                return payload
            """
        assert found(source, "plugins_app/api/views.py") == []

    def test_benchmark_seed_data__exempt(self):
        """Benchmarks seed rows in bulk to time reads; they are not portal code."""
        source = "Plugin.objects.bulk_create([Plugin(name='p1', state='FAILED', reason=r)])\n"
        assert found(source, "benchmarks/admin_bench.py") == []
        assert found(source, "plugins_app/admin.py") == [(1, "PORTAL003")]

    def test_sandbox_without_django__exempt_with_django__not(self):
        """The sandbox's own objects may have a state; once it imports Django the rule applies."""
        source = "def mark(host):\n    host.state = 'warm'\n"
        assert found(source, "sandbox/hosts.py") == []
        assert found("import django\n" + source, "sandbox/hosts.py") == [(3, "PORTAL003")]


class TestReasonRule:
    @pytest.mark.parametrize(
        "value",
        [
            '"Plugin crashed"',
            'f"Plugin {name} crashed"',
            '"Plugin %s crashed" % name',
            '"Plugin {} crashed".format(name)',
            'text or "unknown"',
            'text if text else f"{name} failed"',
            '"Plugin " + name + " failed"',
            '_("Plugin failed to start")',
        ],
    )
    def test_hard_coded_reason__flagged(self, value):
        """A literal or f-string reason= in plugins_app is reported."""
        source = f"""\
            from plugins_app import services

            def fail(name, text):
                services.plugin_mark_failed(name=name, reason={value}, actor="system")
            """
        assert found(source, "plugins_app/pipeline.py") == [(4, "PORTAL004")]

    def test_reason_from_builder_or_variable__clean(self):
        """A reason built in reasons.py, carried in a variable, or cleared with "" passes."""
        source = """\
            from django.http import HttpResponse
            from plugins_app import reasons, services

            def fail(name, result):
                why = reasons.plugin_disabled(plugin=name, by="user:ann", note="")
                services.plugin_mark_failed(name=name, reason=why, actor="system")
                services.RunOutcome(status="failed", reason=result.error)
                interrupted = reasons.run_interrupted(
                    plugin=name, run_id=1, worker="w", last_seen=None
                )
                built = services.plugin_mark_failed(name=name, reason=interrupted, actor="s")
                services.RunOutcome(status="succeeded", reason="")
                return built, HttpResponse(status=503, reason="Service Unavailable")
            """
        assert found(source, "plugins_app/pipeline.py") == []

    def test_outside_plugins_app_and_in_reasons__not_checked(self):
        """reasons.py builds literals by design; tests pass literal reasons to fixtures."""
        source = 'services.plugin_mark_failed(name="x", reason="Plugin crashed", actor="t")\n'
        assert found(source, "plugins_app/reasons.py") == []
        assert found(source, "tests/test_x.py") == []


class TestInterfaceImportRule:
    @pytest.mark.parametrize(
        "path",
        [
            "plugins_app/admin.py",
            "plugins_app/admin/history.py",
            "plugins_app/admin_display.py",
            "plugins_app/api/views.py",
            "plugins_app/management/commands/runplugin.py",
        ],
    )
    def test_interface_importing_sandbox__flagged(self, path):
        """The admin, the API and the commands may not reach into sandbox/, even lazily."""
        source = """\
            import sandbox
            import sandbox.limits as limits
            from sandbox import Outcome
            from sandbox.result import SandboxResult

            def handle():
                from sandbox import run_plugin_sandboxed
                return run_plugin_sandboxed
            """
        assert found(source, path) == [(line, "PORTAL005") for line in (1, 2, 3, 4, 7)]

    def test_registry_code_and_lookalikes__clean(self):
        """The pipeline runs the sandbox; interfaces take its values from plugins_app."""
        assert found("from sandbox import Outcome\n", "plugins_app/pipeline.py") == []
        assert found("from sandbox import Outcome\n", "tests/test_x.py") == []
        source = """\
            import sandboxed_thing
            from plugins_app.models import RunOutcomeKind
            from plugins_app import pipeline
            """
        assert found(source, "plugins_app/admin/history.py") == []


def write_tree(root: Path, files: dict[str, str]) -> None:
    for relpath, source in files.items():
        target = root / relpath
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(textwrap.dedent(source))


# Two modules importing each other, one of them lazily.
CYCLE = {
    "plugins_app/__init__.py": "",
    "plugins_app/runner.py": "from plugins_app.pool import submit\n",
    "plugins_app/pool.py": """\
        def submit(job):
            from plugins_app import runner
            return runner
        """,
}


class TestImportCycleRule:
    def cycles(self, root: Path, **kwargs) -> list[str]:
        return [str(v) for v in audit.audit_paths([root], root, **kwargs)]

    def test_cycle__reported_with_its_path(self, tmp_path):
        """Two modules that import each other, even inside a function, are one cycle."""
        write_tree(tmp_path, CYCLE)
        assert self.cycles(tmp_path) == [
            "plugins_app/pool.py:2: PORTAL006 import cycle: plugins_app.pool → "
            "plugins_app.runner → plugins_app.pool (break it: hand the callable in, or move "
            "what both need into a module of its own)"
        ]

    def test_longer_cycle_through_relative_and_package_imports__reported(self, tmp_path):
        """`from . import x`, `import a.b` and `from a import b` all count as imports of b."""
        write_tree(
            tmp_path,
            {
                "portal/__init__.py": "",
                "portal/a.py": "from . import b\n",
                "portal/b.py": "import portal.c\n",
                "portal/c.py": "from portal import a\n",
            },
        )
        (violation,) = self.cycles(tmp_path)
        assert "portal.a → portal.b → portal.c → portal.a" in violation

    def test_module_importing_from_its_own_package__cycle(self, tmp_path):
        """A module taking a name from the package __init__ that imports it closes a circle."""
        write_tree(
            tmp_path,
            {
                "plugins_app/__init__.py": "",
                "plugins_app/admin/__init__.py": "from plugins_app.admin import history\nCAP = 1\n",
                "plugins_app/admin/history.py": "from plugins_app.admin import CAP\n",
            },
        )
        (violation,) = self.cycles(tmp_path)
        assert "plugins_app.admin → plugins_app.admin.history → plugins_app.admin" in violation

    def test_acyclic_imports__clean(self, tmp_path):
        """A package importing its modules, type-only imports and other packages: no cycle."""
        write_tree(
            tmp_path,
            {
                "plugins_app/__init__.py": "",
                "plugins_app/admin/__init__.py": "from plugins_app.admin import history\n",
                "plugins_app/admin/history.py": "from plugins_app.admin.display import badge\n",
                "plugins_app/admin/display.py": """\
                    from typing import TYPE_CHECKING
                    if TYPE_CHECKING:
                        from plugins_app.admin.history import RunAdmin
                    def badge(): ...
                    """,
                "tests/test_a.py": "from plugins_app.admin import history\n",
                "tests/test_b.py": "from tests.test_a import history\n",
            },
        )
        assert self.cycles(tmp_path) == []

    def test_allowed_cycle__silent_and_stale_exception__reported(self, tmp_path):
        """The known exception silences exactly its cycle; once the cycle is gone it is named."""
        write_tree(tmp_path, CYCLE)
        allowed = frozenset({frozenset({"plugins_app.pool", "plugins_app.runner"})})
        assert self.cycles(tmp_path, allowed_cycles=allowed) == []
        write_tree(tmp_path, {"plugins_app/pool.py": "def submit(job):\n    return job\n"})
        write_tree(tmp_path, {"tools/audit/cycles.py": "ALLOWED_IMPORT_CYCLES = ...\n"})
        (stale,) = self.cycles(tmp_path, allowed_cycles=allowed)
        assert stale.startswith("tools/audit/cycles.py:1: PORTAL006 allowed import cycle")
        assert "plugins_app.pool, plugins_app.runner no longer exists: remove it" in stale

    def test_allowed_pair_inside_a_larger_cycle__reported(self, tmp_path):
        """The exception covers its own modules only: a third module joining the circle shows."""
        write_tree(
            tmp_path,
            {
                **CYCLE,
                "plugins_app/runner.py": "import plugins_app.pool\nimport plugins_app.z\n",
                "plugins_app/z.py": "from plugins_app import runner\n",
            },
        )
        allowed = frozenset({frozenset({"plugins_app.pool", "plugins_app.runner"})})
        (violation,) = self.cycles(tmp_path, allowed_cycles=allowed)
        assert "PORTAL006 import cycle: plugins_app.pool → plugins_app.runner" in violation

    def test_cycle__reported_only_when_one_of_its_files_is_audited(self, tmp_path):
        """Pre-commit passes the changed files: a cycle is reported for its own files."""
        write_tree(tmp_path, {**CYCLE, "portal/__init__.py": "", "portal/urls.py": ""})
        audited = [tmp_path / "portal" / "urls.py"]
        assert audit.audit_paths(audited, tmp_path) == []
        audited = [tmp_path / "plugins_app" / "runner.py"]
        assert [v.rule for v in audit.audit_paths(audited, tmp_path)] == ["PORTAL006"]

    def test_this_repository__has_no_import_cycle(self):
        """The project's own packages import each other in one direction only, none excused."""
        assert audit.import_cycles(audit.import_graph(ROOT)) == []
        assert frozenset() == audit.ALLOWED_IMPORT_CYCLES


class TestSuppressions:
    def test_explained_suppression__silences_that_rule_on_that_line(self):
        """A suppression with a why silences its rule on its statement only."""
        source = """\
            import importlib

            def load(name):
                a = importlib.import_module(name)  # audit: allow PORTAL001 a backend, not a plugin
                b = importlib.import_module(name)
                return a, b
            """
        assert found(source) == [(5, "PORTAL001")]

    def test_suppression_inside_multiline_call__counts(self):
        """The comment may sit on any line of the flagged call."""
        source = """\
            import importlib
            module = importlib.import_module(
                name,  # audit: allow PORTAL001 loads a Django storage backend by dotted path
            )
            """
        assert found(source) == []

    @pytest.mark.parametrize(
        "comment",
        [
            "# audit: allow PORTAL001",
            "# audit: allow PORTAL001 because",
            "# audit: allow PORTAL777 made up rule id here",
            "# audit: allow everything please",
        ],
    )
    def test_suppression_without_why_or_rule__reported_and_ignored(self, comment):
        """A bare or unknown suppression silences nothing and is itself reported."""
        source = f"import importlib\nimportlib.import_module(name)  {comment}\n"
        assert found(source) == [(2, "PORTAL001"), (2, "PORTAL009")]

    def test_suppression_for_another_rule__silences_nothing(self):
        """A suppression names its rule: it does not hide a different one."""
        source = (
            "import importlib\n"
            "importlib.import_module(n)  # audit: allow PORTAL003 wrong rule named on purpose\n"
        )
        assert found(source) == [(2, "PORTAL001"), (2, "PORTAL009")]

    def test_stale_suppression__reported(self):
        """A suppression on a line that breaks no rule is reported, so none goes stale."""
        source = "x = 1  # audit: allow PORTAL002 this used to call plugin.run directly\n"
        assert found(source) == [(1, "PORTAL009")]

    def test_suppression_text_in_a_string__not_a_suppression(self):
        """Only real comments suppress; the same words in a string do not."""
        source = (
            "import importlib\n"
            'importlib.import_module(n); s = "# audit: allow PORTAL001 in a string literal"\n'
        )
        assert found(source) == [(2, "PORTAL001")]


class TestCommandLine:
    def run(self, *args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "tools.audit", *args],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )

    def test_tree_with_violations__exit_1_with_file_line_rule(self, tmp_path):
        """Each violation is one `file:line: RULE message` line; the exit status is 1."""
        (tmp_path / "plugins_app").mkdir()
        (tmp_path / "plugins_app" / "views.py").write_text(
            "import importlib\n\n\ndef view(name):\n    importlib.import_module(name).run()\n"
        )
        (tmp_path / "tests").mkdir()
        (tmp_path / "tests" / "test_x.py").write_text("def test(p):\n    p.state = 'FAILED'\n")
        (tmp_path / "examples" / "plugins").mkdir(parents=True)
        (tmp_path / "examples" / "plugins" / "broken.py").write_text("def (:\n")
        result = self.run("--root", str(tmp_path))
        assert result.returncode == 1, result.stderr
        lines = result.stdout.splitlines()
        assert [line.split(" ")[0:2] for line in lines] == [
            ["plugins_app/views.py:5:", "PORTAL001"],
            ["plugins_app/views.py:5:", "PORTAL002"],
            ["tests/test_x.py:2:", "PORTAL003"],
        ]
        assert "3 house-rule violation(s)" in result.stderr

    def test_plugin_directory_names__drive_static_import_rule(self, tmp_path):
        """A module in examples/plugins/ may not be imported statically by portal code."""
        (tmp_path / "examples" / "plugins").mkdir(parents=True)
        (tmp_path / "examples" / "plugins" / "yolo.py").write_text("def run():\n    pass\n")
        (tmp_path / "examples" / "plugins" / "vision").mkdir()
        (tmp_path / "examples" / "plugins" / "vision" / "__init__.py").write_text("")
        (tmp_path / "portal").mkdir()
        (tmp_path / "portal" / "urls.py").write_text("from yolo import run\nimport vision.nets\n")
        result = self.run("--root", str(tmp_path))
        lines = result.stdout.splitlines()
        assert [line.split(" static import")[0] for line in lines] == [
            "portal/urls.py:1: PORTAL001",
            "portal/urls.py:2: PORTAL001",
        ]

    def test_syntax_error__reported_not_a_traceback(self, tmp_path):
        """A file that does not parse is a violation with its line, not a crash."""
        (tmp_path / "bad.py").write_text("x = 1\ndef broken(:\n")
        result = self.run("--root", str(tmp_path))
        assert result.returncode == 1
        assert result.stdout.startswith("bad.py:2: PORTAL000 cannot parse")
        assert "Traceback" not in result.stderr

    def test_clean_tree__exit_0_and_silent(self, tmp_path):
        """Clean code passes with no output."""
        (tmp_path / "ok.py").write_text("import subprocess\nsubprocess.run(['true'])\n")
        result = self.run("--root", str(tmp_path))
        assert (result.returncode, result.stdout) == (0, "")

    def test_explicit_paths__only_python_files_audited(self, tmp_path):
        """Given files (as pre-commit passes them), each .py one is audited, others skipped."""
        (tmp_path / "bad.py").write_text("import importlib\nimportlib.import_module(x)\n")
        (tmp_path / "notes.txt").write_text("importlib.import_module(x)\n")
        result = self.run(
            "--root", str(tmp_path), str(tmp_path / "bad.py"), str(tmp_path / "notes.txt")
        )
        assert result.stdout.splitlines()[0].startswith("bad.py:2: PORTAL001")
        assert len(result.stdout.splitlines()) == 1

    def test_missing_root__exit_2_with_message(self, tmp_path):
        """A --root that is not a directory is misuse."""
        result = self.run("--root", str(tmp_path / "nowhere"))
        assert result.returncode == 2
        assert "is not a directory" in result.stderr

    def test_missing_path__exit_2_with_message(self):
        """Misuse is exit 2 with a message, never a traceback."""
        result = self.run("no/such/file.py")
        assert result.returncode == 2
        assert "no such file or directory: no/such/file.py" in result.stderr
        assert "Traceback" not in result.stderr

    def test_list_rules__names_every_rule(self):
        """--list-rules prints every rule id with its meaning."""
        result = self.run("--list-rules")
        assert result.returncode == 0
        assert [line.split(" ")[0] for line in result.stdout.splitlines()] == list(audit.RULES)


class TestRepository:
    def test_this_repository__clean(self):
        """The code on this branch keeps every house rule the audit checks."""
        assert [str(v) for v in audit.audit_paths([ROOT], ROOT)] == []
