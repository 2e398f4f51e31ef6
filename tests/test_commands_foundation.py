"""Foundation commands: the first admin account."""

from __future__ import annotations

from io import StringIO

import pytest
from django.contrib.auth import authenticate, get_user_model
from django.core.management import call_command
from django.test import RequestFactory

pytestmark = pytest.mark.django_db


class TestEnsureAdmin:
    def test_first_run__creates_admin_with_printed_password(self):
        """The first run creates 'admin' with a generated password that works to log in."""
        out = StringIO()
        call_command("ensureadmin", stdout=out)
        password = out.getvalue().split("password: ")[1].split()[0]
        assert len(password) >= 16
        login = RequestFactory().post("/admin/login/")  # django-axes checks every login's request
        assert authenticate(login, username="admin", password=password) is not None

    def test_second_run__changes_nothing(self):
        """A second run says an admin exists and prints no password."""
        call_command("ensureadmin", stdout=StringIO())
        before = get_user_model().objects.get(username="admin").password
        out = StringIO()
        call_command("ensureadmin", stdout=out)
        assert out.getvalue().strip() == "An admin account exists already; no password was changed."
        assert get_user_model().objects.get(username="admin").password == before
