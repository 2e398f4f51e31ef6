"""The OpenAPI schema, the docs page, and a schemathesis run against the Django WSGI app."""

from __future__ import annotations

import re

import pytest
import schemathesis
from django.core.wsgi import get_wsgi_application
from hypothesis import HealthCheck, settings

from plugins_app import pipeline, services

SCHEMA_URL = "/v1/schema/?format=json"
OPERATIONS = {
    ("/v1/plugins", "get"),
    ("/v1/plugins/{name}/health", "get"),
    ("/v1/plugins/{name}/runs", "get"),
    ("/v1/plugins/{name}/runs", "post"),
    ("/v1/plugins/{name}/reload", "post"),
    ("/v1/runs/{run_id}", "get"),
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
def registry(in_test_transaction, make_plugin, finish_run):
    """Plugins in every state, with runs, so fuzzed requests also reach real records."""
    make_plugin("ocr")
    finish_run("ocr")
    finish_run("ocr", status="failed")
    make_plugin("loaded", initialized=False)
    services.plugin_mark_unavailable(name="gpu", reason="No CUDA GPU found on this host", actor="t")
    make_plugin("off")
    services.plugin_disable(name="off", note="maintenance", actor="user:ann")


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
        """The health record schema requires all eighteen keys."""
        document = client.get(SCHEMA_URL).json()
        record = document["components"]["schemas"]["HealthRecord"]
        assert set(record["required"]) == set(record["properties"])
        assert len(record["properties"]) == 18

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


@pytest.mark.django_db
@schema.parametrize()
@fuzz_settings
def test_api__anonymous_requests_conform(case, registry):
    """Anonymous fuzzing: no 500, and every response matches the schema."""
    case.call_and_validate()


@pytest.fixture
def loaded_registry(in_test_transaction, plugin_dir, settings, make_user):
    """Real plugins loaded through the pipeline, runs inline; an operator token for writes."""
    from django.core.cache import cache

    from plugins_app.tokens import issue_token

    settings.PORTAL_PLUGIN_DIRS = [str(plugin_dir.path)]
    settings.PORTAL_RUN_EXECUTOR = "inline"
    settings.PORTAL_API_WRITE_RATE = "100000/minute"
    cache.clear()
    plugin_dir.add("ocr", "def run(**params):\n    return sorted(params)\n")
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
