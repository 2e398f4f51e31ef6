"""POST /v1/plugins/{name}/runs and /reload against the real pipeline and sandbox."""

from __future__ import annotations

import json

import pytest

from plugins_app import pipeline, services
from plugins_app.executor import shutdown_executor
from plugins_app.models import PluginRun, RunStatus

pytestmark = pytest.mark.django_db

ECHO = '''
"""Echoes its params."""
def run(**params):
    return {"echo": params}
'''


@pytest.fixture
def plugins(plugins, settings):
    """The shared plugin directory, runs executed inline (synchronously)."""
    settings.PORTAL_RUN_EXECUTOR = "inline"
    return plugins


@pytest.fixture
def echo(plugins):
    plugins.add("echo", ECHO)
    pipeline.reload_plugin(name="echo", actor="test")
    return "echo"


def post_json(client, path: str, body, **extra):
    return client.post(path, json.dumps(body), content_type="application/json", **extra)


class TestSubmitRun:
    def test_submit__202_with_the_run_and_its_location(self, operator_client, echo):
        """A run is queued: 202 with the run, a Location that serves it, actor recorded."""
        response = post_json(operator_client, "/v1/plugins/echo/runs", {"params": {"x": 1}})
        assert response.status_code == 202
        run = response.json()
        assert response["Location"] == f"/v1/runs/{run['id']}"
        assert (run["plugin"], run["params"], run["actor"]) == ("echo", {"x": 1}, "api:operator")
        stored = operator_client.get(response["Location"]).json()
        assert stored["status"] == "succeeded"  # the inline executor ran it already
        assert stored["result"] == {"echo": {"x": 1}}

    def test_submit__wait_returns_the_finished_run(self, operator_client, echo):
        """`?wait=` returns 200 with the finished run and its result."""
        response = post_json(
            operator_client, "/v1/plugins/echo/runs?wait=10", {"params": {"word": "hi"}}
        )
        assert response.status_code == 200
        run = response.json()
        assert (run["status"], run["result"]) == ("succeeded", {"echo": {"word": "hi"}})
        assert run["duration_ms"] > 0
        assert response["Location"] == f"/v1/runs/{run['id']}"

    def test_submit__failing_plugin_is_a_finished_failed_run(self, operator_client, plugins):
        """A plugin that raises: still 200 (the request worked), the run failed with a reason."""
        plugins.add("boom", "def run():\n    raise ValueError('bad page')\n")
        pipeline.reload_plugin(name="boom", actor="test")
        response = post_json(operator_client, "/v1/plugins/boom/runs?wait=10", {})
        assert response.status_code == 200
        run = response.json()
        assert (run["status"], run["error_type"]) == ("failed", "ValueError")
        assert "bad page" in run["reason"]
        health = operator_client.get("/v1/plugins/boom/health").json()
        assert (health["state"], health["error_count"]) == ("FAILED", 1)

    def test_submit__empty_body_means_no_params(self, operator_client, echo):
        """No body at all runs the plugin without params."""
        response = operator_client.post("/v1/plugins/echo/runs?wait=10")
        assert response.status_code == 200
        assert response.json()["result"] == {"echo": {}}

    def test_submit__unknown_plugin_is_404(self, operator_client, plugins):
        """Running an unknown plugin is a 404 that names it."""
        response = post_json(operator_client, "/v1/plugins/ghost/runs", {"params": {}})
        assert response.status_code == 404
        assert response.json() == {"detail": "Plugin 'ghost' not found"}

    def test_submit__disabled_plugin_is_409_with_its_reason(self, operator_client, echo):
        """A disabled plugin refuses runs: 409 with who disabled it and why; nothing counted."""
        services.plugin_disable(name="echo", note="flapping at night", actor="user:ann")
        response = post_json(operator_client, "/v1/plugins/echo/runs", {"params": {}})
        assert response.status_code == 409
        detail = response.json()["detail"]
        assert "disabled by user:ann: flapping at night" in detail
        assert PluginRun.objects.count() == 0

    def test_submit__unavailable_plugin_is_409_with_its_reason(self, operator_client, plugins):
        """An UNAVAILABLE plugin refuses runs: 409 carrying the actionable reason."""
        plugins.add("needs", 'requires = {"modules": ["no_such_module_here"]}\ndef run(): pass\n')
        plugin = pipeline.reload_plugin(name="needs", actor="test")
        response = post_json(operator_client, "/v1/plugins/needs/runs", {"params": {}})
        assert response.status_code == 409
        assert "UNAVAILABLE" in response.json()["detail"]
        assert plugin.reason in response.json()["detail"]


