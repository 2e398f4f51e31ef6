"""The pipeline: plugins loaded and run through the real sandbox, outcomes in the registry."""

from __future__ import annotations

import glob
import os
import re
import shutil
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from plugins_app import pipeline, runner, services, warm_hosts
from plugins_app.errors import (
    IllegalTransition,
    InvalidParams,
    PluginNotFound,
    PluginRefused,
    RunNotFound,
)
from plugins_app.models import EventKind, Plugin, PluginEvent, PluginRun, PluginState, RunStatus
from sandbox import Preload

pytestmark = pytest.mark.django_db

ACTOR = "user:tester"
HAS_GPU = bool(shutil.which("nvidia-smi") or glob.glob("/dev/nvidia[0-9]*"))


def load(name: str) -> Plugin:
    """Load one plugin and return its registry row."""
    return pipeline.reload_plugin(name=name, actor=ACTOR)


def transitions(name: str) -> list[tuple[str, str]]:
    events = PluginEvent.objects.filter(plugin__name=name, kind=EventKind.STATE_CHANGED)
    return [(e.from_state, e.to_state) for e in events.order_by("created_at", "id")]


class TestLoadSucceeds:
    def test_healthy_plugin__initialized_with_metadata(self, plugins):
        """A healthy plugin is LOADED then INITIALIZED, with what it declared recorded."""
        path = plugins.add(
            "ocr",
            '''
            """Reads text."""
            version = "1.2"
            requires = {"modules": ["json"]}
            limits = {"timeout_s": 5}
            def setup():
                pass
            def run():
                return "text"
            ''',
        )
        (report,) = pipeline.load_plugins(actor=ACTOR)
        assert report == pipeline.LoadReport("ocr", "INITIALIZED", "", str(path))
        plugin = Plugin.objects.get(name="ocr")
        assert (plugin.version, plugin.description, plugin.source) == (
            "1.2",
            "Reads text.",
            str(path),
        )
        assert (plugin.requirements, plugin.limits) == ({"modules": ["json"]}, {"timeout_s": 5})
        assert transitions("ocr") == [("", "LOADED"), ("LOADED", "INITIALIZED")]
        assert PluginEvent.objects.filter(plugin=plugin).latest("id").actor == ACTOR

    def test_declared_name__registered_under_it(self, plugins):
        """A module declaring `name` is registered under that name."""
        plugins.add("file_name", "name = 'pretty'\ndef run(): pass\n")
        reports = pipeline.load_plugins(actor=ACTOR)
        assert [r.name for r in reports] == ["pretty"]

    def test_package_plugin__loaded(self, plugins):
        """A package directory with __init__.py is a plugin."""
        plugins.add("vision", "def run():\n    return 1\n", package=True)
        assert load("vision").state == PluginState.INITIALIZED

    def test_entry_point_plugin__loaded_and_run(self, plugins, tmp_path, monkeypatch):
        """A module named by a portal.plugins entry point is loaded and run like a file."""
        site = tmp_path / "site"
        (site / "acme_ocr").mkdir(parents=True)
        (site / "acme_ocr" / "__init__.py").write_text("def run(x=1):\n    return x * 2\n")
        info = site / "acme_ocr-1.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-ocr\nVersion: 1.0\n")
        (info / "entry_points.txt").write_text("[portal.plugins]\nacme = acme_ocr\n")
        monkeypatch.syspath_prepend(str(site))
        plugin = load("acme")
        assert plugin.state == PluginState.INITIALIZED
        assert plugin.source == "entry point: acme = acme_ocr (acme-ocr 1.0)"
        run = pipeline.run_plugin(name="acme", params={"x": 4}, actor=ACTOR)
        assert (run.status, run.result) == (RunStatus.SUCCEEDED, 8)


def install_entry_point(site: Path, dist: str, entry_points: str) -> None:
    """dist-info metadata of an installed distribution with portal.plugins entry points."""
    info = site / f"{dist}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[portal.plugins]\n{entry_points}\n")


class TestEntryPoints:
    def test_module_not_installed__unavailable_naming_distribution(
        self, plugins, tmp_path, monkeypatch
    ):
        """An entry point whose module is missing is UNAVAILABLE, saying to reinstall."""
        site = tmp_path / "site"
        install_entry_point(site, "acme-broken", "acme = acme_not_there.plugin")
        monkeypatch.syspath_prepend(str(site))
        plugin = load("acme")
        assert plugin.state == PluginState.UNAVAILABLE
        assert plugin.reason == (
            "Plugin 'acme' comes from entry point: acme = acme_not_there.plugin (acme-broken "
            "1.0), but its module 'acme_not_there.plugin' is not installed (reinstall the "
            "distribution that provides it, then reload the plugin)"
        )

    def test_uninstalled_distribution__unavailable_naming_search(
        self, plugins, tmp_path, monkeypatch
    ):
        """A plugin whose distribution was uninstalled is UNAVAILABLE, saying where it looked."""
        site = tmp_path / "site"
        (site / "acme_ok").mkdir(parents=True)
        (site / "acme_ok" / "__init__.py").write_text("def run(): pass\n")
        install_entry_point(site, "acme-ok", "acme = acme_ok")
        monkeypatch.syspath_prepend(str(site))
        load("acme")
        shutil.rmtree(site / "acme-ok-1.0.dist-info")
        (report,) = pipeline.load_plugins(actor=ACTOR)
        assert report.state == PluginState.UNAVAILABLE
        assert report.reason.startswith(
            f"Plugin 'acme' was not found in {plugins.path} and the 'portal.plugins' entry "
            "points (it was loaded from entry point: acme = acme_ok (acme-ok 1.0)); restore it"
        )


