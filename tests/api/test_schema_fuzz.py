"""The OpenAPI schema, the docs page, and a schemathesis run against the Django WSGI app."""

from __future__ import annotations

import re
from typing import Any

import pytest
import schemathesis
from django.core.wsgi import get_wsgi_application
from hypothesis import HealthCheck, settings
from jsonschema import Draft202012Validator
from schemathesis.core.failures import FailureGroup

from plugins_app import pipeline, services
from plugins_app.models import PluginRun, RunOutcomeKind, RunStatus

SCHEMA_URL = "/v1/schema/?format=json"
OPERATIONS = {
    ("/v1/plugins", "get"),
    ("/v1/plugins/{name}/health", "get"),
    ("/v1/plugins/{name}/runs", "get"),
    ("/v1/plugins/{name}/runs", "post"),
    ("/v1/plugins/{name}/reload", "post"),
    ("/v1/runs/{run_id}", "get"),
    ("/v1/runs/{run_id}/cancel", "post"),
    ("/v1/workers", "get"),
}

# Loaded once from the running app, like a client would: the schema view needs no database.
schema = schemathesis.openapi.from_wsgi(SCHEMA_URL, get_wsgi_application())
# JSON Schema cannot say "no NUL at any depth" of params; the API refuses NUL by design (a 400,
# docs/api.md), which tests/api/test_untrusted_input.py checks, so valid examples carry none.
schema.config.generation.update(allow_x00=False)

