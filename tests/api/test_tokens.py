"""API tokens are stored hashed (django-rest-knox): shown once, never readable in the database."""

from __future__ import annotations

import importlib
import io
import re

import pytest
from django.apps import apps
from django.core.management import CommandError, call_command
from django.db import connection
from rest_framework.test import APIClient

from plugins_app.models import PluginRun

pytestmark = pytest.mark.django_db

TOKEN_LINE = re.compile(r"^API token for '(?P<user>[^']+)': (?P<token>\S+)$", re.M)


def issue(*args: str) -> str:
    """Run issuetoken and return the token it printed."""
    out = io.StringIO()
    call_command("issuetoken", *args, stdout=out)
    match = TOKEN_LINE.search(out.getvalue())
    assert match, out.getvalue()
    return match["token"]


def every_stored_value() -> str:
    """Every row of every table of the database, as text."""
    with connection.cursor() as cursor:
        dumps = []
        for table in connection.introspection.table_names():
            cursor.execute(f"SELECT * FROM {connection.ops.quote_name(table)}")
            dumps.append(repr(cursor.fetchall()))
    return "\n".join(dumps)


def client_with(token: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    return client


class TestIssueToken:
    def test_printed_token__authenticates_and_is_nowhere_in_the_database(self, make_user):
        """The printed token works as `Authorization: Token`, and no table holds it."""
        make_user("ann", "plugins_app.run_plugin")
        token = issue("ann")
        assert token not in every_stored_value()
        response = client_with(token).post("/v1/plugins/ghost/reload")
        assert response.status_code == 404  # authenticated and permitted: the plugin is unknown

    def test_wrong_token__401(self, make_user):
        """A token differing from an issued one in its last character is refused."""
        make_user("ann", "plugins_app.run_plugin")
        token = issue("ann")
        wrong = token[:-1] + ("0" if token[-1] != "0" else "1")
        response = client_with(wrong).post("/v1/plugins/ghost/reload")
        assert response.status_code == 401
        assert response.json() == {"detail": "Invalid token."}
        assert PluginRun.objects.count() == 0

    @pytest.mark.parametrize("garbage", ["not-a-token", "\u00ff" * 64, "a" * 5000, "0" * 63])
    def test_malformed_token__401_not_a_database_error(self, make_user, garbage):
        """A token of the wrong shape (non-ASCII, huge, short) is a 401, not a 500 or 503."""
        header = f"Token {garbage}".encode().decode("latin-1")
        response = APIClient().post("/v1/plugins/ghost/reload", HTTP_AUTHORIZATION=header)
        assert response.status_code == 401
        assert response.json() == {"detail": "Invalid token."}

    def test_expiry__an_expired_token_is_refused(self, make_user):
        """--expires-in-days 0 issues a token that is already past its expiry: 401."""
        make_user("ann", "plugins_app.run_plugin")
        token = issue("ann", "--expires-in-days", "0")
        assert client_with(token).post("/v1/plugins/ghost/reload").status_code == 401

    def test_unknown_user__exit_2_naming_it(self):
        """A user name that does not exist is misuse: exit code 2 with how to create one."""
        with pytest.raises(CommandError) as raised:
            call_command("issuetoken", "ghost", stdout=io.StringIO())
        assert raised.value.returncode == 2
        assert str(raised.value).startswith("No user 'ghost'")

    def test_admin_add__shows_the_token_once_and_it_works(self, admin_client, make_user):
        """Adding a token in the admin shows it once in the message, and it authenticates."""
        user = make_user("ann", "plugins_app.run_plugin")
        response = admin_client.post(
            "/admin/knox/authtoken/add/", {"user": user.pk, "expiry": ""}, follow=True
        )
        messages = [str(m) for m in response.context["messages"]]
        tokens = [m.rsplit(" ", 1)[-1] for m in messages if "API token for 'ann'" in m]
        assert len(tokens) == 1, messages
        assert tokens[0] not in every_stored_value()
        assert client_with(tokens[0]).post("/v1/plugins/ghost/reload").status_code == 404


@pytest.mark.django_db(transaction=True)
class TestPlainTokensRetired:
    def test_migration__drops_the_plain_text_token_table(self, make_user):
        """Upgrading deletes the old plain-text tokens: their values are gone from the database."""
        user = make_user("ann")
        plain = "9944b09199c62bcf9418ad846dd0e4bbdfc6ee4b"
        with connection.schema_editor() as editor:
            editor.execute(
                "CREATE TABLE authtoken_token (key varchar(40) PRIMARY KEY, user_id integer, "
                "created timestamp)"
            )
        with connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO authtoken_token VALUES (%s, %s, CURRENT_TIMESTAMP)", [plain, user.pk]
            )
        migration = importlib.import_module("plugins_app.migrations.0004_retire_plain_api_tokens")
        with connection.schema_editor() as editor:
            migration.retire_plain_tokens(apps, editor)
        assert "authtoken_token" not in connection.introspection.table_names()
        assert plain not in every_stored_value()