class TestSubmitRunBadInput:
    @pytest.mark.parametrize(
        ("body", "message"),
        [
            ("{not json", "Request body is not valid JSON"),
            ("[1, 2]", "Invalid request body: Expected a JSON object, got an array."),
            ('"text"', "Invalid request body: Expected a JSON object, got a string."),
            ('{"params": [1]}', "Invalid request body: params: Expected a dictionary"),
            ('{"params": "x"}', "Invalid request body: params: Expected a dictionary"),
            ('{"params": {}, "timeout": 5}', "Invalid request body: timeout: Unknown field"),
            ('{"parms": {}}', "Invalid request body: parms: Unknown field 'parms'"),
            ('{"params": {"not a name": 1}}', "Invalid request body: params: Parameter names"),
            ('{"params": {"2x": 1}}', "Invalid request body: params: Parameter names"),
        ],
    )
    def test_bad_body__400_naming_the_problem(self, operator_client, echo, body, message):
        """Bad JSON, a non-object, params not an object, unknown keys: 400 saying which."""
        response = operator_client.post(
            "/v1/plugins/echo/runs", body, content_type="application/json"
        )
        assert response.status_code == 400
        assert response.json()["detail"].startswith(message), response.json()
        assert PluginRun.objects.count() == 0

    def test_deeply_nested_body__400_not_500(self, operator_client, echo):
        """JSON nested too deep to parse (20,000 levels) is a 400 saying so, not a 500."""
        body = '{"params": {"x": ' + "[" * 20_000 + "]" * 20_000 + "}}"
        response = operator_client.post(
            "/v1/plugins/echo/runs", body, content_type="application/json"
        )
        assert response.status_code == 400
        assert response.json()["detail"].startswith("Request body is nested too deeply")
        assert PluginRun.objects.count() == 0

    def test_deeply_nested_params__400_naming_the_limit(self, operator_client, echo):
        """Parseable params nested 900 levels deep are a 400 stating the depth limit."""
        body = '{"params": {"x": ' + "[" * 900 + "]" * 900 + "}}"
        response = operator_client.post(
            "/v1/plugins/echo/runs", body, content_type="application/json"
        )
        assert response.status_code == 400
        assert response.json()["detail"].startswith(
            "Invalid request body: params: Parameters nest at most 100 levels deep"
        ), response.json()
        assert PluginRun.objects.count() == 0

    def test_nested_params_within_the_limit__run(self, operator_client, echo):
        """Params nested 90 levels deep still run and come back intact."""
        nested: list = []
        for _ in range(89):
            nested = [nested]
        response = post_json(operator_client, "/v1/plugins/echo/runs", {"params": {"x": nested}})
        assert response.status_code == 202, response.json()
        stored = operator_client.get(response["Location"]).json()
        assert stored["result"] == {"echo": {"x": nested}}

    @pytest.mark.parametrize("wait", ["-1", "61", "soon", ""])
    def test_bad_wait__400(self, operator_client, echo, wait):
        """`?wait=` must be a number of seconds from 0 to PORTAL_API_MAX_WAIT_S."""
        response = post_json(operator_client, f"/v1/plugins/echo/runs?wait={wait}", {})
        assert response.status_code == 400
        assert response.json()["detail"].startswith("Invalid query parameter: wait: ")

    def test_oversized_body__413_with_the_limit(self, operator_client, echo, settings):
        """A body over PORTAL_API_MAX_BODY_BYTES is a 413 that states the limit."""
        settings.PORTAL_API_MAX_BODY_BYTES = 1024
        body = {"params": {"text": "x" * 2000}}
        response = post_json(operator_client, "/v1/plugins/echo/runs", body)
        assert response.status_code == 413
        assert "larger than the 1024 bytes" in response.json()["detail"]
        assert PluginRun.objects.count() == 0

    @pytest.mark.parametrize(
        ("content_type", "body"),
        [("application/x-www-form-urlencoded", "params=1"), ("text/plain", '{"params": {}}')],
    )
    def test_not_json__415(self, operator_client, echo, content_type, body):
        """A body that is not JSON is a 415 naming the media type."""
        response = operator_client.post("/v1/plugins/echo/runs", body, content_type=content_type)
        assert response.status_code == 415
        assert content_type in response.json()["detail"]