class TestLoadUnavailable:
    def test_missing_module_at_import__pip_hint(self, plugins):
        """A module missing at import makes the plugin UNAVAILABLE with the pip command."""
        plugins.add("yolo", "import cv2_not_installed\ndef run(): pass\n")
        plugin = load("yolo")
        assert plugin.state == PluginState.UNAVAILABLE
        assert plugin.reason == (
            "Missing Python module 'cv2_not_installed' required by plugin 'yolo' "
            "(install with: pip install cv2_not_installed)"
        )

    def test_missing_system_library__unavailable_saying_to_install_it(self, plugins):
        """cv2's classic libGL.so.1 error is UNAVAILABLE, saying which library to install."""
        plugins.add(
            "cv",
            "raise ImportError('libGL.so.1: cannot open shared object file: No such file')\n"
            "def run(): pass\n",
        )
        plugin = load("cv")
        assert plugin.state == PluginState.UNAVAILABLE
        assert plugin.reason == (
            "Missing system library 'libGL.so.1' required by plugin 'cv' (install the system "
            "library libGL.so.1, e.g. with your OS package manager, then reload)"
        )

    def test_missing_module_in_requires__pip_name_mapped(self, plugins):
        """A missing module from requires.modules names the pip distribution to install."""
        plugins.add("p", "requires = {'modules': ['cv2']}\ndef run(): pass\n")
        assert load("p").reason == (
            "Missing Python module 'cv2' required by plugin 'p' "
            "(install with: pip install opencv-python)"
        )

    @pytest.mark.skipif(HAS_GPU, reason="this machine has an NVIDIA GPU")
    def test_no_gpu__says_what_was_checked(self, plugins):
        """requires.gpu without a GPU is UNAVAILABLE, saying what was checked."""
        plugins.add("tracker", "requires = {'gpu': True}\ndef run(): pass\n")
        plugin = load("tracker")
        assert plugin.state == PluginState.UNAVAILABLE
        assert plugin.reason.startswith(
            "Plugin 'tracker' requires a CUDA GPU but none was found (nvidia-smi is absent"
        )

    def test_missing_model_file__then_recovers_after_reload(self, plugins, tmp_path):
        """A missing model file is UNAVAILABLE; once the file is there, a reload recovers."""
        model = tmp_path / "yolo.pt"
        plugins.add("yolo", f"requires = {{'files': [{str(model)!r}]}}\ndef run(): return 1\n")
        plugin = load("yolo")
        assert plugin.state == PluginState.UNAVAILABLE
        assert plugin.reason == (
            f"Model file not found: {model} (declared in requires.files of plugin 'yolo'); "
            "put the file there, then reload the plugin"
        )
        assert plugin.requirements == {"files": [str(model)]}
        model.write_bytes(b"weights")
        plugin = load("yolo")
        assert (plugin.state, plugin.reason) == (PluginState.INITIALIZED, "")
        assert transitions("yolo") == [
            ("", "UNAVAILABLE"),
            ("UNAVAILABLE", "LOADED"),
            ("LOADED", "INITIALIZED"),
        ]

    def test_empty_model_file__unavailable(self, plugins, tmp_path):
        """An empty model file counts as missing, and the reason says it is empty."""
        model = tmp_path / "m.onnx"
        model.write_bytes(b"")
        plugins.add("p", f"requires = {{'files': [{str(model)!r}]}}\ndef run(): pass\n")
        assert load("p").reason.startswith(f"Model file is empty: {model} ")

    def test_model_path_with_unset_variable__says_so(self, plugins, monkeypatch):
        """A model path using an unset variable says the variable is the problem."""
        monkeypatch.delenv("PIPELINE_TEST_MODEL_DIR", raising=False)
        plugins.add("p", "requires = {'files': ['$PIPELINE_TEST_MODEL_DIR/m.pt']}\ndef run(): pass")
        assert load("p").reason == (
            "Model file path '$PIPELINE_TEST_MODEL_DIR/m.pt' of plugin 'p' uses an environment "
            "variable that is not set (set it in the portal's environment, then reload the plugin)"
        )

    def test_missing_env_var__unavailable_naming_it(self, plugins):
        """An unset environment variable from requires.env is named in the reason."""
        plugins.add("p", "requires = {'env': ['PIPELINE_TEST_UNSET_VAR']}\ndef run(): pass\n")
        assert load("p").reason == (
            "Environment variable 'PIPELINE_TEST_UNSET_VAR' required by plugin 'p' is not set "
            "(set it in the portal's environment, then reload the plugin)"
        )

    def test_env_var_withheld_by_sandbox__says_how_to_allow(self, plugins, monkeypatch):
        """A variable the portal has but the sandbox withholds (a *_KEY) says SANDBOX_ENV_ALLOW."""
        monkeypatch.setenv("PIPELINE_TEST_API_KEY", "secret")
        plugins.add("p", "requires = {'env': ['PIPELINE_TEST_API_KEY']}\ndef run(): pass\n")
        assert load("p").reason == (
            "Environment variable 'PIPELINE_TEST_API_KEY' required by plugin 'p' is set in the "
            "portal but withheld from plugins because it looks like a secret (allow it with "
            "SANDBOX_ENV_ALLOW=PIPELINE_TEST_API_KEY, then reload the plugin)"
        )

    def test_env_var_denied_by_operator__says_sandbox_env_deny(
        self, plugins, monkeypatch, sandbox_settings
    ):
        """A declared variable SANDBOX_ENV_DENY removes says so, not "set it"."""
        monkeypatch.setenv("PIPELINE_TEST_REGION", "eu-west-1")
        sandbox_settings(env_deny=("PIPELINE_TEST_*",))
        plugins.add("p", "requires = {'env': ['PIPELINE_TEST_REGION']}\ndef run(): pass\n")
        assert load("p").reason == (
            "Environment variable 'PIPELINE_TEST_REGION' required by plugin 'p' is set in the "
            "portal but SANDBOX_ENV_DENY withholds it from plugins (remove it from "
            "SANDBOX_ENV_DENY if the plugin may see it, then reload the plugin)"
        )

    def test_declared_env_var__reaches_that_plugins_setup_and_runs_only(self, plugins, monkeypatch):
        """A variable in requires.env reaches its plugin's setup() and run(), no other plugin."""
        monkeypatch.setenv("PIPELINE_TEST_REGION", "eu-west-1")
        plugins.add(
            "geo",
            """
            import os
            requires = {"env": ["PIPELINE_TEST_REGION"]}
            SEEN = {}
            def setup():
                SEEN["setup"] = os.environ.get("PIPELINE_TEST_REGION")
            def run():
                return {"setup": SEEN.get("setup"), "run": os.environ.get("PIPELINE_TEST_REGION")}
            """,
        )
        plugins.add(
            "nosy", "import os\ndef run():\n    return os.environ.get('PIPELINE_TEST_REGION')"
        )
        reports = pipeline.load_plugins(actor=ACTOR)
        assert [(r.name, r.state) for r in reports] == [
            ("geo", "INITIALIZED"),
            ("nosy", "INITIALIZED"),
        ]
        geo = pipeline.run_plugin(name="geo", params={}, actor=ACTOR)
        assert geo.result == {"setup": "eu-west-1", "run": "eu-west-1"}
        assert pipeline.run_plugin(name="nosy", params={}, actor=ACTOR).result is None

    def test_model_path_variable__reaches_the_plugin(self, plugins, monkeypatch, tmp_path):
        """A variable a requires.files path uses is passed to that plugin like requires.env."""
        (tmp_path / "m.pt").write_bytes(b"weights")
        monkeypatch.setenv("PIPELINE_TEST_MODEL_DIR", str(tmp_path))
        plugins.add(
            "p",
            "import os\nrequires = {'files': ['${PIPELINE_TEST_MODEL_DIR}/m.pt']}\n"
            "def run():\n    return os.environ.get('PIPELINE_TEST_MODEL_DIR')\n",
        )
        assert load("p").state == PluginState.INITIALIZED
        assert pipeline.run_plugin(name="p", params={}, actor=ACTOR).result == str(tmp_path)

    def test_several_missing__all_named(self, plugins):
        """When several things are missing, the reason names the first and lists the rest."""
        plugins.add(
            "p", "requires = {'modules': ['nope_a', 'nope_b'], 'env': ['NOPE_C']}\ndef run(): pass"
        )
        assert load("p").reason.endswith(
            "; also missing: module nope_b, environment variable NOPE_C"
        )

    def test_runs_refused_while_unavailable__nothing_counted(self, plugins):
        """A run of an UNAVAILABLE plugin is refused with the reason and counts nothing."""
        plugins.add("p", "import nope_module\ndef run(): pass\n")
        load("p")
        with pytest.raises(PluginRefused, match="Missing Python module 'nope_module'"):
            pipeline.run_plugin(name="p", params={}, actor=ACTOR)
        plugin = Plugin.objects.get(name="p")
        assert (plugin.success_count, plugin.error_count, PluginRun.objects.count()) == (0, 0, 0)


