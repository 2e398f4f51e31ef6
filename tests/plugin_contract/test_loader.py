"""The plugin host: import, declarations, requirements, setup and calls, in a child process.

Each test runs the host in a fresh interpreter, as the sandbox does, so no plugin module is
ever imported into the test process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

_DRIVER = textwrap.dedent(
    """
    import json, sys
    from plugin_contract import loader as plugin_host
    calls = json.loads(sys.argv[1])
    out = []
    for function, args in calls:
        try:
            value = getattr(plugin_host, function)(*args)
            out.append({"value": value})
        except BaseException as exc:
            out.append({"raised": type(exc).__name__, "message": str(exc)})
    print(json.dumps(out, default=repr))
    """
)


def host(*calls: tuple[str, list], env: dict[str, str] | None = None) -> list[dict]:
    """Run plugin_host functions one after another in one fresh interpreter."""
    completed = subprocess.run(
        [sys.executable, "-c", _DRIVER, json.dumps(calls)],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout.splitlines()[-1])


def load(path: Path, *, kind: str = "file", env: dict[str, str] | None = None) -> dict:
    spec = {"kind": kind, "name": path.stem if kind == "file" else path.name, "path": str(path)}
    return host(("load_plugin", [spec]), env=env)[0]["value"]


def spec_of(path: Path) -> dict:
    return {"kind": "file", "name": path.stem, "path": str(path)}


class TestImport:
    def test_healthy_plugin__ok_with_declarations(self, plugin_dir):
        """A plugin's name, version, description, requires and limits are read."""
        path = plugin_dir.add(
            "ocr",
            '''
            """Reads text from images."""
            version = "1.2"
            requires = {"modules": "json", "env": ["HOME"]}
            limits = {"timeout_s": 5}
            def run(**params):
                return params
            ''',
        )
        report = load(path)
        assert report["status"] == "ok"
        assert report["name"] == "ocr"
        assert report["version"] == "1.2"
        assert report["description"] == "Reads text from images."
        assert report["requires"] == {"modules": ["json"], "env": ["HOME"]}
        assert report["limits"] == {"timeout_s": 5}
        assert report["has_setup"] is False

    def test_declared_name_and_description__override_defaults(self, plugin_dir):
        """A declared name and description win over the file name and the docstring."""
        path = plugin_dir.add(
            "file_name",
            '''
            """Docstring."""
            name = "pretty"
            description = "Declared description."
            version = 3
            def run():
                return 1
            ''',
        )
        report = load(path)
        assert (report["name"], report["description"], report["version"]) == (
            "pretty",
            "Declared description.",
            "3",
        )

    def test_package_plugin__relative_imports_work(self, plugin_dir):
        """A package plugin imports its own submodules relatively."""
        directory = plugin_dir.add(
            "pkg", "from .helpers import double\ndef run(x):\n    return double(x)\n", package=True
        )
        (directory / "helpers.py").write_text("def double(x):\n    return 2 * x\n")
        spec = {"kind": "package", "name": "pkg", "path": str(directory)}
        load_result, call = host(("load_plugin", [spec]), ("call_plugin", [spec, {"x": 21}]))
        assert load_result["value"]["status"] == "ok"
        assert call == {"value": 42}

    def test_plugin_named_like_stdlib__does_not_shadow_it(self, plugin_dir):
        """A plugin file called json.py loads without replacing the real json module."""
        path = plugin_dir.add("json", "import json\ndef run():\n    return json.dumps([1])\n")
        spec = spec_of(path)
        _, call = host(("load_plugin", [spec]), ("call_plugin", [spec, {}]))
        assert call == {"value": "[1]"}

    def test_missing_library_at_import__unavailable_naming_module(self, plugin_dir):
        """An import of a module that is not installed makes the plugin UNAVAILABLE."""
        path = plugin_dir.add("yolo", "import torch_not_here.cuda\ndef run():\n    pass\n")
        report = load(path)
        assert report["status"] == "unavailable"
        assert report["stage"] == "import"
        assert report["missing"] == [{"kind": "module", "item": "torch_not_here"}]

    @pytest.mark.parametrize(
        ("error", "library"),
        [
            (
                "ImportError('libGL.so.1: cannot open shared object file: No such file')",
                "libGL.so.1",
            ),
            (
                "OSError('libcudart.so.12: cannot open shared object file: No such file')",
                "libcudart.so.12",
            ),
        ],
    )
    def test_missing_system_library_at_import__unavailable_naming_it(
        self, plugin_dir, error, library
    ):
        """A shared library the import cannot open (cv2's libGL) is UNAVAILABLE, not FAILED."""
        path = plugin_dir.add("cv", f"raise {error}\ndef run():\n    pass\n")
        report = load(path)
        assert (report["status"], report["stage"]) == ("unavailable", "import")
        assert report["missing"] == [{"kind": "library", "item": library}]

    def test_missing_system_library_in_setup__unavailable(self, plugin_dir):
        """setup() that cannot open a shared library is UNAVAILABLE, naming it."""
        path = plugin_dir.add(
            "cv",
            "def setup():\n"
            "    raise ImportError('libGL.so.1: cannot open shared object file')\n"
            "def run():\n    pass\n",
        )
        report = load(path)
        assert (report["status"], report["stage"]) == ("unavailable", "setup")
        assert report["missing"] == [{"kind": "library", "item": "libGL.so.1"}]

    def test_missing_own_submodule__failed_not_unavailable(self, plugin_dir):
        """A package that imports a submodule it does not have is broken, not unavailable."""
        directory = plugin_dir.add("pkg", "from . import nothere\ndef run(): pass\n", package=True)
        report = load(directory, kind="package")
        assert report["status"] == "failed"
        assert report["error_type"] == "ImportError"

    def test_syntax_error__failed_with_file_and_line(self, plugin_dir):
        """A syntax error is FAILED at import, naming the file and line."""
        path = plugin_dir.add("broken", "def run(:\n    pass\n")
        report = load(path)
        assert report["status"] == "failed"
        assert report["stage"] == "import"
        assert report["error_type"] == "SyntaxError"
        assert report["where"] == f"{path}:1"

    def test_exception_at_import__failed_with_where_and_traceback(self, plugin_dir):
        """An exception raised at import is FAILED with type, message, line and traceback."""
        path = plugin_dir.add("boom", "x = 1\nraise ValueError('bad config')\ndef run(): pass\n")
        report = load(path)
        assert (report["status"], report["error_type"], report["message"]) == (
            "failed",
            "ValueError",
            "bad config",
        )
        assert report["where"] == f"{path}:2 in <module>"
        assert "ValueError: bad config" in report["traceback"]

    def test_system_exit_at_import__failed(self, plugin_dir):
        """sys.exit() at import is caught as a failure rather than ending the host."""
        report = load(plugin_dir.add("quits", "import sys\nsys.exit(3)\n"))
        assert (report["status"], report["error_type"]) == ("failed", "SystemExit")

    def test_source_gone__unavailable_naming_path(self, plugin_dir):
        """A plugin whose file disappeared is UNAVAILABLE, naming the path."""
        report = load(plugin_dir.path / "gone.py")
        assert report["status"] == "unavailable"
        assert report["missing"] == [{"kind": "source", "item": str(plugin_dir.path / "gone.py")}]


