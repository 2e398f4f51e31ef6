"""GET /v1/plugins/{name}/runs (paged, newest first) and GET /v1/runs/{id}."""

from __future__ import annotations

import pytest

from plugins_app import services

pytestmark = pytest.mark.django_db

SUMMARY_KEYS = {
    "id",
    "plugin",
    "status",
    "outcome",
    "reason",
    "error_type",
    "duration_ms",
    "actor",
    "attempt",
    "retry_of",
    "not_before",
    "queued_at",
    "started_at",
    "finished_at",
}


@pytest.fixture
def runs(make_plugin, finish_run):
    """Plugin 'ocr' with five runs (ids oldest to newest) and 'other' with one."""
    make_plugin("ocr")
    make_plugin("other")
    finish_run("other")
    made = [finish_run("ocr", stdout_tail=f"line {i}", duration_ms=float(i)) for i in range(4)]
    made.append(services.run_queue(name="ocr", params={"page": 3}, actor="user:ann"))
    return [run.pk for run in made]


class TestPluginRuns:
    def test_runs__newest_first_with_summary_keys(self, api_client, runs):
        """The plugin's runs only, newest first, each a summary without params or output."""
        response = api_client.get("/v1/plugins/ocr/runs")
        assert response.status_code == 200
        body = response.json()
        assert [run["id"] for run in body["results"]] == runs[::-1]
        assert all(set(run) == SUMMARY_KEYS for run in body["results"])
        assert body["results"][0]["status"] == "queued"
        assert {run["plugin"] for run in body["results"]} == {"ocr"}
        assert body["next"] is None

    def test_runs__pages_follow_next_links(self, api_client, runs):
        """`page_size` pages; following `next` walks every run exactly once, newest first."""
        seen, url = [], "/v1/plugins/ocr/runs?page_size=2"
        while url:
            body = api_client.get(url).json()
            assert len(body["results"]) <= 2
            seen += [run["id"] for run in body["results"]]
            url = body["next"]
        assert seen == runs[::-1]

    def test_runs__same_with_trailing_slash(self, api_client, runs):
        """/runs and /runs/ answer the same page."""
        without = api_client.get("/v1/plugins/ocr/runs").json()["results"]
        assert api_client.get("/v1/plugins/ocr/runs/").json()["results"] == without

    def test_runs__unknown_plugin_is_404(self, api_client):
        """Runs of an unknown plugin: a 404 naming it."""
        response = api_client.get("/v1/plugins/ghost/runs")
        assert response.status_code == 404
        assert response.json() == {"detail": "Plugin 'ghost' not found"}

    def test_runs__no_runs_is_an_empty_page(self, api_client, make_plugin):
        """A plugin that never ran has an empty first page."""
        make_plugin("idle")
        body = api_client.get("/v1/plugins/idle/runs").json()
        assert (body["results"], body["next"], body["previous"]) == ([], None, None)

    def test_runs__bad_cursor_is_404(self, api_client, runs):
        """A cursor the API did not issue points to no page: 404 saying to follow the links."""
        response = api_client.get("/v1/plugins/ocr/runs?cursor=garbage")
        assert response.status_code == 404
        assert "follow the next/previous links" in response.json()["detail"]

    @pytest.mark.parametrize("query", ["page_size=0", "page_size=201", "page_size=", "page_size=x"])
    def test_runs__bad_page_size_is_400(self, api_client, runs, query):
        """A page size that is not a whole number from 1 to 200 is a 400 naming it."""
        response = api_client.get(f"/v1/plugins/ocr/runs?{query}")
        assert response.status_code == 400
        assert response.json()["detail"].startswith("Invalid query parameter: page_size: ")

    def test_runs__repeated_parameter_is_400(self, api_client, runs):
        """A parameter given twice is ambiguous: 400 naming it."""
        response = api_client.get("/v1/plugins/ocr/runs?page_size=2&page_size=3")
        assert response.status_code == 400
        assert response.json()["detail"] == (
            "Invalid query parameter: page_size: Given 2 times; give it once."
        )


class TestRunDetail:
    def test_run__full_record(self, api_client, runs):
        """A run by id with its status, params and timings."""
        response = api_client.get(f"/v1/runs/{runs[-1]}")
        assert response.status_code == 200
        run = response.json()
        assert (run["id"], run["plugin"], run["status"]) == (runs[-1], "ocr", "queued")
        assert run["params"] == {"page": 3}
        assert run["actor"] == "user:ann"
        assert run["finished_at"] is None

    def test_run__same_with_trailing_slash(self, api_client, runs):
        """/runs/{id} and /runs/{id}/ answer the same run."""
        assert api_client.get(f"/v1/runs/{runs[0]}/").json()["id"] == runs[0]

    def test_run__plugin_output_hidden_from_anonymous(self, api_client, runs):
        """Anonymous readers see the outcome but not the plugin's output or traceback."""
        run = api_client.get(f"/v1/runs/{runs[1]}").json()
        assert (run["status"], run["duration_ms"]) == ("succeeded", 1.0)
        assert (run["stdout_tail"], run["stderr_tail"], run["traceback"]) == (None, None, None)

    def test_run__plugin_output_shown_to_operators(self, operator_client, runs):
        """A user with run_plugin sees the plugin's output."""
        run = operator_client.get(f"/v1/runs/{runs[1]}").json()
        assert run["stdout_tail"] == "line 1"
        assert run["stderr_tail"] == "" and run["traceback"] == ""