class TestLoadFails:
    def test_syntax_error__failed_naming_file_and_line(self, plugins):
        """A syntax error is FAILED with the type, message and line."""
        path = plugins.add("broken", "x = 1\ndef run(:\n    pass\n")
        plugin = load("broken")
        assert plugin.state == PluginState.FAILED
        assert plugin.reason == (
            f"Plugin 'broken' failed to import: SyntaxError: invalid syntax at {path}:2 "
            "(fix the code, then reload the plugin)"
        )

    def test_exception_at_import__failed(self, plugins):
        """An exception raised at import is FAILED with type, message and place."""
        path = plugins.add("p", "raise KeyError('config')\n")
        assert load("p").reason == (
            f"Plugin 'p' failed to import: KeyError: 'config' at {path}:1 in <module> "
            "(fix the code, then reload the plugin)"
        )

    def test_failing_setup__failed_keeping_declarations(self, plugins):
        """A failing setup() is FAILED with where it raised; the declarations are kept."""
        path = plugins.add(
            "lic",
            "version = '3'\ndef setup():\n    raise RuntimeError('no license')\ndef run(): pass\n",
        )
        plugin = load("lic")
        assert (plugin.state, plugin.version) == (PluginState.FAILED, "3")
        assert plugin.reason == (
            f"setup() of plugin 'lic' raised RuntimeError: no license at {path}:3 in setup "
            "(fix the cause, then reload the plugin)"
        )

    def test_hang_at_import__failed_after_load_timeout(self, plugins, settings):
        """An import that hangs is stopped at the load timeout and FAILED, saying so."""
        settings.PORTAL_PLUGIN_LOAD_TIMEOUT_S = 1
        plugins.add("hangs", "import time\ntime.sleep(60)\ndef run(): pass\n")
        plugin = load("hangs")
        assert plugin.state == PluginState.FAILED
        assert plugin.reason.startswith("Loading plugin 'hangs' did not finish within 1 s")

    def test_crash_at_import__failed_naming_signal(self, plugins):
        """A segfault while importing is FAILED, naming the signal; the portal is fine."""
        plugins.add("crashy", "import ctypes\nctypes.string_at(0)\n")
        plugin = load("crashy")
        assert plugin.state == PluginState.FAILED
        assert plugin.reason.startswith("Loading plugin 'crashy' crashed the process with SIGSEGV")

    def test_exit_at_import__failed(self, plugins):
        """os._exit() while importing is FAILED with the exit code."""
        plugins.add("quits", "import os\nos._exit(7)\n")
        reason = load("quits").reason
        assert reason.startswith("Loading plugin 'quits' ended the process with exit code 7")

    def test_unknown_limit__failed_listing_known_ones(self, plugins):
        """A limit the sandbox does not know is FAILED with the known names."""
        plugins.add("p", "limits = {'timeout': 5}\ndef run(): pass\n")
        plugin = load("p")
        assert plugin.state == PluginState.FAILED
        assert "Unknown sandbox limit 'timeout'" in plugin.reason

    def test_overlong_version__failed_and_others_still_loaded(self, plugins):
        """A version over 100 characters is FAILED naming the field; later plugins still load."""
        plugins.add("a", "version = '1.0+' + 'x' * 150\ndef run(): pass\n")
        plugins.add("b", "def run(): pass\n")
        reports = {r.name: r for r in pipeline.load_plugins(actor=ACTOR)}
        assert reports["a"].state == PluginState.FAILED
        assert "invalid declaration: version must be" in reports["a"].reason
        assert "then reload the plugin" in reports["a"].reason
        assert reports["b"].state == PluginState.INITIALIZED

    def test_declared_name_unreachable_by_url__failed(self, plugins):
        """A declared name with a slash is FAILED under its file name, saying what is allowed."""
        plugins.add("ocr", "name = 'team/ocr'\ndef run(): pass\n")
        (report,) = pipeline.load_plugins(actor=ACTOR)
        assert (report.name, report.state) == ("ocr", PluginState.FAILED)
        assert "invalid declaration: name must" in report.reason

    def test_value_the_registry_rejects__failed_not_raised(self, plugins, monkeypatch):
        """A declaration the database refuses makes that plugin FAILED; the load goes on."""
        from django.core.exceptions import ValidationError

        def refuse(**kwargs):
            raise ValidationError({"version": ["Ensure this value has at most 100 characters."]})

        plugins.add("a", "def run(): pass\n")
        plugins.add("b", "def run(): pass\n")
        real = services.plugin_register
        monkeypatch.setattr(
            services,
            "plugin_register",
            lambda **kw: refuse(**kw) if kw["name"] == "a" else real(**kw),
        )
        reports = {r.name: r for r in pipeline.load_plugins(actor=ACTOR)}
        assert reports["a"].state == PluginState.FAILED
        assert "version" in reports["a"].reason and "at most 100" in reports["a"].reason
        assert reports["b"].state == PluginState.INITIALIZED

    def test_huge_declared_timeout__failed_naming_the_cap(self, plugins):
        """limits.timeout_s beyond 7 days is an invalid declaration, not a sandbox bug later."""
        plugins.add("p", "limits = {'timeout_s': 1e300}\ndef run(): pass\n")
        plugin = load("p")
        assert plugin.state == PluginState.FAILED
        assert "invalid declaration: limits:" in plugin.reason
        assert "timeout_s" in plugin.reason and "at most 604800" in plugin.reason

    def test_missing_run__failed(self, plugins):
        """A module without run() is FAILED, saying it defines none."""
        plugins.add("p", "x = 1\n")
        assert "it defines no run(**params) function" in load("p").reason