fuzz_settings = settings(
    max_examples=25,
    deadline=None,
    derandomize=True,  # the same examples on every run, so CI is repeatable
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture
def in_test_transaction():
    """Keep the test's connection across WSGI requests, as Django's own test client does."""
    from django.core import signals
    from django.db import close_old_connections

    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    yield
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


@pytest.fixture
def runs_in_every_status(make_plugin, finish_run) -> dict[str, PluginRun]:
    """Runs of plugin 'ocr' in every status a client can read, by kind; results of every shape."""
    make_plugin("ocr")
    failure = {"duration_ms": 12.5, "error_type": "ValueError"}
    runs = {
        "queued": services.run_queue(name="ocr", params={"page": 1}, actor="test"),
        "running": services.run_queue(name="ocr", params={}, actor="test"),
        "succeeded with an object": finish_run("ocr", result={"text": "hi"}, outcome="ok"),
        "succeeded with a list": finish_run("ocr", result=[1, "two"], outcome="ok"),
        "succeeded with a string": finish_run("ocr", result="hi", outcome="ok"),
        "succeeded with a number": finish_run("ocr", result=1.5, outcome="ok"),
        "succeeded with None": finish_run("ocr", result=None, outcome="ok"),
        "failed": finish_run("ocr", status=RunStatus.FAILED, outcome="error", **failure),
        "timed out": finish_run("ocr", status=RunStatus.TIMED_OUT, outcome="timeout"),
        "crashed": finish_run("ocr", status=RunStatus.CRASHED, outcome="memory", exit_code=-9),
        "interrupted": finish_run(
            "ocr", status=RunStatus.INTERRUPTED, outcome="interrupted", duration_ms=None
        ),
        "cancelled": services.run_queue(name="ocr", params={}, actor="test"),
    }
    services.run_cancel(run_id=runs["cancelled"].pk, actor="api:ann")
    services.run_start(run_id=runs["running"].pk, worker="test:1")
    make_plugin("off")
    refused = services.run_queue(name="off", params={}, actor="test")
    services.plugin_disable(name="off", note="maintenance", actor="user:ann")
    runs["refused"] = services.run_start(run_id=refused.pk, worker="test:1")
    assert runs["refused"].outcome == RunOutcomeKind.REFUSED
    return {kind: PluginRun.objects.get(pk=run.pk) for kind, run in runs.items()}


# While on, a fuzzed integer `run_id` is mapped onto a run in the database, so that
# GET /v1/runs/{run_id} reads real runs of every status: a fuzzed integer hardly ever hits one.
_reach_real_runs = False


@schema.hook
def map_path_parameters(context, path_parameters: dict[str, Any] | None) -> Any:
    run_id = (path_parameters or {}).get("run_id")
    if not _reach_real_runs or not isinstance(run_id, int) or isinstance(run_id, bool):
        return path_parameters
    ids = list(PluginRun.objects.order_by("pk").values_list("pk", flat=True))
    return {**(path_parameters or {}), "run_id": ids[run_id % len(ids)]} if ids else path_parameters


@pytest.fixture
def fuzzed_run_ids_reach_real_runs():
    """Fuzzed integer run ids are mapped onto the runs in the database during the test."""
    global _reach_real_runs
    _reach_real_runs = True
    yield
    _reach_real_runs = False


@pytest.fixture
def registry(
    in_test_transaction, make_plugin, runs_in_every_status, fuzzed_run_ids_reach_real_runs
):
    """Plugins in every state, with runs in every status, which fuzzed requests reach."""
    make_plugin("loaded", initialized=False)
    services.plugin_mark_unavailable(name="gpu", reason="No CUDA GPU found on this host", actor="t")


class TestSchema:
    def test_schema__documents_every_operation_once(self, client):
        """The generated OpenAPI 3 schema lists each endpoint once, without slash aliases."""
        response = client.get(SCHEMA_URL)
        assert response.status_code == 200
        document = response.json()
        assert document["openapi"].startswith("3.")
        operations = {(path, method) for path, item in document["paths"].items() for method in item}
        assert operations == OPERATIONS

    def test_schema__health_record_requires_every_key(self, client):
        """The health record schema requires all twenty-four keys."""
        document = client.get(SCHEMA_URL).json()
        record = document["components"]["schemas"]["HealthRecord"]
        assert set(record["required"]) == set(record["properties"])
        assert len(record["properties"]) == 24

    def test_schema__no_value_matches_two_branches_of_a_oneof(self, client):
        """A `oneOf` refuses a value both branches accept (a null run result): none overlap."""
        document = client.get(SCHEMA_URL).json()
        probes = [None, "", "text", 0, 1.5, True, [], {}]
        overlaps = []
        for where, branches in _one_ofs(document):
            validators = [
                Draft202012Validator({**branch, "components": document["components"]})
                for branch in branches
            ]
            overlaps += [
                f"{where}: {value!r}"
                for value in probes
                if sum(validator.is_valid(value) for validator in validators) > 1
            ]
        assert not overlaps, "values valid under more than one oneOf branch: " + "; ".join(overlaps)

    def test_schema__run_result_any_json_value_or_null(self, client):
        """`Run.result` takes what run() returned, any JSON value, and null (no result yet)."""
        document = client.get(SCHEMA_URL).json()
        declared = document["components"]["schemas"]["Run"]["properties"]["result"]
        Draft202012Validator.check_schema(declared)
        result = Draft202012Validator(declared)
        for value in (None, {"text": "hi"}, [1, "two"], "hi", 1.5, 3, True):
            assert result.is_valid(value), value

    def test_docs__served_from_installed_packages(self, client):
        """/v1/docs/ is a Swagger UI page whose assets come from this server, not a CDN."""
        response = client.get("/v1/docs/")
        assert response.status_code == 200
        page = response.content.decode()
        assets = re.findall(r'(?:src|href)="([^"]+\.(?:js|css|png))"', page)
        assert assets, "the page loads Swagger UI's assets"
        assert not [url for url in assets if url.startswith(("http:", "https:", "//"))]
        assert "cdn" not in page.lower()
        for url in assets:
            assert client.get(url).status_code == 200, url


def _one_ofs(node: Any, where: str = "#") -> list[tuple[str, list]]:
    """Every `oneOf` in a JSON document, with where it is."""
    if isinstance(node, dict):
        found = [(where, node["oneOf"])] if isinstance(node.get("oneOf"), list) else []
        for key, value in node.items():
            found += _one_ofs(value, f"{where}/{key}")
        return found
    if isinstance(node, list):
        return [
            hit for index, item in enumerate(node) for hit in _one_ofs(item, f"{where}/{index}")
        ]
    return []


@pytest.mark.django_db
class TestResponsesConform:
    @pytest.mark.parametrize("as_operator", [False, True], ids=["anonymous", "operator"])
    def test_run__every_status_matches_the_schema(
        self, in_test_transaction, runs_in_every_status, make_user, as_operator
    ):
        """GET /v1/runs/{id} of a queued, running, failed, refused... run matches the schema."""
        from plugins_app.tokens import issue_token

        headers = {}
        if as_operator:
            operator = make_user("operator", "plugins_app.run_plugin")
            headers["Authorization"] = f"Token {issue_token(user=operator)}"
        operation = schema["/v1/runs/{run_id}"]["GET"]
        failures = {}
        for kind, run in runs_in_every_status.items():
            case = operation.Case(path_parameters={"run_id": run.pk})
            response = case.call(headers=headers)
            assert response.status_code == 200, kind
            try:
                case.validate_response(response)
            except FailureGroup as failure:
                failures[kind] = [str(each).splitlines()[:12] for each in failure.exceptions]
        assert not failures, failures

    def test_run_list__every_status_matches_the_schema(
        self, in_test_transaction, runs_in_every_status
    ):
        """The run list holding a run of every status matches the schema."""
        case = schema["/v1/plugins/{name}/runs"]["GET"].Case(
            path_parameters={"name": "ocr"}, query={"page_size": 50}
        )
        response = case.call()
        assert response.status_code == 200
        assert len(response.json()["results"]) == len(runs_in_every_status) - 1  # 'off' apart
        case.validate_response(response)


@pytest.mark.django_db
@schema.parametrize()
@fuzz_settings
def test_api__anonymous_requests_conform(case, registry):
    """Anonymous fuzzing: no 500, and every response matches the schema."""
    case.call_and_validate()


@pytest.fixture
def loaded_registry(
    in_test_transaction, plugin_dir, settings, make_user, fuzzed_run_ids_reach_real_runs
):
    """Real plugins loaded through the pipeline, runs inline; an operator token for writes.

    'ocr' fails on an odd number of params and returns nothing on none, so fuzzed runs end
    failed and with a null result too, not only with a value.
    """
    from django.core.cache import cache

    from plugins_app.tokens import issue_token

    settings.PORTAL_PLUGIN_DIRS = [str(plugin_dir.path)]
    settings.PORTAL_RUN_EXECUTOR = "inline"
    settings.PORTAL_API_WRITE_RATE = "100000/minute"
    cache.clear()
    plugin_dir.add(
        "ocr",
        """
        def run(**params):
            if len(params) % 2:
                raise ValueError("an odd number of params, on purpose")
            return sorted(params) or None
        """,
    )
    plugin_dir.add("gpu", "requires = {'env': ['PORTAL_FUZZ_NO_SUCH_VAR']}\ndef run(): pass\n")
    pipeline.load_plugins(actor="test")
    user = make_user("operator", "plugins_app.run_plugin")
    yield issue_token(user=user)
    pipeline.discard_warm_hosts()
    cache.clear()


@pytest.mark.django_db
@schema.parametrize()
@fuzz_settings
def test_api__operator_requests_conform(case, loaded_registry):
    """Fuzzing as an operator, writes included (real runs and reloads): no 500, schema kept."""
    case.call_and_validate(headers={"Authorization": f"Token {loaded_registry}"})
