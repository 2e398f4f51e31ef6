"""The example plugins `make run` loads: every state side by side, each with its reason."""

from __future__ import annotations

import glob
import shutil
from pathlib import Path

import pytest

from plugins_app import pipeline
from plugins_app.models import Plugin, PluginState, RunStatus
from sandbox import shutdown_sandbox

pytestmark = pytest.mark.django_db

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "plugins"
HAS_GPU = bool(shutil.which("nvidia-smi") or glob.glob("/dev/nvidia[0-9]*"))
ACTOR = "command:test"


@pytest.fixture(scope="module")
def example_files() -> list[str]:
    return sorted(path.stem for path in EXAMPLES.glob("*.py"))


@pytest.fixture
def examples(settings, monkeypatch, tmp_path):
    """The examples loaded the way `make run` loads them (with an empty home directory)."""
    monkeypatch.setenv("HOME", str(tmp_path))  # no downloaded detector model
    monkeypatch.delenv("WEATHER_API_URL", raising=False)
    shutdown_sandbox()  # sandbox hosts take the environment when they start
    settings.PORTAL_PLUGIN_DIRS = [str(EXAMPLES)]
    reports = {report.name: report for report in pipeline.load_plugins(actor=ACTOR)}
    yield reports
    pipeline.discard_warm_hosts()
    monkeypatch.undo()
    shutdown_sandbox()


def run(plugin: str, **params) -> object:
    return pipeline.run_plugin(name=plugin, params=params, actor=ACTOR)


class TestLoadedStates:
    def test_every_example__loaded_with_expected_state(self, examples, example_files):
        """Each example file ends in the state it demonstrates."""
        states = {name: report.state for name, report in examples.items()}
        assert sorted(states) == example_files
        unavailable = {"detector", "weather", "yolo"} | (set() if HAS_GPU else {"tracker"})
        assert {n for n, s in states.items() if s == PluginState.UNAVAILABLE} == unavailable
        assert {n for n, s in states.items() if s == PluginState.FAILED} == {
            "bad_setup",
            "broken_syntax",
        }

    def test_reasons__name_the_exact_item_and_fix(self, examples, tmp_path):
        """The broken examples' reasons name what is missing or wrong, and what to do."""
        home = tmp_path
        assert examples["yolo"].reason == (
            "Missing Python module 'torch' required by plugin 'yolo' "
            "(install with: pip install torch)"
        )
        assert examples["detector"].reason == (
            f"Model file not found: {home}/.cache/portal-models/detector.onnx (declared in "
            "requires.files of plugin 'detector'); put the file there, then reload the plugin"
        )
        assert "Environment variable 'WEATHER_API_URL'" in examples["weather"].reason
        assert examples["broken_syntax"].reason.startswith(
            "Plugin 'broken_syntax' failed to import: SyntaxError: invalid syntax at "
        )
        assert examples["bad_setup"].reason.startswith(
            "setup() of plugin 'bad_setup' raised ConnectionRefusedError: license server"
        )

    @pytest.mark.skipif(HAS_GPU, reason="this machine has an NVIDIA GPU")
    def test_tracker__unavailable_without_gpu(self, examples):
        """The GPU example is UNAVAILABLE on a machine without a GPU, saying what was checked."""
        assert examples["tracker"].reason.startswith(
            "Plugin 'tracker' requires a CUDA GPU but none was found ("
        )

    def test_detector__recovers_once_its_model_is_downloaded(self, examples, tmp_path):
        """Putting the model file in place and reloading makes the detector available."""
        model = tmp_path / ".cache" / "portal-models" / "detector.onnx"
        model.parent.mkdir(parents=True)
        model.write_bytes(b"onnx")
        plugin = pipeline.reload_plugin(name="detector", actor=ACTOR)
        assert plugin.state == PluginState.INITIALIZED


class TestRuns:
    def test_hello__greets(self, examples):
        """The healthy example returns its greeting, set up by setup()."""
        assert run("hello", name="Ada").result == {"greeting": "Hello, Ada!"}

    def test_slow__sleeps_as_asked(self, examples):
        """The slow example sleeps for the seconds it is given."""
        result = run("slow", seconds=0.2)
        assert result.status == RunStatus.SUCCEEDED
        assert result.duration_ms >= 200

    def test_flaky__fails_or_succeeds_on_demand(self, examples):
        """The flaky example fails with its upstream error when told to, and recovers."""
        failed = run("flaky", fail=True)
        assert (failed.status, failed.error_type) == (RunStatus.FAILED, "ConnectionError")
        assert run("flaky", fail=False).status == RunStatus.SUCCEEDED
        assert Plugin.objects.get(name="flaky").state == PluginState.INITIALIZED

    def test_segfault__crashed(self, examples):
        """The segfault example crashes with SIGSEGV and leaves the plugin FAILED."""
        result = run("segfault")
        assert (result.status, result.signal) == (RunStatus.CRASHED, "SIGSEGV")
        assert Plugin.objects.get(name="segfault").state == PluginState.FAILED

    def test_memory_hog__stopped_at_256_mb(self, examples):
        """The memory hog is stopped at its 256 MB limit."""
        result = run("memory_hog")
        assert (result.status, result.outcome) == (RunStatus.CRASHED, "memory")
        assert "256 MB memory limit" in result.reason

    def test_forever__timed_out_after_2_s(self, examples):
        """The endless loop is stopped after its 2 s timeout."""
        result = run("forever")
        assert result.status == RunStatus.TIMED_OUT
        assert "within its 2 s timeout" in result.reason
        assert 2000 <= result.duration_ms < 10_000

    def test_counters__after_a_mixed_session(self, examples):
        """Counters add up over successes and failures across the examples."""
        run("hello")
        run("hello")
        run("segfault")
        hello, segfault = Plugin.objects.get(name="hello"), Plugin.objects.get(name="segfault")
        assert (hello.success_count, hello.error_count) == (2, 0)
        assert (segfault.success_count, segfault.error_count, segfault.consecutive_failures) == (
            0,
            1,
            1,
        )
