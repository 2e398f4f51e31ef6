"""Plugins with Python environments of their own: declared, probed, loaded and run with them."""

from __future__ import annotations

import glob
import subprocess
import sys
from pathlib import Path

import pytest

from plugins_app import pipeline
from plugins_app.models import Plugin, PluginState, RunStatus

pytestmark = pytest.mark.django_db

ACTOR = "user:tester"
# The interpreter the portal's venv was made from: CPython 3.11+, outside that venv.
BASE_PYTHON = str(Path(getattr(sys, "_base_executable", sys.executable)).resolve())
OLD_PYTHONS = sorted(glob.glob("/root/.pyenv/versions/3.10*/bin/python3.10"))


def make_env(root: Path, module_source: str) -> str:
    """A venv without pip (fast) whose site-packages holds module `onlyhere`; its python."""
    subprocess.run([BASE_PYTHON, "-m", "venv", "--without-pip", str(root)], check=True)
    (site,) = root.glob("lib/python3*/site-packages")
    (site / "onlyhere.py").write_text(module_source)
    return str(root / "bin" / "python")


PLUGIN = """
python = "{python}"
requires = {{"modules": ["onlyhere"]}}
import sys
def run():
    import onlyhere
    return {{"value": onlyhere.VALUE, "executable": sys.executable, "prefix": sys.prefix}}
"""


class TestOwnEnvironment:
    def test_plugin_with_own_venv__loads_and_runs_with_it(self, plugins, tmp_path):
        """A module that only the plugin's venv has: INITIALIZED, and the run uses that venv."""
        python = make_env(tmp_path / "env", "VALUE = 42\n")
        plugins.add("own", PLUGIN.format(python=python))
        (report,) = pipeline.load_plugins(actor=ACTOR)
        assert report.state == "INITIALIZED", report.reason
        run = pipeline.run_plugin(name="own", params={}, actor=ACTOR)
        assert run.status == RunStatus.SUCCEEDED, run.reason
        assert run.result["value"] == 42
        assert run.result["prefix"] == str(tmp_path / "env")

    def test_named_environment__resolved_from_settings(self, plugins, tmp_path, settings):
        """python = "NAME" runs with the interpreter PORTAL_PLUGIN_ENVIRONMENTS maps it to."""
        python = make_env(tmp_path / "named", "VALUE = 'named'\n")
        settings.PORTAL_PLUGIN_ENVIRONMENTS = {"vision": python}
        plugins.add("named", PLUGIN.format(python="vision"))
        assert pipeline.load_plugins(actor=ACTOR)[0].state == "INITIALIZED"
        run = pipeline.run_plugin(name="named", params={}, actor=ACTOR)
        assert run.result["value"] == "named"

    def test_module_missing_from_its_venv__unavailable(self, plugins, tmp_path):
        """Preflight checks the plugin's interpreter: the portal's modules do not count."""
        python = make_env(tmp_path / "env", "VALUE = 1\n")
        plugins.add(
            "lacks",
            f'python = "{python}"\nrequires = {{"modules": ["django"]}}\ndef run():\n    pass\n',
        )
        (report,) = pipeline.load_plugins(actor=ACTOR)
        assert report.state == "UNAVAILABLE"
        assert "Missing Python module 'django'" in report.reason


class TestUnusableInterpreter:
    def test_missing_interpreter__unavailable_naming_the_path(self, plugins, tmp_path):
        """An interpreter path that does not exist: UNAVAILABLE, the reason names it and the fix."""
        missing = str(tmp_path / "nowhere" / "bin" / "python")
        plugins.add("gone", PLUGIN.format(python=missing))
        (report,) = pipeline.load_plugins(actor=ACTOR)
        assert report.state == "UNAVAILABLE"
        assert f"The Python interpreter {missing} that plugin 'gone'" in report.reason
        assert "does not exist" in report.reason and "venv" in report.reason

    @pytest.mark.skipif(not OLD_PYTHONS, reason="no Python 3.10 on this machine")
    def test_too_old_interpreter__unavailable(self, plugins):
        """A real Python 3.10: UNAVAILABLE, saying it is older than 3.11."""
        plugins.add("old", PLUGIN.format(python=OLD_PYTHONS[0]))
        (report,) = pipeline.load_plugins(actor=ACTOR)
        assert report.state == "UNAVAILABLE"
        assert "is Python 3.10." in report.reason and "older than the 3.11" in report.reason

    def test_unknown_environment_name__unavailable_with_the_names_known(self, plugins, settings):
        """A name PORTAL_PLUGIN_ENVIRONMENTS lacks: UNAVAILABLE, naming the known ones."""
        settings.PORTAL_PLUGIN_ENVIRONMENTS = {"torch": "/srv/torch/bin/python"}
        plugins.add("unknown", PLUGIN.format(python="ocr"))
        (report,) = pipeline.load_plugins(actor=ACTOR)
        assert report.state == "UNAVAILABLE"
        assert "PORTAL_PLUGIN_ENVIRONMENTS does not name (it names: torch)" in report.reason

    def test_interpreter_removed_after_load__run_refused_unavailable(self, plugins, tmp_path):
        """The venv deleted after the load: the next run makes the plugin UNAVAILABLE, uncounted."""
        python = make_env(tmp_path / "env", "VALUE = 1\n")
        plugins.add("removed", PLUGIN.format(python=python))
        assert pipeline.load_plugins(actor=ACTOR)[0].state == "INITIALIZED"
        Path(python).unlink()
        run = pipeline.run_plugin(name="removed", params={}, actor=ACTOR)
        plugin = Plugin.objects.get(name="removed")
        assert plugin.state == PluginState.UNAVAILABLE
        assert plugin.error_count == 0
        assert "does not exist" in run.reason
