"""Settings from the environment: secrets, debug, production refusal."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

# Every test here starts portal processes of its own (docs/contributing.md, the hook).
pytestmark = pytest.mark.portal_processes

ROOT = Path(__file__).resolve().parents[2]


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


def manage_in(var_dir: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    """manage.py with its own var/ directory and the default SQLite database in it."""
    clean = {
        k: v for k, v in os.environ.items() if k not in {"SECRET_KEY", "DEBUG", "DATABASE_URL"}
    }
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={**clean, "PORTAL_VAR_DIR": str(var_dir), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


class TestLocalFiles:
    def test_fresh_migrate__database_key_and_directory_owner_only(self, tmp_path):
        """A first migrate creates var/ 0700 and the database and the secret key 0600."""
        var = tmp_path / "var"
        result = manage_in(var, "migrate", "--noinput")
        assert result.returncode == 0, result.stderr
        assert mode(var) == 0o700
        assert mode(var / "db.sqlite3") == 0o600
        assert mode(var / ".secret_key") == 0o600

    def test_wal_and_shm__owner_only_while_in_use(self, tmp_path):
        """The -wal and -shm files SQLite makes beside the database are owner-only too."""
        var = tmp_path / "var"
        assert manage_in(var, "migrate", "--noinput").returncode == 0
        code = (
            "import django, os; django.setup(); from django.db import connection; "
            "connection.cursor().execute('CREATE TABLE t (x)'); "
            "print(*(oct(os.stat(connection.settings_dict['NAME'] + s).st_mode & 0o777) "
            "for s in ('-wal', '-shm')))"
        )
        result = subprocess.run(
            [sys.executable, "-c", code],
            cwd=ROOT,
            env={
                **{k: v for k, v in os.environ.items() if k != "DATABASE_URL"},
                "PORTAL_VAR_DIR": str(var),
                "DJANGO_SETTINGS_MODULE": "portal.settings",
            },
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.stdout.split() == ["0o600", "0o600"], result.stderr

    def test_loose_modes__tightened_on_start_with_one_log_line(self, tmp_path):
        """Files left world-readable are made owner-only at the next start, and it says so."""
        var = tmp_path / "var"
        assert manage_in(var, "migrate", "--noinput").returncode == 0
        files = [var / name for name in ("db.sqlite3", "db.sqlite3-wal", "db.sqlite3-shm")]
        for path in [*files, var / ".secret_key"]:
            path.touch()
            path.chmod(0o644)
        var.chmod(0o755)
        result = manage_in(var, "check")
        assert result.returncode == 0, result.stderr
        assert [mode(path) for path in [var, *files, var / ".secret_key"]] == [0o700, *[0o600] * 4]
        lines = [line for line in result.stderr.splitlines() if "owner-only" in line]
        assert len(lines) == 1, result.stderr
        assert "db.sqlite3 (was 0644)" in lines[0] and ".secret_key (was 0644)" in lines[0]

    def test_owner_only_already__nothing_logged(self, tmp_path):
        """A second start with the right modes changes nothing and logs nothing about it."""
        var = tmp_path / "var"
        assert manage_in(var, "migrate", "--noinput").returncode == 0
        result = manage_in(var, "check")
        assert "owner-only" not in result.stderr


def production_start_exports() -> str:
    """The `export` lines of the README's "Production start" block, as shell code."""
    readme = (ROOT / "README.md").read_text()
    block = readme.split("## Production start", 1)[1].split("```", 2)[1]
    return "\n".join(line for line in block.splitlines() if line.startswith("export "))


class TestProductionSecurity:
    def test_readme_production_environment__check_deploy_has_no_warning(self, tmp_path):
        """`check --deploy` in the README's production environment passes at WARNING level."""
        exports = production_start_exports()
        assert "SECRET_KEY" in exports and "DATABASE_URL" in exports
        script = f"{exports}\nexec {sys.executable} manage.py check --deploy --fail-level WARNING"
        # The browser tests set DJANGO_ALLOW_ASYNC_UNSAFE in this process; production has none.
        test_only = {"SECRET_KEY", "DEBUG", "DJANGO_ALLOW_ASYNC_UNSAFE"}
        clean = {k: v for k, v in os.environ.items() if k not in test_only}
        result = subprocess.run(
            ["bash", "-c", script],
            cwd=ROOT,
            env={**clean, "PORTAL_VAR_DIR": str(tmp_path / "var")},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert "WARNINGS" not in result.stderr + result.stdout

    def test_debug_off__hsts_and_secure_cookies_on(self):
        """With DEBUG off, HSTS is a year with subdomains and preload, and cookies are Secure."""
        code = (
            "import django; django.setup(); from django.conf import settings as s; "
            "print(s.SECURE_HSTS_SECONDS, s.SECURE_HSTS_INCLUDE_SUBDOMAINS, "
            "s.SECURE_HSTS_PRELOAD, s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE, "
            "s.SECURE_SSL_REDIRECT, s.SECURE_PROXY_SSL_HEADER)"
        )
        result = python_in_portal(code)
        expected = ["31536000", "True", "True", "True", "True", "False", "None"]
        assert result.stdout.split() == expected, result.stderr

    def test_environment__overrides_each_setting(self):
        """Each security setting follows its environment variable."""
        code = (
            "import django; django.setup(); from django.conf import settings as s; "
            "print(s.SECURE_HSTS_SECONDS, s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE, "
            "s.SECURE_SSL_REDIRECT, s.SECURE_PROXY_SSL_HEADER)"
        )
        result = python_in_portal(
            code,
            SECURE_HSTS_SECONDS="60",
            SESSION_COOKIE_SECURE="0",
            CSRF_COOKIE_SECURE="0",
            SECURE_SSL_REDIRECT="1",
            SECURE_PROXY_SSL_HEADER="HTTP_X_FORWARDED_PROTO,https",
        )
        assert result.stdout.strip() == "60 False False True ('HTTP_X_FORWARDED_PROTO', 'https')", (
            result.stderr
        )

    def test_debug_on__no_hsts_and_plain_cookies(self):
        """Development (DEBUG on) over plain HTTP gets no HSTS and cookies that work on http."""
        code = (
            "import django; django.setup(); from django.conf import settings as s; "
            "print(s.SECURE_HSTS_SECONDS, s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE)"
        )
        assert python_in_portal(code, DEBUG="1").stdout.split() == ["0", "False", "False"]

    @pytest.mark.parametrize("raw", ["X_FORWARDED_PROTO", "HTTP_X_FORWARDED_PROTO", "a,b,c"])
    def test_bad_proxy_header__refuses_with_the_format(self, raw):
        """A proxy header not given as HEADER,VALUE stops the start and shows the format."""
        result = python_in_portal("import django; django.setup()", SECURE_PROXY_SSL_HEADER=raw)
        assert result.returncode != 0
        assert "SECURE_PROXY_SSL_HEADER" in result.stderr
        assert "HTTP_X_FORWARDED_PROTO,https" in result.stderr
