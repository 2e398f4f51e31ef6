"""A real torch plugin (examples/torch/matmul.py) in its own environment, through the portal."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from plugins_app import pipeline
from plugins_app.models import Plugin, PluginState, RunStatus

pytestmark = [pytest.mark.django_db, pytest.mark.torch]

ROOT = Path(__file__).resolve().parents[2]
TORCH_PYTHON = os.environ.get(
    "TORCH_PYTHON", str(ROOT / "var" / "envs" / "torch" / "bin" / "python")
)
ACTOR = "user:tester"


@pytest.fixture
def torch_plugins(settings):
    """examples/torch loaded with the named environment `torch` pointing at the torch venv."""
    assert os.access(TORCH_PYTHON, os.X_OK), (
        f"no torch plugin environment at {TORCH_PYTHON}: run `make torch-env` first"
    )
    settings.PORTAL_PLUGIN_DIRS = [str(ROOT / "examples" / "torch")]
    settings.PORTAL_PLUGIN_ENVIRONMENTS = {"torch": TORCH_PYTHON}
    yield
    pipeline.discard_warm_hosts()


class TestTorchPlugin:
    def test_load_and_run__matmul_with_the_torch_version_as_plain_text(self, torch_plugins):
        """Loaded in its own venv; a run returns torch.__version__ (a str subclass) and a matmul."""
        (report,) = pipeline.load_plugins(actor=ACTOR)
        assert report.state == PluginState.INITIALIZED, report.reason
        run = pipeline.run_plugin(name="matmul", params={"size": 64}, actor=ACTOR)
        assert run.status == RunStatus.SUCCEEDED, run.reason
        assert run.result["torch"] == "2.13.0+cpu"
        assert run.result["size"] == 64
        assert run.result["trace"] > 0
        assert run.environment["packages"] == {"torch": "2.13.0+cpu"}
        assert run.environment["python"] == TORCH_PYTHON

    def test_import_time_warning__in_the_runs_stderr_tail(self, torch_plugins):
        """torch's warning at import (no numpy in its venv) lands in the first run's stderr."""
        pipeline.load_plugins(actor=ACTOR)
        run = pipeline.run_plugin(name="matmul", params={"size": 8}, actor=ACTOR)
        assert run.status == RunStatus.SUCCEEDED, run.reason
        assert "Failed to initialize NumPy" in run.stderr_tail

    def test_portal_process__never_maps_libtorch(self, torch_plugins):
        """After a load and a run, this (portal) process has no torch module or library."""
        import sys

        pipeline.load_plugins(actor=ACTOR)
        pipeline.run_plugin(name="matmul", params={"size": 8}, actor=ACTOR)
        assert "torch" not in sys.modules
        maps = Path("/proc/self/maps").read_text()
        assert "libtorch" not in maps
        assert Plugin.objects.get(name="matmul").success_count == 1