class TestDeclarations:
    @pytest.mark.parametrize(
        ("source", "field", "words"),
        [
            ("name = 5\ndef run(): pass\n", "name", "name must be a non-empty string"),
            ("requires = ['torch']\ndef run(): pass\n", "requires", "requires must be a dict"),
            ("requires = {'gpus': 1}\ndef run(): pass\n", "requires", "unknown key(s) gpus"),
            ("requires = {'gpu': 'yes'}\ndef run(): pass\n", "requires", "True or False"),
            ("requires = {'files': [1]}\ndef run(): pass\n", "requires", "list of strings"),
            ("limits = [1]\ndef run(): pass\n", "limits", "limits must be a dict"),
            ("setup = 3\ndef run(): pass\n", "setup", "setup must be a function"),
            ("x = 1\n", "run", "defines no run(**params) function"),
            ("version = '1.0+' + 'x' * 150\ndef run(): pass\n", "version", "at most 100"),
            ("name = 'team/ocr'\ndef run(): pass\n", "name", "letters, digits, _ and -"),
            ("name = '-ocr'\ndef run(): pass\n", "name", "letters, digits, _ and -"),
        ],
    )
    def test_bad_declaration__failed_naming_field(self, plugin_dir, source, field, words):
        """A malformed declaration is FAILED, naming the field and what is expected."""
        report = load(plugin_dir.add("bad", source))
        assert (report["status"], report["stage"], report["field"]) == (
            "failed",
            "declarations",
            field,
        )
        assert words in report["message"]


