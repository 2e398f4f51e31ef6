"""Admin logins: real logins through the login form, throttled by django-axes."""

from __future__ import annotations

import pytest
from django.test import Client

from tests.conftest import OPERATOR_PASSWORD

pytestmark = pytest.mark.django_db

LOGIN = "/admin/login/?next=/admin/"


def log_in(client: Client, username: str, password: str):
    """Post the admin login form as a browser does (CSRF token from the form page)."""
    client.get(LOGIN)
    token = client.cookies["csrftoken"].value
    return client.post(
        LOGIN,
        {"username": username, "password": password, "csrfmiddlewaretoken": token},
        REMOTE_ADDR="192.0.2.10",
    )


@pytest.fixture
def client_with_csrf() -> Client:
    return Client(enforce_csrf_checks=True)


class TestLoginThrottle:
    def test_right_password__logs_in(self, client_with_csrf, make_operator):
        """The real form logs an operator in and lands on the admin index."""
        make_operator("olivia")
        response = log_in(client_with_csrf, "olivia", OPERATOR_PASSWORD)
        assert (response.status_code, response["Location"]) == (302, "/admin/")

    def test_failure_limit__locks_out_even_the_right_password(
        self, client_with_csrf, make_operator, settings
    ):
        """After the limit of wrong passwords the login is locked: a 429 saying why, what next."""
        make_operator("olivia")
        for _ in range(settings.AXES_FAILURE_LIMIT - 1):
            assert log_in(client_with_csrf, "olivia", "wrong").status_code == 200
        locked = log_in(client_with_csrf, "olivia", "wrong")
        assert locked.status_code == 429
        again = log_in(client_with_csrf, "olivia", OPERATOR_PASSWORD)
        assert again.status_code == 429
        text = " ".join(again.content.decode().split())
        assert f"{settings.AXES_FAILURE_LIMIT} failed logins in a row" in text
        assert "'olivia'" in text
        assert "try again in 15 minutes" in text
        assert "manage.py axes_reset_username olivia" in text

    def test_failures_under_the_limit__success_resets_the_count(
        self, client_with_csrf, make_operator, settings
    ):
        """Wrong passwords under the limit, then the right one: logged in, the count starts over."""
        make_operator("olivia")
        for _ in range(settings.AXES_FAILURE_LIMIT - 1):
            log_in(client_with_csrf, "olivia", "wrong")
        assert log_in(client_with_csrf, "olivia", OPERATOR_PASSWORD).status_code == 302
        other = Client(enforce_csrf_checks=True)
        for _ in range(settings.AXES_FAILURE_LIMIT - 1):
            assert log_in(other, "olivia", "wrong").status_code == 200

    def test_other_user__not_locked_by_someone_elses_failures(
        self, client_with_csrf, make_operator, settings
    ):
        """A lockout is per user name and address: another operator still logs in."""
        make_operator("olivia")
        make_operator("victor")
        for _ in range(settings.AXES_FAILURE_LIMIT):
            log_in(client_with_csrf, "olivia", "wrong")
        other = Client(enforce_csrf_checks=True)
        assert log_in(other, "victor", OPERATOR_PASSWORD).status_code == 302
