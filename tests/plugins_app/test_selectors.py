"""Selectors: reads the admin, the API and the commands share."""

from __future__ import annotations

import pytest

from plugins_app import selectors, services
from plugins_app.models import RunStatus

pytestmark = pytest.mark.django_db


class TestPluginLastRunParams:
    def test_refused_run_skipped__rerun_repeats_last_real_run(self, make_plugin, finish_run):
        """A run closed as refused (plugin disabled while queued) is not what a rerun repeats."""
        make_plugin("p")
        ran = services.run_queue(name="p", params={"page": 1}, actor="t")
        services.run_start(run_id=ran.pk, worker="w:1")
        services.run_finish(run_id=ran.pk, outcome=services.RunOutcome(status=RunStatus.SUCCEEDED))
        refused = services.run_queue(name="p", params={"page": 2}, actor="t")
        services.plugin_disable(name="p", note="maintenance", actor="user:ann")
        assert services.run_start(run_id=refused.pk, worker="w:1").outcome == "refused"
        assert selectors.plugin_last_run_params(name="p") == {"page": 1}

    def test_never_ran__empty_params(self, make_plugin):
        """A plugin without runs reruns with no params."""
        make_plugin("p")
        assert selectors.plugin_last_run_params(name="p") == {}