class TestLoadSet:
    def test_same_name_twice__unavailable_naming_both_sources(self, plugins, tmp_path, settings):
        """Two sources for one name: the plugin is UNAVAILABLE and the reason names both."""
        other = tmp_path / "other"
        other.mkdir()
        (other / "ocr.py").write_text("def run(): return 'b'\n")
        first = plugins.add("ocr", "def run(): return 'a'\n")
        settings.PORTAL_PLUGIN_DIRS = [str(plugins.path), str(other)]
        (report,) = pipeline.load_plugins(actor=ACTOR)
        assert report.state == PluginState.UNAVAILABLE
        assert report.reason == (
            f"Plugin name 'ocr' is provided by 2 sources: {first}; {other / 'ocr.py'}; none of "
            "them is used (rename or remove all but one, then reload)"
        )
        with pytest.raises(PluginRefused):
            pipeline.run_plugin(name="ocr", params={}, actor=ACTOR)
        (other / "ocr.py").unlink()
        assert load("ocr").state == PluginState.INITIALIZED

    def test_declared_name_clash__detected_after_import(self, plugins):
        """A module declaring the name of another plugin is a conflict too."""
        plugins.add("ocr", "def run(): pass\n")
        plugins.add("ocr2", "name = 'ocr'\ndef run(): pass\n")
        (report,) = pipeline.load_plugins(actor=ACTOR)
        assert report.state == PluginState.UNAVAILABLE
        assert "is provided by 2 sources" in report.reason

    def test_file_removed__unavailable_with_history_kept(self, plugins):
        """A plugin whose file disappeared is UNAVAILABLE, not deleted; its runs stay."""
        path = plugins.add("p", "def run(): return 1\n")
        load("p")
        pipeline.run_plugin(name="p", params={}, actor=ACTOR)
        path.unlink()
        reports = pipeline.load_plugins(actor=ACTOR)
        assert reports == [
            pipeline.LoadReport(
                "p",
                "UNAVAILABLE",
                f"Plugin 'p' is gone: {path} no longer exists (restore it and reload; the "
                "plugin's history is kept meanwhile)",
                str(path),
            )
        ]
        plugin = Plugin.objects.get(name="p")
        assert (plugin.success_count, plugin.runs.count()) == (1, 1)

    def test_named_load__touches_only_that_plugin(self, plugins):
        """Loading by name re-checks that plugin and leaves the others' history alone."""
        plugins.add("a", "def run(): pass\n")
        plugins.add("b", "def run(): pass\n")
        pipeline.load_plugins(actor=ACTOR)
        before = PluginEvent.objects.filter(plugin__name="b").count()
        reports = pipeline.load_plugins(names=["a"], actor=ACTOR)
        assert [r.name for r in reports] == ["a"]
        assert PluginEvent.objects.filter(plugin__name="b").count() == before

    def test_unknown_name__not_found(self, plugins):
        """A name neither registered nor discovered raises PluginNotFound."""
        with pytest.raises(PluginNotFound, match="Plugin 'ghost' not found"):
            pipeline.reload_plugin(name="ghost", actor=ACTOR)

    def test_reload_while_running__reported_not_applied(self, plugins):
        """A reload during a run is refused in the report; the plugin keeps running."""
        plugins.add("p", "def run(): pass\n")
        load("p")
        run = services.run_queue(name="p", params={}, actor=ACTOR)
        services.run_start(run_id=run.pk, worker="w:1")
        (report,) = pipeline.load_plugins(names=["p"], actor=ACTOR)
        assert report.state == PluginState.RUNNING
        assert "run(s) in progress and cannot be reloaded now" in report.reason
        with pytest.raises(IllegalTransition, match="cannot be reloaded now"):
            pipeline.reload_plugin(name="p", actor=ACTOR)

    def test_reload_after_worker_died__reconciles_then_reloads(self, plugins):
        """A run orphaned by a killed process is INTERRUPTED by the reload, which then applies."""
        plugins.add("p", "def run(): pass\n")
        load("p")
        run = services.run_queue(name="p", params={}, actor=ACTOR)
        services.run_start(run_id=run.pk, worker="deadhost:1")
        PluginRun.objects.filter(pk=run.pk).update(heartbeat_at=timezone.now() - timedelta(hours=1))
        assert load("p").state == PluginState.INITIALIZED
        assert PluginRun.objects.get(pk=run.pk).status == RunStatus.INTERRUPTED

    def test_load_all_after_worker_died__reconciles_first(self, plugins):
        """load_plugins finishes orphaned runs before reloading, so nothing is left waiting."""
        plugins.add("p", "def run(): pass\n")
        load("p")
        run = services.run_queue(name="p", params={}, actor=ACTOR)
        services.run_start(run_id=run.pk, worker="deadhost:1")
        PluginRun.objects.filter(pk=run.pk).update(heartbeat_at=timezone.now() - timedelta(hours=1))
        (report,) = pipeline.load_plugins(actor=ACTOR)
        assert report.state == PluginState.INITIALIZED
        assert PluginRun.objects.get(pk=run.pk).status == RunStatus.INTERRUPTED


