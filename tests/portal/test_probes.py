"""GET /livez and /readyz: liveness never asks the database; readiness names what failed."""

from __future__ import annotations

import subprocess
import uuid

import pytest

from plugins_app import services
from tests.conftest import _closed_port

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def client_():
    from django.test import Client

    return Client()


@pytest.fixture
def rabbitmq_vhost():
    """A RabbitMQ vhost of this test's own on the machine's broker, deleted afterwards."""
    name = f"h15-readyz-{uuid.uuid4().hex[:12]}"
    subprocess.run(["rabbitmqctl", "-q", "add_vhost", name], check=True, capture_output=True)
    subprocess.run(
        ["rabbitmqctl", "-q", "set_permissions", "-p", name, "guest", ".*", ".*", ".*"],
        check=True,
        capture_output=True,
    )
    yield f"amqp://guest:guest@127.0.0.1:5672/{name}"
    subprocess.run(["rabbitmqctl", "-q", "delete_vhost", name], check=False, capture_output=True)


class TestLivez:
    def test_livez__200_without_any_query(self, client_, django_assert_num_queries):
        """The process answers: 200, and not one query."""
        with django_assert_num_queries(0):
            response = client_.get("/livez")
        assert (response.status_code, response.json()) == (200, {"status": "alive"})

    def test_livez__200_while_the_database_is_down(self, client_, database_outage):
        """A database outage does not make the process look dead."""
        with database_outage():
            assert client_.get("/livez").status_code == 200

    def test_livez__exempt_from_the_ssl_redirect(self, client_, settings):
        """Probes come over plain HTTP: no redirect to HTTPS."""
        settings.SECURE_SSL_REDIRECT = True
        assert client_.get("/livez").status_code == 200
        assert client_.get("/readyz").status_code == 200


class TestReadyz:
    def test_readyz__200_when_the_database_answers(self, client_):
        """Database up: ready, with the check that passed."""
        response = client_.get("/readyz")
        assert response.status_code == 200
        body = response.json()
        assert (body["status"], body["failed"]) == ("ready", [])
        assert body["checks"]["database"]["ok"] is True

    def test_readyz__503_naming_the_database(self, client_, database_outage, settings):
        """Database down: 503 whose body names the database and what to check."""
        settings.PORTAL_HEALTH_DB_TIMEOUT_S = 0.5
        with database_outage():
            response = client_.get("/readyz")
        assert response.status_code == 503
        body = response.json()
        assert (body["status"], body["failed"]) == ("not ready", ["database"])
        assert "check the database server" in body["checks"]["database"]["detail"]

    def test_required_plugins__503_naming_each_unavailable_one(
        self, client_, settings, make_plugin, finish_run
    ):
        """A required plugin FAILED, UNAVAILABLE or missing: 503 naming each, with its state."""
        make_plugin("ok")
        make_plugin("flaky")
        finish_run("flaky", status="failed")
        services.plugin_mark_unavailable(name="gpu", reason="No CUDA GPU found", actor="t")
        settings.PORTAL_READY_REQUIRES_PLUGINS = ["ok", "flaky", "gpu", "ghost"]
        response = client_.get("/readyz")
        assert response.status_code == 503
        detail = response.json()["checks"]["plugins"]["detail"]
        assert "flaky (FAILED" in detail and "gpu (UNAVAILABLE: No CUDA GPU found" in detail
        assert "ghost (not registered)" in detail and "ok (" not in detail
        settings.PORTAL_READY_REQUIRES_PLUGINS = ["ok"]
        assert client_.get("/readyz").status_code == 200

    def test_broker__checked_only_with_the_celery_executor(self, client_, settings):
        """With the thread executor a dead broker does not matter; with celery it is named."""
        settings.PORTAL_BROKER_URL = f"amqp://guest:guest@127.0.0.1:{_closed_port()}//"
        settings.PORTAL_HEALTH_DB_TIMEOUT_S = 1
        assert client_.get("/readyz").status_code == 200
        settings.PORTAL_RUN_EXECUTOR = "celery"
        response = client_.get("/readyz")
        assert response.status_code == 503
        body = response.json()
        assert body["failed"] == ["broker"]
        assert "guest:**@" in body["checks"]["broker"]["detail"]  # no password in the body
        assert "PORTAL_BROKER_URL" in body["checks"]["broker"]["detail"]

    def test_broker__ready_when_rabbitmq_answers(self, client_, settings, rabbitmq_vhost):
        """The celery executor and a live RabbitMQ: ready, the broker check passed."""
        settings.PORTAL_RUN_EXECUTOR = "celery"
        settings.PORTAL_BROKER_URL = rabbitmq_vhost
        response = client_.get("/readyz")
        assert response.status_code == 200, response.json()
        assert response.json()["checks"]["broker"]["ok"] is True
