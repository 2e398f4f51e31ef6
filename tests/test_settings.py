"""Settings from the environment: secrets, debug, production refusal."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def python_in_portal(code: str, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in {"SECRET_KEY", "DEBUG"}}
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**clean, "DJANGO_SETTINGS_MODULE": "portal.settings", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


class TestSettings:
    def test_production_start_without_secret_key__refuses_clearly(self):
        """The WSGI entry point refuses to start without SECRET_KEY and says how to fix it."""
        result = python_in_portal("import portal.wsgi")
        assert result.returncode != 0
        assert "SECRET_KEY is not set" in result.stderr
        assert "secrets.token_urlsafe" in result.stderr

    def test_production_start_with_secret_key__starts(self):
        """With SECRET_KEY set, the WSGI application loads."""
        result = python_in_portal("import portal.wsgi; print('up')", SECRET_KEY="x" * 50)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "up"

    def test_debug__off_unless_asked(self):
        """DEBUG is off by default and on only when asked for."""
        code = "from django.conf import settings; print(settings.DEBUG)"
        setup = "import django; django.setup(); "
        assert python_in_portal(setup + code).stdout.strip() == "False"
        assert python_in_portal(setup + code, DEBUG="1").stdout.strip() == "True"

    def test_sqlite__wal_mode_and_busy_timeout(self, tmp_path):
        """The embedded SQLite database runs in WAL mode with a busy timeout."""
        code = (
            "import django; django.setup(); from django.db import connection; "
            "c = connection.cursor(); c.execute('PRAGMA journal_mode'); print(c.fetchone()[0]); "
            "c.execute('PRAGMA busy_timeout'); print(c.fetchone()[0])"
        )
        result = python_in_portal(code, DATABASE_URL=f"sqlite:///{tmp_path / 'wal.sqlite3'}")
        assert result.stdout.split() == ["wal", "30000"], result.stderr

    def test_bad_number_setting__refuses_with_the_variable_named(self):
        """A typo in a numeric setting stops the start with the variable and a fix named."""
        result = python_in_portal("import django; django.setup()", PORTAL_RUN_WORKERS="four")
        assert result.returncode != 0
        assert "PORTAL_RUN_WORKERS='four' is not a positive int" in result.stderr

    @pytest.mark.parametrize("raw", ["nan", "inf", "-inf", "1e400"])
    def test_non_finite_number_setting__refuses_with_the_variable_named(self, raw):
        """nan or infinity in a numeric setting (it would stop the heartbeat) stops the start."""
        result = python_in_portal("import django; django.setup()", PORTAL_RUN_HEARTBEAT_S=raw)
        assert result.returncode != 0
        assert f"PORTAL_RUN_HEARTBEAT_S={raw!r} is not a positive float" in result.stderr

    @pytest.mark.parametrize(("heartbeat", "stale"), [("10", "20"), ("30", "60"), ("10", "5")])
    def test_stale_after_within_two_heartbeats__refuses_naming_both(self, heartbeat, stale):
        """A stale limit at or under two heartbeats would interrupt live runs: refused."""
        result = python_in_portal(
            "import django; django.setup()",
            PORTAL_RUN_HEARTBEAT_S=heartbeat,
            PORTAL_RUN_STALE_AFTER_S=stale,
        )
        assert result.returncode != 0
        assert (
            f"PORTAL_RUN_STALE_AFTER_S={float(stale):g} must be more than twice "
            f"PORTAL_RUN_HEARTBEAT_S={float(heartbeat):g}"
        ) in result.stderr

    def test_stale_after_over_two_heartbeats__starts(self):
        """A stale limit above two heartbeats is accepted as given."""
        code = (
            "import django; django.setup(); from django.conf import settings; "
            "print(settings.PORTAL_RUN_HEARTBEAT_S, settings.PORTAL_RUN_STALE_AFTER_S)"
        )
        result = python_in_portal(code, PORTAL_RUN_HEARTBEAT_S="10", PORTAL_RUN_STALE_AFTER_S="21")
        assert result.stdout.split() == ["10.0", "21.0"], result.stderr

    def test_unknown_executor__refuses_with_the_choices(self):
        """An unknown executor name is refused with the two that exist."""
        result = python_in_portal("import django; django.setup()", PORTAL_RUN_EXECUTOR="celery")
        assert result.returncode != 0
        assert "use 'thread'" in result.stderr and "'inline'" in result.stderr