class TestRun:
    def test_success__result_counters_and_forensics(self, plugins):
        """A successful run stores the result, duration, worker and counts one success."""
        plugins.add("p", "def run(a, b=2):\n    print('working')\n    return {'sum': a + b}\n")
        load("p")
        run = pipeline.run_plugin(name="p", params={"a": 1}, actor=ACTOR)
        assert (run.status, run.outcome, run.result) == (RunStatus.SUCCEEDED, "ok", {"sum": 3})
        assert run.stdout_tail == "working\n"
        assert run.duration_ms > 0 and run.peak_rss_kb > 0
        assert run.worker.endswith(f":{os.getpid()}")
        plugin = Plugin.objects.get(name="p")
        assert (plugin.state, plugin.success_count, plugin.error_count) == (
            PluginState.INITIALIZED,
            1,
            0,
        )

    def test_exception__failed_with_type_message_place_and_traceback(self, plugins):
        """An exception in run() fails the run with its type, message, line and traceback."""
        path = plugins.add("p", "def run():\n    raise ValueError('bad input')\n")
        load("p")
        run = pipeline.run_plugin(name="p", params={}, actor=ACTOR)
        assert (run.status, run.error_type) == (RunStatus.FAILED, "ValueError")
        assert run.reason == (
            f"Plugin 'p' raised ValueError in run(): bad input at {path}:2 in run (see the "
            "run's traceback; fix the plugin or its input, then rerun)"
        )
        assert "ValueError: bad input" in run.traceback
        plugin = Plugin.objects.get(name="p")
        assert (plugin.state, plugin.reason, plugin.error_count) == (
            PluginState.FAILED,
            run.reason,
            1,
        )

    def test_writing_past_disk_mb__failed_naming_the_budget(self, plugins):
        """A run that writes more than its declared limits.disk_mb fails, saying so."""
        plugins.add(
            "p",
            """
            limits = {"disk_mb": 2, "timeout_s": 30}
            def run():
                with open("big.bin", "wb") as handle:
                    handle.write(b"x" * (8 << 20))
                return "wrote"
            """,
        )
        load("p")
        run = pipeline.run_plugin(name="p", params={}, actor=ACTOR)
        assert (run.status, run.outcome, run.error_type) == (
            RunStatus.FAILED,
            "disk_limit",
            "DiskLimit",
        )
        assert re.fullmatch(
            r"Plugin 'p' wrote \d+ MB in its working directory, more than its 2 MB disk budget, "
            r"and was stopped; its files there were removed \(raise limits\.disk_mb in the "
            r"plugin, write less, or write large output elsewhere and return a reference\)",
            run.reason,
        ), run.reason
        assert Plugin.objects.get(name="p").state == PluginState.FAILED

    def test_bad_params__refused_before_queueing_with_signature(self, plugins):
        """Params run() does not take are refused before a run, saying what it accepts."""
        plugins.add("p", "def run(seconds):\n    return seconds\n")
        load("p")
        with pytest.raises(InvalidParams, match=r"unknown param 'secs'; missing param 'seconds'"):
            pipeline.run_plugin(name="p", params={"secs": 1}, actor=ACTOR)
        assert not PluginRun.objects.filter(plugin__name="p").exists()

    def test_timeout__timed_out(self, plugins):
        """A run past its timeout is stopped and recorded TIMED_OUT."""
        plugins.add("p", "import time\nlimits = {'timeout_s': 1}\ndef run(): time.sleep(30)\n")
        load("p")
        run = pipeline.run_plugin(name="p", params={}, actor=ACTOR)
        assert (run.status, run.outcome) == (RunStatus.TIMED_OUT, "timeout")
        assert run.reason.startswith("Plugin 'p' did not finish within its 1 s timeout")

    def test_timeout_argument__overrides_declared_limit(self, plugins):
        """timeout_s given to run_plugin replaces the plugin's own timeout for that run."""
        plugins.add("p", "import time\ndef run(s=30): time.sleep(s)\n")
        load("p")
        # A first short run starts the warm host, so 0.5 s times the call, not a slow start.
        assert pipeline.run_plugin(name="p", params={"s": 0}, actor=ACTOR).status == "succeeded"
        run = pipeline.run_plugin(name="p", params={}, actor=ACTOR, timeout_s=0.5)
        assert run.status == RunStatus.TIMED_OUT
        assert "within its 0.5 s timeout" in run.reason

    def test_segfault__crashed_with_signal(self, plugins):
        """A segfault in run() is CRASHED with the signal; the portal carries on."""
        plugins.add("p", "import ctypes\ndef run(): ctypes.string_at(0)\n")
        load("p")
        run = pipeline.run_plugin(name="p", params={}, actor=ACTOR)
        assert (run.status, run.signal) == (RunStatus.CRASHED, "SIGSEGV")
        assert run.reason.startswith("Plugin 'p' crashed with signal SIGSEGV during run()")
        assert pipeline.run_plugin(name="p", params={}, actor=ACTOR).status == RunStatus.CRASHED

    def test_memory_limit__crashed_with_peak(self, plugins):
        """A run over its memory limit is CRASHED, naming the limit and the peak."""
        plugins.add(
            "p",
            "limits = {'memory_mb': 200}\n"
            "def run():\n    x = [bytearray(32 << 20) for _ in range(100)]\n",
        )
        load("p")
        run = pipeline.run_plugin(name="p", params={}, actor=ACTOR)
        assert (run.status, run.outcome) == (RunStatus.CRASHED, "memory")
        assert run.reason.startswith("Plugin 'p' ran out of its 200 MB memory limit (peak ")

    def test_os_exit__failed_with_exit_code(self, plugins):
        """os._exit() in run() fails the run with the exit code."""
        plugins.add("p", "import os\ndef run(): os._exit(4)\n")
        load("p")
        run = pipeline.run_plugin(name="p", params={}, actor=ACTOR)
        assert (run.status, run.outcome, run.exit_code) == (RunStatus.FAILED, "exited", 4)
        assert run.reason.startswith("Plugin 'p' ended its process with exit code 4")

    @pytest.mark.parametrize(
        ("body", "words"),
        [
            ("return {1, 2}", "Object of type set is not JSON serializable"),
            ("return float('nan')", "Out of range float values are not JSON compliant"),
            (
                "import threading\n    return threading.Lock()",
                "Object of type lock is not JSON serializable",
            ),
        ],
    )
    def test_unserialisable_result__failed(self, plugins, body, words):
        """A result that is not JSON fails the run, saying what to return instead."""
        plugins.add("p", f"def run():\n    {body}\n")
        load("p")
        run = pipeline.run_plugin(name="p", params={}, actor=ACTOR)
        assert (run.status, run.outcome) == (RunStatus.FAILED, "unserialisable")
        assert run.reason.startswith("Plugin 'p' returned a value that is not JSON-serialisable")
        assert words in run.reason

    def test_large_result__stored_truncated(self, plugins):
        """A result bigger than the stored size is kept as a truncated JSON text."""
        plugins.add("p", "def run(): return 'x' * 200_000\n")
        load("p")
        run = pipeline.run_plugin(name="p", params={}, actor=ACTOR)
        assert run.status == RunStatus.SUCCEEDED
        assert run.result_truncated is True
        assert run.result == '"' + "x" * (pipeline.RESULT_STORE_CHARS - 1)

    def test_output_tails__kept_capped(self, plugins):
        """Stdout and stderr tails are kept on the run, capped."""
        plugins.add(
            "p",
            "import sys\ndef run():\n    print('a' * 10000)\n    print('oops', file=sys.stderr)"
            "\n    raise SystemExit(2)\n",
        )
        load("p")
        run = pipeline.run_plugin(name="p", params={}, actor=ACTOR)
        assert run.status == RunStatus.FAILED
        assert len(run.stdout_tail) == pipeline.OUTPUT_TAIL_CHARS
        assert run.stderr_tail.startswith("oops")

    def test_disabled__refused_without_run(self, plugins):
        """A disabled plugin's run is refused with who disabled it; nothing is counted."""
        plugins.add("p", "def run(): pass\n")
        load("p")
        services.plugin_disable(name="p", note="maintenance", actor="user:ops")
        with pytest.raises(PluginRefused, match="disabled by user:ops: maintenance"):
            pipeline.run_plugin(name="p", params={}, actor=ACTOR)
        assert PluginRun.objects.count() == 0

    @pytest.mark.parametrize(
        ("params", "words"),
        [
            ([1, 2], "got list, not an object"),
            ({"bad-key": 1}, "parameter names must be Python identifiers"),
            ({"x": {1, 2}}, "not JSON-serialisable"),
        ],
    )
    def test_invalid_params__raised_before_any_run(self, plugins, params, words):
        """Params that are not a JSON object of names raise InvalidParams; no run exists."""
        plugins.add("p", "def run(**kw): pass\n")
        load("p")
        with pytest.raises(InvalidParams, match=words):
            pipeline.run_plugin(name="p", params=params, actor=ACTOR)
        assert PluginRun.objects.count() == 0

    def test_huge_timeout__invalid_params_and_no_run(self, plugins):
        """A timeout beyond 7 days is refused before any run, naming the cap."""
        plugins.add("p", "def run(): pass\n")
        load("p")
        with pytest.raises(InvalidParams, match="at most 604800 seconds"):
            pipeline.run_plugin(name="p", params={}, actor=ACTOR, timeout_s=1e300)
        assert PluginRun.objects.count() == 0

    def test_bad_timeout__invalid_params(self, plugins):
        """A timeout that is not a positive number is refused before any run."""
        plugins.add("p", "def run(): pass\n")
        load("p")
        with pytest.raises(InvalidParams, match="positive number of seconds"):
            pipeline.run_plugin(name="p", params={}, actor=ACTOR, timeout_s=0)

    def test_unknown_plugin__not_found(self):
        """Running a plugin that is not registered raises PluginNotFound."""
        with pytest.raises(PluginNotFound):
            pipeline.run_plugin(name="ghost", params={}, actor=ACTOR)

    def test_failed_then_success__recovers(self, plugins):
        """After a failed run, a successful one brings the plugin back to INITIALIZED."""
        plugins.add("p", "def run(fail=False):\n    if fail: raise OSError('x')\n    return 1\n")
        load("p")
        pipeline.run_plugin(name="p", params={"fail": True}, actor=ACTOR)
        assert Plugin.objects.get(name="p").state == PluginState.FAILED
        pipeline.run_plugin(name="p", params={}, actor=ACTOR)
        plugin = Plugin.objects.get(name="p")
        assert (plugin.state, plugin.reason, plugin.consecutive_failures) == ("INITIALIZED", "", 0)

    def test_source_gone_before_run__unavailable_and_refused(self, plugins):
        """A plugin whose file vanished since the load is UNAVAILABLE; the run is refused."""
        path = plugins.add("p", "def run(): pass\n")
        load("p")
        path.unlink()
        with pytest.raises(PluginRefused, match="is gone"):
            pipeline.run_plugin(name="p", params={}, actor=ACTOR)
        plugin = Plugin.objects.get(name="p")
        assert plugin.state == PluginState.UNAVAILABLE
        assert plugin.reason.startswith(f"Plugin 'p' is gone: {path} no longer exists")
        assert (plugin.error_count, PluginRun.objects.count()) == (0, 0)

    def test_source_gone_while_queued__run_closed_uncounted(self, plugins):
        """A queued run whose plugin file vanished is closed uncounted; the plugin UNAVAILABLE."""
        path = plugins.add("p", "def run(): pass\n")
        load("p")
        run = services.run_queue(name="p", params={}, actor=ACTOR)
        path.unlink()
        closed = pipeline.execute_run(run.pk)
        assert (closed.status, closed.outcome) == (RunStatus.FAILED, "refused")
        plugin = Plugin.objects.get(name="p")
        assert (plugin.state, plugin.error_count) == (PluginState.UNAVAILABLE, 0)

    def test_warm_up_exits__reason_says_fix_setup_then_reload(self, plugins, tmp_path):
        """A setup() that kills the warm host says the warm-up failed, not run() raising."""
        flag = tmp_path / "broken"
        plugins.add(
            "p",
            f"""
            import os
            def setup():
                if os.path.exists({str(flag)!r}):
                    os._exit(3)
            def run():
                return 1
            """,
        )
        load("p")
        flag.write_text("")
        run = pipeline.run_plugin(name="p", params={}, actor=ACTOR)
        assert run.status == RunStatus.FAILED
        assert run.reason.startswith(
            "Plugin 'p' could not be prepared for this run: its import or setup() in the warm "
            "host ended the sandbox host with exit code 3"
        )
        assert "in run()" not in run.reason


