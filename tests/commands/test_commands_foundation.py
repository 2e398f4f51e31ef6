"""Foundation commands: the first admin account, and a new password when it is lost."""

from __future__ import annotations

from io import StringIO

import pytest
from django.contrib.auth import authenticate, get_user_model
from django.core.management import CommandError, call_command
from django.test import RequestFactory

pytestmark = pytest.mark.django_db


def ensureadmin(*args: str) -> str:
    out = StringIO()
    call_command("ensureadmin", *args, stdout=out)
    return out.getvalue()


def printed_password(output: str) -> str:
    return output.splitlines()[0].rsplit(": ", 1)[1]


def can_log_in(username: str, password: str) -> bool:
    login = RequestFactory().post("/admin/login/")  # django-axes checks every login's request
    return authenticate(login, username=username, password=password) is not None


class TestEnsureAdmin:
    def test_first_run__creates_admin_with_printed_password(self):
        """The first run creates 'admin' with a generated password that works to log in."""
        password = printed_password(ensureadmin())
        assert len(password) >= 16
        assert can_log_in("admin", password)

    def test_second_run__changes_nothing_and_says_how_to_get_a_new_password(self):
        """A second run says an admin exists, prints no password, and names --reset-password."""
        ensureadmin()
        before = get_user_model().objects.get(username="admin").password
        assert ensureadmin().strip() == (
            "An admin account exists already; no password was changed (a lost password? "
            "print a new one with: manage.py ensureadmin --reset-password)."
        )
        assert get_user_model().objects.get(username="admin").password == before


class TestEnsureAdminResetPassword:
    def test_reset__prints_a_new_password_the_old_one_stops_working(self):
        """--reset-password prints a new generated password; only the new one logs in."""
        old = printed_password(ensureadmin())
        output = ensureadmin("--reset-password")
        new = printed_password(output)
        assert output.startswith("New password for admin account 'admin': ")
        assert len(new) >= 16 and new != old
        assert can_log_in("admin", new)
        assert not can_log_in("admin", old)

    def test_reset__lifts_a_failed_login_lockout(self, settings):
        """After --reset-password the account logs in at once, even if it was locked out."""
        settings.AXES_FAILURE_LIMIT = 2
        ensureadmin()
        for _ in range(2):
            assert not can_log_in("admin", "a wrong guess")
        output = ensureadmin("--reset-password")
        assert output.splitlines()[-1] == (
            "Its failed logins were cleared, so no lockout refuses the new password."
        )
        assert can_log_in("admin", printed_password(output))

    def test_reset__no_admin_yet__creates_it(self):
        """On a fresh database --reset-password creates the admin, as a first run does."""
        output = ensureadmin("--reset-password")
        assert output.startswith("Created admin account 'admin' with password: ")
        assert can_log_in("admin", printed_password(output))

    def test_reset__unknown_username__exit_2_changes_nothing(self):
        """Resetting an account that does not exist is exit 2, naming the existing admins."""
        ensureadmin()
        before = get_user_model().objects.get(username="admin").password
        with pytest.raises(CommandError) as raised:
            ensureadmin("--reset-password", "--username", "olivia")
        assert raised.value.returncode == 2
        assert str(raised.value) == (
            "No account 'olivia' (admin accounts: admin); give one of them with --username, "
            "or create 'olivia' in the admin"
        )
        assert get_user_model().objects.get(username="admin").password == before
        assert not get_user_model().objects.filter(username="olivia").exists()
