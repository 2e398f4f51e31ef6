"""Each run records its environment; a run shows what changed since the last success."""

from __future__ import annotations

import sys

import pytest

from plugins_app import pipeline, selectors
from plugins_app.fingerprints import changes_between
from plugins_app.models import RunStatus

pytestmark = pytest.mark.django_db

ACTOR = "user:tester"
BEFORE = {
    "python": "/srv/envs/ocr/bin/python",
    "python_version": "3.11.7",
    "platform": "Linux-6.1-x86_64",
    "code_sha256": "a" * 64,
    "packages": {"torch": "2.13.0", "numpy": "2.1.0"},
    "files": {"yolo.pt": {"size": 10, "mtime": 0}},
}


class TestChangesBetween:
    def test_same_environment__nothing(self):
        """Identical fingerprints: no change to report."""
        assert changes_between(BEFORE, dict(BEFORE)) == []

    def test_package_code_and_file__each_named(self):
        """An upgraded package, a removed one, edited code and a replaced model, line by line."""
        after = {
            **BEFORE,
            "packages": {"torch": "2.14.1"},
            "code_sha256": "b" * 64,
            "files": {"yolo.pt": {"size": 12, "mtime": 86400}},
        }
        assert changes_between(BEFORE, after) == [
            "numpy 2.1.0 -> absent",
            "torch 2.13.0 -> 2.14.1",
            "the plugin's code changed",
            "file yolo.pt changed at 1970-01-02 00:00:00 UTC (12 bytes)",
        ]


class TestRecordedFingerprint:
    def test_run__records_interpreter_code_and_what_changed_after_an_edit(self, plugins):
        """A run stores its fingerprint; after the code changes, a failing run says so."""
        plugins.add("p", "import json\ndef run():\n    return 1\n")
        pipeline.load_plugins(actor=ACTOR)
        first = pipeline.run_plugin(name="p", params={}, actor=ACTOR)
        assert first.status == RunStatus.SUCCEEDED
        environment = first.environment
        assert environment["python"] == sys.executable
        assert environment["python_version"] == "{}.{}.{}".format(*sys.version_info[:3])
        assert len(environment["code_sha256"]) == 64
        assert selectors.environment_changes(first) == []
        plugins.add("p", "import json\ndef run():\n    raise ValueError('broken')\n")
        pipeline.reload_plugin(name="p", actor=ACTOR)
        second = pipeline.run_plugin(name="p", params={}, actor=ACTOR)
        assert second.status == RunStatus.FAILED
        assert selectors.environment_changes(second) == ["the plugin's code changed"]

    def test_run_detail_api__environment_and_changes(self, plugins, api_client, settings):
        """GET /v1/runs/{id} shows the fingerprint and what changed."""
        settings.PORTAL_API_READS_REQUIRE_AUTH = False
        plugins.add("q", "def run():\n    return 1\n")
        pipeline.load_plugins(actor=ACTOR)
        run = pipeline.run_plugin(name="q", params={}, actor=ACTOR)
        body = api_client.get(f"/v1/runs/{run.pk}").json()
        assert body["environment"]["python"] == sys.executable
        assert body["environment_changes"] == []
        assert body["memory_mechanism"] == "rss-sampling"