class TestRequires:
    def test_missing_module__unavailable(self, plugin_dir):
        """A module listed in requires.modules that is not importable is reported by name."""
        path = plugin_dir.add("p", "requires = {'modules': ['json', 'nope_mod']}\ndef run(): pass")
        report = load(path)
        assert report["status"] == "unavailable"
        assert report["stage"] == "requires"
        assert report["missing"] == [{"kind": "module", "item": "nope_mod"}]

    def test_missing_env__unavailable(self, plugin_dir):
        """An unset or empty environment variable in requires.env is reported by name."""
        path = plugin_dir.add("p", "requires = {'env': ['PH_SET', 'PH_EMPTY']}\ndef run(): pass")
        report = load(path, env={"PH_SET": "1", "PH_EMPTY": ""})
        assert report["missing"] == [{"kind": "env", "item": "PH_EMPTY"}]

    def test_files__expanded_and_checked(self, plugin_dir, tmp_path):
        """Files are expanded (~, $VARS, relative to the plugin) and must exist, non-empty."""
        (tmp_path / "good.pt").write_bytes(b"weights")
        (tmp_path / "empty.pt").write_bytes(b"")
        (plugin_dir.path / "local.pt").write_bytes(b"w")
        files = ["$PH_DIR/good.pt", "~/good.pt", "local.pt", "$PH_DIR/empty.pt", "$PH_DIR/no.pt"]
        path = plugin_dir.add("p", f"requires = {{'files': {files!r}}}\ndef run(): pass")
        report = load(path, env={"PH_DIR": str(tmp_path), "HOME": str(tmp_path)})
        assert report["missing"] == [
            {"kind": "file", "item": "$PH_DIR/empty.pt", "problem": "empty",
             "path": str(tmp_path / "empty.pt")},
            {"kind": "file", "item": "$PH_DIR/no.pt", "problem": "not_found",
             "path": str(tmp_path / "no.pt")},
        ]  # fmt: skip

    def test_file_with_unset_variable__says_so(self, plugin_dir):
        """A file path whose variable is unset is reported as such, not as a plain miss."""
        path = plugin_dir.add("p", "requires = {'files': ['$PH_UNSET/m.pt']}\ndef run(): pass")
        env = {k: v for k, v in os.environ.items() if k != "PH_UNSET"}
        completed = subprocess.run(
            [sys.executable, "-c", _DRIVER, json.dumps([("load_plugin", [spec_of(path)])])],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        report = json.loads(completed.stdout)[0]["value"]
        assert report["missing"][0]["problem"] == "unset_variable"

    def test_setup_not_run_when_requirements_missing(self, plugin_dir, tmp_path):
        """setup() does not run for a plugin whose requirements are missing."""
        marker = tmp_path / "setup-ran"
        path = plugin_dir.add(
            "p",
            f"""
            requires = {{"env": ["PH_NOT_SET_ANYWHERE"]}}
            def setup():
                open({str(marker)!r}, "w").close()
            def run():
                pass
            """,
        )
        assert load(path)["status"] == "unavailable"
        assert not marker.exists()


class TestGpu:
    def _gpu_plugin(self, plugin_dir) -> Path:
        return plugin_dir.add("tracker", "requires = {'gpu': True}\ndef run(): pass")

    def test_no_torch_no_nvidia_smi__unavailable_saying_what_was_checked(self, plugin_dir):
        """Without torch and nvidia-smi the GPU is missing, and the report says both."""
        report = load(self._gpu_plugin(plugin_dir), env={"PATH": "/nonexistent"})
        assert report["status"] == "unavailable"
        (item,) = report["missing"]
        assert item["kind"] == "gpu"
        assert "nvidia-smi is absent" in item["checked"]

    def test_nvidia_smi_listing_a_gpu__available(self, plugin_dir, tmp_path):
        """nvidia-smi listing a GPU satisfies requires.gpu when torch is not installed."""
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        smi = bin_dir / "nvidia-smi"
        smi.write_text("#!/bin/sh\necho 'GPU 0: Fake Tesla (UUID: GPU-1)'\n")
        smi.chmod(0o755)
        report = load(self._gpu_plugin(plugin_dir), env={"PATH": f"{bin_dir}:/usr/bin:/bin"})
        assert report["status"] == "ok"

    def test_torch_without_cuda__unavailable_naming_torch_check(self, plugin_dir, tmp_path):
        """When torch is installed, torch.cuda.is_available() decides, and the report says so."""
        fake = tmp_path / "site" / "torch"
        fake.mkdir(parents=True)
        (fake / "__init__.py").write_text("class cuda:\n    is_available = staticmethod(bool)\n")
        env = {"PYTHONPATH": str(tmp_path / "site"), "PATH": "/nonexistent"}
        report = load(self._gpu_plugin(plugin_dir), env=env)
        assert report["missing"][0]["checked"].startswith("torch.cuda.is_available() is False")


class TestSetup:
    def test_setup_runs_once_per_host(self, plugin_dir):
        """setup() runs at load, and calls in the same host reuse the set-up module."""
        path = plugin_dir.add(
            "counter",
            "calls = []\ndef setup():\n    calls.append(1)\ndef run():\n    return len(calls)\n",
        )
        spec = spec_of(path)
        reports = host(
            ("load_plugin", [spec]), ("call_plugin", [spec, {}]), ("call_plugin", [spec, {}])
        )
        assert reports[0]["value"]["has_setup"] is True
        assert [r["value"] for r in reports[1:]] == [1, 1]

    def test_failing_setup__failed_with_declarations_and_where(self, plugin_dir):
        """A setup() that raises is FAILED at stage setup, keeping what the plugin declared."""
        path = plugin_dir.add(
            "lic",
            "version = '2'\ndef setup():\n    raise RuntimeError('license server down')\n"
            "def run(): pass\n",
        )
        report = load(path)
        assert (report["status"], report["stage"], report["version"]) == ("failed", "setup", "2")
        assert report["message"] == "license server down"
        assert report["where"] == f"{path}:3 in setup"


class TestCall:
    def test_call_without_load__imports_and_sets_up(self, plugin_dir):
        """A call in a fresh host imports the plugin and runs setup() first."""
        path = plugin_dir.add(
            "p", "ready = False\ndef setup():\n    global ready\n    ready = True\n"
            "def run(x=0):\n    return {'ready': ready, 'x': x}\n"
        )  # fmt: skip
        (call,) = host(("call_plugin", [spec_of(path), {"x": 5}]))
        assert call == {"value": {"ready": True, "x": 5}}

    def test_warm_then_call__setup_once(self, plugin_dir):
        """warm_plugin sets the plugin up; later calls in that host do not repeat it."""
        path = plugin_dir.add(
            "p", "n = []\ndef setup():\n    n.append(1)\ndef run():\n    return len(n)\n"
        )
        spec = spec_of(path)
        _, call = host(("warm_plugin", [spec]), ("call_plugin", [spec, {}]))
        assert call == {"value": 1}

    def test_bad_params__params_error_listing_signature(self, plugin_dir):
        """Params that do not fit run() raise PluginParamsError naming what run accepts."""
        path = plugin_dir.add("p", "def run(seconds, *, label='x'):\n    return seconds\n")
        (call,) = host(("call_plugin", [spec_of(path), {"secs": 1}]))
        assert call["raised"] == "PluginParamsError"
        assert "given params (secs)" in call["message"]
        assert "run(seconds, *, label='x')" in call["message"]

    def test_exception_in_run__propagates_as_is(self, plugin_dir):
        """An exception inside run() is the plugin's and reaches the sandbox unchanged."""
        path = plugin_dir.add("p", "def run():\n    raise KeyError('k')\n")
        (call,) = host(("call_plugin", [spec_of(path), {}]))
        assert call["raised"] == "KeyError"

    def test_call_of_broken_plugin__load_error_with_report(self, plugin_dir):
        """A call of a plugin that cannot import raises PluginLoadError with the reason."""
        path = plugin_dir.add("p", "raise OSError('disk gone')\n")
        (call,) = host(("call_plugin", [spec_of(path), {}]))
        assert call == {
            "raised": "PluginLoadError",
            "message": f"import raised OSError: disk gone at {path}:1 in <module>",
        }


class TestEntryPoint:
    def test_entry_point_module__imported_from_its_distribution_path(self, tmp_path):
        """An entry point's module is imported from the distribution's path entry."""
        site = tmp_path / "site"
        (site / "acme").mkdir(parents=True)
        (site / "acme" / "__init__.py").write_text("")
        (site / "acme" / "ocr.py").write_text("version = '9'\ndef run():\n    return 'ep'\n")
        spec = {"kind": "entry_point", "name": "acme-ocr", "path": str(site), "module": "acme.ocr"}
        load_result, call = host(("load_plugin", [spec]), ("call_plugin", [spec, {}]))
        assert (load_result["value"]["name"], load_result["value"]["version"]) == ("acme-ocr", "9")
        assert call == {"value": "ep"}

    def test_entry_point_module_not_installed__unavailable(self, tmp_path):
        """An entry point whose module is not installed is UNAVAILABLE, naming the module."""
        spec = {"kind": "entry_point", "name": "x", "path": str(tmp_path), "module": "gone.mod"}
        report = host(("load_plugin", [spec]))[0]["value"]
        assert report["status"] == "unavailable"
        assert report["missing"] == [{"kind": "entry_point", "item": "gone.mod"}]
