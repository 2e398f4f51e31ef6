"""The plugin loader's failures as a sandboxed call reports them: each says what kind of
failure it is (a Fault) and, when the call's process lacks what the plugin requires, carries
the load report as data; the report itself has exactly the fields its type declares."""

from __future__ import annotations

from pathlib import Path

import pytest

from plugin_contract import REPORT_KEYS, LoadReport
from sandbox import (
    Fault,
    Frame,
    Limits,
    Outcome,
    Phase,
    Preload,
    SandboxResult,
    discard_preload,
    run_plugin_sandboxed,
    shutdown_sandbox,
)
from tests.plugin_contract.test_loader import load

CALL = "plugin_contract.loader:call_plugin"
WARM = "plugin_contract.loader:warm_plugin"
FAST = Limits(timeout_s=20)


@pytest.fixture(scope="module", autouse=True)
def stop_hosts():
    yield
    shutdown_sandbox()


def spec_of(path: Path) -> tuple:
    return tuple(sorted({"kind": "file", "name": path.stem, "path": str(path)}.items()))


def call(path: Path, params: object, **kwargs: object) -> SandboxResult:
    return run_plugin_sandboxed(CALL, spec_of(path), params, limits=FAST, **kwargs)


class TestFaults:
    def test_params_that_do_not_fit_run__fault_params(self, plugin_dir):
        """Params run() cannot take are a params fault, the message naming what it accepts."""
        path = plugin_dir.add("p", "def run(seconds):\n    return seconds\n")
        result = call(path, {"secs": 1})
        assert (result.outcome, result.fault, result.error_type) == (
            Outcome.ERROR,
            Fault.PARAMS,
            "PluginParamsError",
        )
        assert "cannot take the given params (secs)" in (result.message or "")

    def test_params_not_a_mapping__fault_params(self, plugin_dir):
        """Params that are not a mapping at all are a params fault too."""
        path = plugin_dir.add("p", "def run():\n    return 1\n")
        assert call(path, [1, 2]).fault == Fault.PARAMS

    def test_plugin_that_cannot_import__fault_load_with_the_reason(self, plugin_dir):
        """A call of a plugin whose import fails is a load fault; the message says why."""
        path = plugin_dir.add("p", "raise OSError('disk gone')\n")
        result = call(path, {})
        assert (result.fault, result.message) == (
            Fault.LOAD,
            f"import raised OSError: disk gone at {path}:1 in <module>",
        )

    def test_plugin_lacking_its_env__fault_unavailable_carrying_the_report(self, plugin_dir):
        """A call whose process lacks a declared variable is an unavailable fault whose
        detail is the load report naming what is missing."""
        path = plugin_dir.add(
            "p", "requires = {'env': ['H1_NO_SUCH_VARIABLE']}\ndef run():\n    return 1\n"
        )
        result = call(path, {})
        assert result.fault == Fault.UNAVAILABLE
        assert isinstance(result.detail, dict)
        assert (result.detail["status"], result.detail["missing"]) == (
            "unavailable",
            [{"kind": "env", "item": "H1_NO_SUCH_VARIABLE"}],
        )
        assert result.message == "missing env H1_NO_SUCH_VARIABLE"

    def test_exception_in_run__the_plugins_own_no_fault_frames_down_to_its_line(self, plugin_dir):
        """An exception of run() is the plugin's own: no fault; its frames reach its line."""
        path = plugin_dir.add("p", "def run():\n    raise KeyError('k')\n")
        result = call(path, {})
        assert (result.fault, result.error_type) == (None, "KeyError")
        assert result.frames[-1] == Frame(str(path), 2, "run")

    def test_warm_up_of_a_plugin_that_cannot_load__fault_load_in_phase_warm_up(self, plugin_dir):
        """A warm host whose plugin fails to load says so as a load fault of its warm-up."""
        path = plugin_dir.add("p", "def setup():\n    raise OSError('no weights')\n")
        preload = Preload(WARM, (spec_of(path), "v1"))
        try:
            result = call(path, {}, preload=preload)
        finally:
            discard_preload(preload)
        assert (result.phase, result.fault) == (Phase.WARM_UP, Fault.LOAD)


class TestLoadReport:
    def test_report__has_exactly_the_fields_its_type_declares(self, plugin_dir):
        """A load report, ok or failed, holds every field LoadReport declares and no other."""
        declared = LoadReport.__required_keys__ | LoadReport.__optional_keys__
        ok = load(plugin_dir.add("ok", "def run():\n    return 1\n"))
        failed = load(plugin_dir.add("bad", "def setup():\n    1 / 0\ndef run():\n    pass\n"))
        assert (set(ok), set(failed)) == (declared, declared)

    def test_keys_the_portal_reads__all_declared(self):
        """Every key the portal checks a report for is a field of LoadReport."""
        assert sorted(REPORT_KEYS - LoadReport.__required_keys__) == []