class TestReload:
    def test_reload__rechecks_and_returns_health(self, operator_client, plugins, tmp_path):
        """Reload re-checks in the sandbox: UNAVAILABLE while the model is missing, then back."""
        model = tmp_path / "yolo.pt"
        plugins.add("yolo", f"requires = {{'files': [{str(model)!r}]}}\ndef run(): return 1\n")
        pipeline.reload_plugin(name="yolo", actor="test")
        response = operator_client.post("/v1/plugins/yolo/reload")
        assert response.status_code == 200
        assert response.json()["state"] == "UNAVAILABLE"
        assert f"Model file not found: {model}" in response.json()["reason"]
        model.write_bytes(b"weights")
        response = operator_client.post("/v1/plugins/yolo/reload/")
        assert response.status_code == 200
        record = response.json()
        assert (record["state"], record["reason"], record["stale"]) == ("INITIALIZED", None, False)

    def test_reload__unknown_plugin_is_404(self, operator_client, plugins):
        """Reloading an unknown plugin is a 404 that names it."""
        response = operator_client.post("/v1/plugins/ghost/reload")
        assert response.status_code == 404
        assert response.json() == {"detail": "Plugin 'ghost' not found"}

    def test_reload__unknown_body_keys_are_400(self, operator_client, echo):
        """Reload takes no fields: an unexpected key is a 400 naming it."""
        response = post_json(operator_client, "/v1/plugins/echo/reload", {"force": True})
        assert response.status_code == 400
        assert response.json()["detail"].startswith("Invalid request body: force: Unknown field")


@pytest.mark.django_db(transaction=True)
class TestWaitWithBackgroundRuns:
    @pytest.fixture
    def background(self, plugins, settings):
        settings.PORTAL_RUN_EXECUTOR = "thread"
        shutdown_executor()
        plugins.add("sleeper", "import time\ndef run(s=0.0):\n    time.sleep(s)\n    return s\n")
        pipeline.reload_plugin(name="sleeper", actor="test")
        yield
        shutdown_executor()

    def test_wait__still_running_after_wait_is_202(self, operator_client, background):
        """A run longer than `wait` answers 202 with the run as it stands, then finishes."""
        response = post_json(
            operator_client, "/v1/plugins/sleeper/runs?wait=0.3", {"params": {"s": 2}}
        )
        assert response.status_code == 202
        run = response.json()
        assert run["status"] in {"queued", "running"}
        finished = pipeline.wait_for_run(run_id=run["id"], timeout_s=20)
        assert finished.status == RunStatus.SUCCEEDED

    def test_submit__answers_before_the_run_ends(self, operator_client, background):
        """Without `wait` the answer comes at once, with the run queued or running."""
        response = post_json(operator_client, "/v1/plugins/sleeper/runs", {"params": {"s": 1}})
        assert response.status_code == 202
        assert response.json()["status"] in {"queued", "running"}
        assert pipeline.wait_for_run(run_id=response.json()["id"], timeout_s=20).is_finished
