"""Settings from the environment: secrets, debug, production refusal."""

from __future__ import annotations

import os
import runpy
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured

ROOT = Path(__file__).resolve().parents[2]
SETTINGS_FILE = ROOT / "portal" / "settings.py"


@pytest.fixture
def settings_from(monkeypatch):
    """The settings module evaluated afresh with these variables (no SECRET_KEY, no DEBUG)."""

    def evaluate(**env: str) -> dict[str, Any]:
        for name in ("SECRET_KEY", "DEBUG"):
            monkeypatch.delenv(name, raising=False)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        path = str(SETTINGS_FILE)
        return runpy.run_path(path)  # audit: allow PORTAL001 the portal's settings, no plugin

    return evaluate


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


@pytest.mark.portal_processes
class TestStart:
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

    def test_sqlite__wal_mode_and_busy_timeout(self, tmp_path):
        """The embedded SQLite database runs in WAL mode with a busy timeout."""
        code = (
            "import django; django.setup(); from django.db import connection; "
            "c = connection.cursor(); c.execute('PRAGMA journal_mode'); print(c.fetchone()[0]); "
            "c.execute('PRAGMA busy_timeout'); print(c.fetchone()[0])"
        )
        result = python_in_portal(code, DATABASE_URL=f"sqlite:///{tmp_path / 'wal.sqlite3'}")
        assert result.stdout.split() == ["wal", "30000"], result.stderr

    def test_bad_number_setting__stops_the_start_naming_the_variable(self):
        """A typo in a numeric setting stops the start (exit 1, the message on stderr)."""
        result = python_in_portal("import django; django.setup()", PORTAL_RUN_WORKERS="four")
        assert result.returncode != 0
        assert "PORTAL_RUN_WORKERS='four' is not a positive int" in result.stderr


class TestSettings:
    def test_debug__off_unless_asked(self, settings_from):
        """DEBUG is off by default and on only when asked for."""
        assert settings_from()["DEBUG"] is False
        assert settings_from(DEBUG="1")["DEBUG"] is True

    def test_bad_number_setting__refuses_with_the_variable_named(self, settings_from):
        """A typo in a numeric setting is refused with the variable and a fix named."""
        with pytest.raises(
            ImproperlyConfigured, match="PORTAL_RUN_WORKERS='four' is not a positive int"
        ):
            settings_from(PORTAL_RUN_WORKERS="four")

    @pytest.mark.parametrize("raw", ["nan", "inf", "-inf", "1e400"])
    def test_non_finite_number_setting__refuses_with_the_variable_named(self, raw, settings_from):
        """nan or infinity in a numeric setting (it would stop the heartbeat) is refused."""
        with pytest.raises(ImproperlyConfigured) as refused:
            settings_from(PORTAL_RUN_HEARTBEAT_S=raw)
        assert f"PORTAL_RUN_HEARTBEAT_S={raw!r} is not a positive float" in str(refused.value)

    @pytest.mark.parametrize(("heartbeat", "stale"), [("10", "20"), ("30", "60"), ("10", "5")])
    def test_stale_after_within_two_heartbeats__refuses_naming_both(
        self, heartbeat, stale, settings_from
    ):
        """A stale limit at or under two heartbeats would interrupt live runs: refused."""
        with pytest.raises(ImproperlyConfigured) as refused:
            settings_from(PORTAL_RUN_HEARTBEAT_S=heartbeat, PORTAL_RUN_STALE_AFTER_S=stale)
        assert (
            f"PORTAL_RUN_STALE_AFTER_S={float(stale):g} must be more than twice "
            f"PORTAL_RUN_HEARTBEAT_S={float(heartbeat):g}"
        ) in str(refused.value)

    def test_stale_after_over_two_heartbeats__starts(self, settings_from):
        """A stale limit above two heartbeats is accepted as given."""
        values = settings_from(PORTAL_RUN_HEARTBEAT_S="10", PORTAL_RUN_STALE_AFTER_S="21")
        assert (values["PORTAL_RUN_HEARTBEAT_S"], values["PORTAL_RUN_STALE_AFTER_S"]) == (10, 21)

    def test_unknown_executor__refuses_with_the_choices(self, settings_from):
        """An unknown executor name is refused with the three that exist."""
        with pytest.raises(ImproperlyConfigured) as refused:
            settings_from(PORTAL_RUN_EXECUTOR="rq")
        assert "use 'thread'" in str(refused.value) and "'inline'" in str(refused.value)
        assert "'celery'" in str(refused.value)

    def test_plugin_environments__names_to_interpreters(self, settings_from):
        """PORTAL_PLUGIN_ENVIRONMENTS maps names to interpreter paths, comma-separated."""
        values = settings_from(
            PORTAL_PLUGIN_ENVIRONMENTS="torch=/srv/torch/bin/python, ocr = /srv/ocr/bin/python"
        )
        assert values["PORTAL_PLUGIN_ENVIRONMENTS"] == {
            "torch": "/srv/torch/bin/python",
            "ocr": "/srv/ocr/bin/python",
        }

    def test_plugin_environment_without_absolute_path__refused(self, settings_from):
        """An entry that is not NAME=/absolute/path stops the start, showing the form."""
        with pytest.raises(ImproperlyConfigured, match="torch=/srv/envs/torch/bin/python"):
            settings_from(PORTAL_PLUGIN_ENVIRONMENTS="torch=venv/bin/python")


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


