"""A real torch plugin in resident mode, through the portal: torch is imported and setup() run
once per process, its calls keep the model, an RSS limit kills only that process, and no portal
process maps libtorch."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from plugins_app import pipeline
from plugins_app.models import Plugin, PluginState, RunStatus
from tests.heavy.test_torch_plugin import TORCH_PYTHON

pytestmark = [pytest.mark.django_db, pytest.mark.torch]

ACTOR = "user:tester"

RESIDENT_TORCH = """
    import os

    import torch

    python = "torch"
    mode = "resident"
    requires = {"modules": ["torch"]}
    limits = {"timeout_s": 60, "memory_mb": 1500}
    MODEL = {}

    def setup():
        torch.set_num_threads(1)
        MODEL["weights"] = torch.rand(256, 256)  # the "model": loaded once, kept across calls
        MODEL["setups"] = MODEL.get("setups", 0) + 1

    def run(size=64, hoard_mb=0):
        hoard = torch.ones(hoard_mb * 256 * 1024) if hoard_mb else None  # float32: 4 bytes each
        x = torch.rand(size, 256)
        return {
            "pid": os.getpid(),
            "setups": MODEL["setups"],
            "weights_id": id(MODEL["weights"]),
            "torch": torch.__version__,
            "sum": float((x @ MODEL["weights"]).sum()),
            "hoard": 0 if hoard is None else hoard.numel(),
        }
"""


@pytest.fixture
def resident_torch(plugins, settings):
    """A resident torch plugin in a plugin directory, the `torch` environment named."""
    assert os.access(TORCH_PYTHON, os.X_OK), (
        f"no torch plugin environment at {TORCH_PYTHON}: run `make torch-env` first"
    )
    settings.PORTAL_PLUGIN_ENVIRONMENTS = {"torch": TORCH_PYTHON}
    plugins.add("vision", RESIDENT_TORCH)
    (report,) = pipeline.load_plugins(actor=ACTOR)
    assert report.state == PluginState.INITIALIZED, report.reason
    return plugins


def run(**params):
    return pipeline.run_plugin(name="vision", params=params, actor=ACTOR)


def maps_libtorch(pid: int | str) -> bool:
    return "libtorch" in Path(f"/proc/{pid}/maps").read_text()


class TestTorchResident:
    def test_calls__one_process_one_setup_the_model_kept(self, resident_torch):
        """Three runs: the same process, setup() once, the same weights tensor; mode resident."""
        runs = [run() for _ in range(3)]
        assert [r.status for r in runs] == [RunStatus.SUCCEEDED] * 3, runs[0].reason
        assert len({r.result["pid"] for r in runs}) == 1
        assert [r.result["setups"] for r in runs] == [1, 1, 1]
        assert len({r.result["weights_id"] for r in runs}) == 1
        assert runs[0].result["torch"] == "2.13.0+cpu"
        assert {r.mode for r in runs} == {"resident"}
        assert runs[0].environment["packages"] == {"torch": "2.13.0+cpu"}

    def test_rss_limit__kills_the_process_not_the_plugin_and_the_next_run_works(
        self, resident_torch
    ):
        """A 2 GB tensor under memory_mb=1500 (address space far larger) ends memory; then a new
        process, with setup() run once there, serves the next run."""
        first = run()
        hoarded = run(hoard_mb=2048)
        assert (hoarded.status, hoarded.outcome) == (RunStatus.CRASHED, "memory"), hoarded.reason
        assert hoarded.peak_rss_kb > 1500 * 1024
        assert hoarded.memory_mechanism == "rss-sampling"
        after = run()
        assert after.status == RunStatus.SUCCEEDED, after.reason
        assert after.result["pid"] != first.result["pid"] and after.result["setups"] == 1

    def test_portal_process__never_maps_libtorch(self, resident_torch):
        """The resident process maps libtorch; this (portal) process never does."""
        done = run()
        assert maps_libtorch(done.result["pid"])  # it is alive, serving the next call
        assert "torch" not in sys.modules
        assert not maps_libtorch("self")
        assert Plugin.objects.get(name="vision").success_count == 1


CUDA_TORCH = """
    import torch

    python = "torch"
    requires = {"modules": ["torch"]}

    def setup():
        # No GPU on this machine: make real torch report CUDA initialised, as it would after
        # torch.zeros(1, device="cuda") in setup().
        torch.cuda.is_initialized = lambda: True

    def run():
        return torch.__version__
"""


class TestTorchForkAfterCuda:
    def test_fork_mode__setup_that_initialised_cuda__unavailable_use_resident(
        self, plugins, settings
    ):
        """Real torch whose setup() reports CUDA initialised (patched: there is no GPU here) in
        fork mode: the run is refused and the plugin UNAVAILABLE, saying to use resident mode."""
        settings.PORTAL_PLUGIN_ENVIRONMENTS = {"torch": TORCH_PYTHON}
        plugins.add("cudafork", CUDA_TORCH)
        pipeline.load_plugins(actor=ACTOR)
        run = pipeline.run_plugin(name="cudafork", params={}, actor=ACTOR)
        plugin = Plugin.objects.get(name="cudafork")
        assert (run.outcome, plugin.state) == ("refused", PluginState.UNAVAILABLE)
        assert "declare mode = 'resident'" in plugin.reason
