"""The run-time plugin guard: plugin code in the portal process is found however it got in."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PLUGIN = "def setup():\n    pass\n\n\ndef run(**params):\n    return params\n"


def outer_environment() -> dict[str, str]:
    """This process's environment (coverage settings included) minus its plugin directories."""
    return {key: value for key, value in os.environ.items() if key != "PORTAL_PLUGIN_DIRS"}


def guarded(tmp_path: Path, body: str, **env: str) -> list[str]:
    """Run `body` in a fresh interpreter with a guard on tmp_path/plugins; its violations."""
    plugins = tmp_path / "plugins"
    plugins.mkdir(exist_ok=True)
    (plugins / "yolo.py").write_text(PLUGIN)
    script = (
        textwrap.dedent(
            """\
        import importlib, importlib.util, os, sys
        from tools.plugin_guard import PluginCodeGuard
        plugins = sys.argv[1]
        guard = PluginCodeGuard([plugins], names={"ocr_demo"})
        guard.add_roots_from_env()
        guard.install()
        """
        )
        + textwrap.dedent(body)
        + "\nfor line in guard.violations():\n    print(line)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(plugins)],
        cwd=ROOT,
        env={**outer_environment(), "PYTHONPATH": str(ROOT), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


class TestPluginCodeGuard:
    def test_import_under_another_name_outside_sys_modules__found(self, tmp_path):
        """Loading a plugin file under an unrelated name, never in sys.modules, is still found."""
        lines = guarded(
            tmp_path,
            """\
            spec = importlib.util.spec_from_file_location("innocent", f"{plugins}/yolo.py")
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            del module, spec
            """,
        )
        assert lines == [f"executed plugin code from {tmp_path.resolve()}/plugins/yolo.py"]

    def test_plain_import__found_as_module_and_execution(self, tmp_path):
        """A plugin directory on sys.path and a plain import: both traces are reported."""
        lines = guarded(tmp_path, "sys.path.insert(0, plugins)\nimport yolo\n")
        where = f"{tmp_path.resolve()}/plugins/yolo.py"
        assert lines == [
            f"executed plugin code from {where}",
            f"module 'yolo' from {where} is loaded",
        ]

    def test_exec_of_plugin_source__found(self, tmp_path):
        """exec(compile(...)) of a plugin file counts as running plugin code."""
        body = "path = f'{plugins}/yolo.py'\nexec(compile(open(path).read(), path, 'exec'), {})\n"
        assert len(guarded(tmp_path, body)) == 1

    def test_plugin_dirs_from_environment__guarded(self, tmp_path):
        """A directory listed in PORTAL_PLUGIN_DIRS is a plugin root too."""
        extra = tmp_path / "more"
        extra.mkdir()
        (extra / "other.py").write_text(PLUGIN)
        body = f"sys.path.insert(0, {str(extra)!r})\nimport other\n"
        lines = guarded(tmp_path, body, PORTAL_PLUGIN_DIRS=f"/nonexistent{os.pathsep}{extra}")
        assert f"module 'other' from {extra.resolve()}/other.py is loaded" in lines

    def test_module_named_like_example_plugin__found(self, tmp_path):
        """A copy of an example plugin elsewhere is caught by its name."""
        elsewhere = tmp_path / "copy"
        elsewhere.mkdir()
        (elsewhere / "ocr_demo.py").write_text(PLUGIN)
        body = f"sys.path.insert(0, {str(elsewhere)!r})\nimport ocr_demo\n"
        assert guarded(tmp_path, body) == ["module 'ocr_demo' is named like an example plugin"]

    def test_plugin_run_in_forked_child__not_counted(self, tmp_path):
        """What a sandbox child does is the sandbox's business: only this process counts."""
        body = """\
            pid = os.fork()
            if pid == 0:
                sys.path.insert(0, plugins)
                import yolo
                os._exit(0)
            os.waitpid(pid, 0)
            """
        assert guarded(tmp_path, body) == []

    def test_portal_code_only__clean(self, tmp_path):
        """Importing the portal and libraries, and reading plugin source, is clean."""
        body = """\
            import ast, json, weakref
            import plugins_app.reasons
            ast.parse(open(f"{plugins}/yolo.py").read())
            class Thing:
                pass
            thing = Thing()
            dead = [weakref.proxy(thing)]  # a dead proxy in gc must not break the sweep
            del thing
            """
        assert guarded(tmp_path, body) == []


class TestSessionFixture:
    def test_suite_that_imports_a_plugin__fails_at_session_end(self, tmp_path):
        """The suite's session fixture turns a plugin import in a test into a failing run."""
        test_file = tmp_path / "test_leaky.py"
        test_file.write_text(
            textwrap.dedent(
                """\
                import importlib.util

                def test_loads_plugin_in_process(tmp_path):
                    plugin = tmp_path / "sneaky.py"
                    plugin.write_text("def run():\\n    return 1\\n")
                    spec = importlib.util.spec_from_file_location("harmless", plugin)
                    spec.loader.exec_module(importlib.util.module_from_spec(spec))
                """
            )
        )
        # The suite's own conftest, reused as is: its hooks, fixtures and session guard.
        (tmp_path / "conftest.py").write_text(
            "from tests.conftest import *  # noqa: F403\n"
            "from tests.conftest import pytest_configure, pytest_runtest_call  # noqa: F401\n"
        )
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "-p",
                "no:cacheprovider",
                # Only what the suite's conftest needs (pytest-django): the others add seconds.
                *("-p", "django", "-p", "timeout"),
                "--rootdir",
                str(ROOT),
                "-c",
                str(ROOT / "pyproject.toml"),
                f"--basetemp={tmp_path / 'inner'}",
                "-q",
                str(test_file),
            ],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT), "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 1, result.stdout + result.stderr
        assert "1 passed, 1 error" in result.stdout
        assert "Plugin code ran in the portal (test) process" in result.stdout
        assert "sneaky.py" in result.stdout