@pytest.mark.portal_processes
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


@pytest.mark.portal_processes
class TestProductionCheck:
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


SECURITY = (
    "SECURE_HSTS_SECONDS",
    "SECURE_HSTS_INCLUDE_SUBDOMAINS",
    "SECURE_HSTS_PRELOAD",
    "SESSION_COOKIE_SECURE",
    "CSRF_COOKIE_SECURE",
    "SECURE_SSL_REDIRECT",
    "SECURE_PROXY_SSL_HEADER",
)


class TestProductionSecurity:
    def test_debug_off__hsts_and_secure_cookies_on(self, settings_from):
        """With DEBUG off, HSTS is a year with subdomains and preload, and cookies are Secure."""
        values = settings_from()
        assert [values[name] for name in SECURITY] == [
            31536000,
            True,
            True,
            True,
            True,
            False,
            None,
        ]

    def test_environment__overrides_each_setting(self, settings_from):
        """Each security setting follows its environment variable."""
        values = settings_from(
            SECURE_HSTS_SECONDS="60",
            SECURE_HSTS_INCLUDE_SUBDOMAINS="0",
            SECURE_HSTS_PRELOAD="0",
            SESSION_COOKIE_SECURE="0",
            CSRF_COOKIE_SECURE="0",
            SECURE_SSL_REDIRECT="1",
            SECURE_PROXY_SSL_HEADER="HTTP_X_FORWARDED_PROTO,https",
        )
        assert [values[name] for name in SECURITY] == [
            60,
            False,
            False,
            False,
            False,
            True,
            ("HTTP_X_FORWARDED_PROTO", "https"),
        ]

    def test_debug_on__no_hsts_and_plain_cookies(self, settings_from):
        """Development (DEBUG on) over plain HTTP gets no HSTS and cookies that work on http."""
        values = settings_from(DEBUG="1")
        assert [values[name] for name in SECURITY[:5]] == [0, False, False, False, False]

    @pytest.mark.parametrize("raw", ["X_FORWARDED_PROTO", "HTTP_X_FORWARDED_PROTO", "a,b,c"])
    def test_bad_proxy_header__refuses_with_the_format(self, raw, settings_from):
        """A proxy header not given as HEADER,VALUE is refused, showing the format."""
        with pytest.raises(ImproperlyConfigured) as refused:
            settings_from(SECURE_PROXY_SSL_HEADER=raw)
        assert "SECURE_PROXY_SSL_HEADER" in str(refused.value)
        assert "HTTP_X_FORWARDED_PROTO,https" in str(refused.value)


class TestSharedCache:
    def test_no_cache_url__local_memory_of_this_process(self, settings_from):
        """Without PORTAL_CACHE_URL the embedded default keeps throttles in local memory."""
        found = settings_from(PORTAL_CACHE_URL="")
        assert found["CACHES"]["default"]["BACKEND"].endswith("LocMemCache")

    def test_redis_url__django_redis_cache_with_prefix_and_short_timeouts(self, settings_from):
        """A redis:// URL selects Django's RedisCache, with the key prefix and bounded waits."""
        found = settings_from(
            PORTAL_CACHE_URL="redis://127.0.0.1:6379/3", PORTAL_CACHE_KEY_PREFIX="site-a"
        )
        cache = found["CACHES"]["default"]
        assert cache["BACKEND"] == "django.core.cache.backends.redis.RedisCache"
        assert (cache["LOCATION"], cache["KEY_PREFIX"]) == ("redis://127.0.0.1:6379/3", "site-a")
        assert 0 < cache["OPTIONS"]["socket_timeout"] <= 2

    def test_login_lockout__counted_in_the_database_whatever_the_cache(self, settings_from):
        """django-axes keeps failed logins in the database, shared by every web process."""
        found = settings_from(PORTAL_CACHE_URL="")
        assert found["AXES_HANDLER"] == "axes.handlers.database.AxesDatabaseHandler"

    @pytest.mark.parametrize("raw", ["memcached://127.0.0.1:11211", "127.0.0.1:6379"])
    def test_other_cache_url__refuses_naming_the_variable_and_the_form(self, raw, settings_from):
        """A cache URL that is not redis:// stops the start with the form to use."""
        with pytest.raises(ImproperlyConfigured, match=r"PORTAL_CACHE_URL.*redis://"):
            settings_from(PORTAL_CACHE_URL=raw)
