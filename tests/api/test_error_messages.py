"""API errors that a first-time caller makes say what to do instead."""

from __future__ import annotations

import pytest

from plugins_app.models import PluginRun

pytestmark = pytest.mark.django_db


@pytest.fixture
def ready(make_plugin):
    make_plugin("echo")
    return "echo"


class TestFormEncodedBody:
    def test_curl_d__415_saying_send_json_with_an_example(self, operator_client, ready):
        """A form-encoded body (curl -d) is a 415 saying to send JSON, with an example."""
        response = operator_client.post(
            "/v1/plugins/echo/runs",
            "params=1",
            content_type="application/x-www-form-urlencoded",
        )
        assert response.status_code == 415
        assert response.json() == {
            "detail": 'Unsupported media type "application/x-www-form-urlencoded": send the '
            "body as JSON with the header Content-Type: application/json, for example: curl "
            "-H 'Authorization: Token <key>' -H 'Content-Type: application/json' "
            """-d '{"params": {"name": "Ann"}}' .../v1/plugins/NAME/runs"""
        }
        assert PluginRun.objects.count() == 0


class TestBearerScheme:
    def test_bearer__401_saying_use_token(self, api_client, ready):
        """'Authorization: Bearer <key>' is a 401 saying to send 'Token <key>' instead."""
        api_client.credentials(HTTP_AUTHORIZATION="Bearer " + "a" * 64)
        response = api_client.post("/v1/plugins/echo/runs", {}, format="json")
        assert response.status_code == 401
        assert response["WWW-Authenticate"] == "Token"
        assert response.json() == {
            "detail": "The API does not take 'Bearer' credentials: send your API token as "
            "'Authorization: Token <key>' (use 'Token <key>', not 'Bearer <key>')"
        }


class TestStateFilter:
    def test_wrong_case__400_listing_the_valid_states(self, api_client):
        """`?state=failed` is a 400 that lists the valid states, in capitals."""
        response = api_client.get("/v1/plugins?state=failed")
        assert response.status_code == 400
        assert response.json()["detail"] == (
            'Invalid query parameter: state: "failed" is not a state; use one of LOADED, '
            "INITIALIZED, RUNNING, FAILED, UNAVAILABLE (in capitals, such as state=FAILED)"
        )