class TestPortalFailures:
    def test_portal_error_during_run__run_failed_not_stuck(self, plugins, monkeypatch):
        """A bug in the portal while running finishes the run as FAILED, never stuck RUNNING."""
        plugins.add("p", "def run(): pass\n")
        load("p")

        def broken_call(*args, **kwargs):
            raise LookupError("portal bug")

        monkeypatch.setattr(runner, "_call", broken_call)
        run = pipeline.run_plugin(name="p", params={}, actor=ACTOR)
        assert (run.status, run.error_type) == (RunStatus.FAILED, "LookupError")
        assert run.reason.startswith("The portal failed to run plugin 'p' (LookupError; a bug")
        assert "LookupError: portal bug" in run.traceback
        assert Plugin.objects.get(name="p").running_count == 0

    @pytest.mark.parametrize("stop", [KeyboardInterrupt, SystemExit])
    def test_ctrl_c_or_exit_during_run__interrupted_then_reraised(self, plugins, monkeypatch, stop):
        """Ctrl-C or SystemExit mid-run: the run ends INTERRUPTED saying to rerun; it propagates."""
        plugins.add("p", "def run(): pass\n")
        load("p")

        def stopped(*args, **kwargs):
            raise stop()

        monkeypatch.setattr(runner, "_call", stopped)
        with pytest.raises(stop):
            pipeline.run_plugin(name="p", params={}, actor=ACTOR)
        run = PluginRun.objects.get()
        assert run.status == RunStatus.INTERRUPTED
        assert run.reason == (
            f"Run {run.pk} of plugin 'p' was interrupted in the process running it "
            f"({stop.__name__}, such as Ctrl-C or a shutdown) before it finished (rerun the plugin)"
        )
        plugin = Plugin.objects.get(name="p")
        assert (plugin.running_count, plugin.state) == (0, PluginState.FAILED)

    def test_wait_for_unknown_run__not_found(self):
        """Waiting for a run that does not exist raises RunNotFound."""
        with pytest.raises(RunNotFound):
            pipeline.wait_for_run(run_id=987654, timeout_s=0)


class TestWarmHosts:
    def _counting_plugin(self, plugins, marker: Path) -> Path:
        return plugins.add(
            "p",
            f"""
            def setup():
                with open({str(marker)!r}, "a") as f:
                    f.write("setup\\n")
            def run():
                return "v1"
            """,
        )

    def test_runs__setup_once_per_warm_host(self, plugins, tmp_path):
        """setup() runs once at load and once in the warm host, not once per run."""
        marker = tmp_path / "setups"
        self._counting_plugin(plugins, marker)
        load("p")
        for _ in range(3):
            assert pipeline.run_plugin(name="p", params={}, actor=ACTOR).result == "v1"
        assert marker.read_text().count("setup") == 2

    def test_reload__fresh_warm_host(self, plugins, tmp_path):
        """A reload drops the warm host, so the next run sets the plugin up again."""
        marker = tmp_path / "setups"
        self._counting_plugin(plugins, marker)
        load("p")
        pipeline.run_plugin(name="p", params={}, actor=ACTOR)
        load("p")
        pipeline.run_plugin(name="p", params={}, actor=ACTOR)
        assert marker.read_text().count("setup") == 4

    def test_edited_code__picked_up_by_next_run(self, plugins, tmp_path):
        """Edited plugin code gets a fresh warm host even when another process reloaded it."""
        path = self._counting_plugin(plugins, tmp_path / "setups")
        load("p")
        assert pipeline.run_plugin(name="p", params={}, actor=ACTOR).result == "v1"
        path.write_text("def run():\n    return 'version two'\n")
        os.utime(path, ns=(1, 1))  # a different modification time, however fast the test runs
        assert pipeline.run_plugin(name="p", params={}, actor=ACTOR).result == "version two"

    def test_swapped_during_run__old_warm_host_discarded_after_it(self, plugins, monkeypatch):
        """A run that used a warm host another thread replaced meanwhile discards it after."""
        plugins.add("p", "def run(): return 1\n")
        load("p")
        newer = Preload(warm_hosts.WARM_TARGET, ("other", "version"))
        discarded = []
        real_call, real_discard = runner.run_plugin_sandboxed, warm_hosts.discard_preload

        def call_while_another_thread_swaps(*args, preload, **kwargs):
            result = real_call(*args, preload=preload, **kwargs)
            with warm_hosts._warm_hosts_lock:
                warm_hosts._warm_hosts["p"] = newer  # thread B's run of edited code
            return result

        monkeypatch.setattr(runner, "run_plugin_sandboxed", call_while_another_thread_swaps)
        monkeypatch.setattr(warm_hosts, "discard_preload", discarded.append)
        run = pipeline.run_plugin(name="p", params={}, actor=ACTOR)
        assert run.status == RunStatus.SUCCEEDED
        assert len(discarded) == 1 and discarded[0] != newer
        assert discarded[0].target == pipeline.WARM_TARGET
        real_discard(discarded[0])  # the test stood in for the discard: stop the host now
