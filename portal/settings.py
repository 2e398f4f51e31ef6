"""Settings for the plugin operations portal, read from the environment (README's table).

DATABASE_URL   database (default: the embedded SQLite file var/db.sqlite3)
SECRET_KEY     required for production starts (wsgi/asgi); development generates one
DEBUG          off unless set to 1/true/yes
ALLOWED_HOSTS  comma-separated (default: 127.0.0.1,localhost)

Reading them has one side effect: a development start without SECRET_KEY creates var/ and the
key file in it (owner-only). Everything else on disk is done once at start by portal/apps.py.
"""

import math
import os
from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from portal.local_files import development_secret_key

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("PORTAL_VAR_DIR", BASE_DIR / "var"))
SECRET_KEY_FILE = VAR_DIR / ".secret_key"


def env_flag(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_number(name: str, default: float, kind: type = float) -> float:
    """A positive number from the environment; a typo stops the start with a clear message."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError:
        value = 0
    # nan and inf parse as floats but break every timer and sleep they reach.
    if not math.isfinite(value) or value <= 0:
        raise ImproperlyConfigured(
            f"{name}={raw!r} is not a positive {kind.__name__}: set it to a finite number like "
            f"{default!r}, or unset it for that default"
        )
    return value


def cache_from_url(url: str, *, key_prefix: str) -> dict:
    """Django's RedisCache for a redis:// URL; local memory (this process only) when empty."""
    if not url:
        return {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise ImproperlyConfigured(
            f"PORTAL_CACHE_URL={url!r} is not a Redis URL: set it to one such as "
            "redis://127.0.0.1:6379/1 (rediss:// for TLS), or unset it for each process's memory"
        )
    return {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": url,
        "KEY_PREFIX": key_prefix,
        # An unreachable Redis costs a write request a second, never a hung thread.
        "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
    }


def env_whole_number(name: str, default: int) -> int:
    """A whole number from the environment, 0 allowed (0 turns HSTS off)."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit():
        raise ImproperlyConfigured(
            f"{name}={raw!r} is not a whole number of seconds: set it to 0 or more, like "
            f"{default!r}, or unset it for that default"
        )
    return int(raw)


def env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


def load_secret_key() -> str:
    """The environment's key; otherwise a development key kept in an ignored local file."""
    key = os.environ.get("SECRET_KEY", "").strip()
    if key:
        return key
    if env_flag("PORTAL_REQUIRE_SECRET_KEY"):
        raise ImproperlyConfigured(
            "SECRET_KEY is not set: a production start (gunicorn, wsgi, asgi) needs SECRET_KEY in "
            "the environment. Generate one with: "
            "python -c 'import secrets; print(secrets.token_urlsafe(50))'"
        )
    return development_secret_key(SECRET_KEY_FILE)


SECRET_KEY = load_secret_key()
DEBUG = env_flag("DEBUG")
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "127.0.0.1,localhost")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", "")


def env_proxy_ssl_header() -> tuple[str, str] | None:
    """`HTTP_X_FORWARDED_PROTO,https` → the header (as request.META names it) and its value."""
    raw = os.environ.get("SECURE_PROXY_SSL_HEADER", "").strip()
    if not raw:
        return None
    parts = [part.strip() for part in raw.split(",")]
    if len(parts) != 2 or not parts[0].startswith("HTTP_") or not parts[1]:
        raise ImproperlyConfigured(
            f"SECURE_PROXY_SSL_HEADER={raw!r} is not HEADER,VALUE: give the header your proxy "
            "sets on HTTPS requests as Django names it and its value, e.g. "
            "HTTP_X_FORWARDED_PROTO,https (only behind a proxy that always sets it)"
        )
    return parts[0], parts[1]


# HTTPS (README, "Production start"): on by default outside development; each can be turned off.
SECURE_HSTS_SECONDS = env_whole_number("SECURE_HSTS_SECONDS", 0 if DEBUG else 365 * 86400)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_flag("SECURE_HSTS_INCLUDE_SUBDOMAINS", not DEBUG)
SECURE_HSTS_PRELOAD = env_flag("SECURE_HSTS_PRELOAD", not DEBUG)
SESSION_COOKIE_SECURE = env_flag("SESSION_COOKIE_SECURE", not DEBUG)
CSRF_COOKIE_SECURE = env_flag("CSRF_COOKIE_SECURE", not DEBUG)
SECURE_SSL_REDIRECT = env_flag("SECURE_SSL_REDIRECT")
# Load balancers probe health and scrape metrics over plain HTTP on the backend; no credentials.
SECURE_REDIRECT_EXEMPT = [
    r"^v1/plugins/?$",
    r"^v1/plugins/[^/]+/health/?$",
    r"^metrics/?$",
    r"^livez/?$",
    r"^readyz/?$",
]
SECURE_PROXY_SSL_HEADER = env_proxy_ssl_header()

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "knox",
    "axes",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "plugins_app",
    "portal.apps.PortalConfig",
]

MIDDLEWARE = [
    # Outermost, so no error page or traceback from any layer below reaches an API client.
    "plugins_app.api.middleware.ApiSafetyNetMiddleware",
    # Every database statement of a request runs under PORTAL_DB_DEADLINE_S (portal/db/).
    "portal.db.deadline.RequestDeadlineMiddleware",
    "plugins_app.health_refresher.HealthRefresherMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as django-axes requires: it turns a locked-out login into the lockout page.
    "axes.middleware.AxesMiddleware",
]

# django-axes first: it refuses a locked-out login before the password is checked.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]

# Admin login throttle (docs/admin.md): per user name and client address, so a stranger's
# guesses lock only themselves out of that account, not its owner from elsewhere.
AXES_FAILURE_LIMIT = int(env_number("PORTAL_LOGIN_FAILURE_LIMIT", 5, int))
AXES_COOLOFF_TIME = timedelta(minutes=env_number("PORTAL_LOGIN_LOCKOUT_MINUTES", 15.0))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
# Failures in the database, never a per-process cache: every web process counts the same ones.
AXES_HANDLER = "axes.handlers.database.AxesDatabaseHandler"
AXES_LOCKOUT_CALLABLE = "portal.lockout.lockout_response"

ROOT_URLCONF = "portal.urls"
WSGI_APPLICATION = "portal.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "portal" / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": dj_database_url.config(
        default=f"sqlite:///{VAR_DIR / 'db.sqlite3'}",
        conn_max_age=int(os.environ.get("CONN_MAX_AGE", "0")),
        # A kept connection (CONN_MAX_AGE) is checked before reuse: after a database restart
        # the next request or task reconnects instead of failing once.
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["OPTIONS"] = {
        # WAL lets readers run beside a writer; IMMEDIATE takes the write lock at BEGIN so
        # concurrent writers queue on the busy timeout instead of failing on lock upgrade.
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 30,
    }
    # A file, not memory: threads and separate processes in the tests share one database.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test.sqlite3")}
else:
    DATABASES["default"].setdefault("OPTIONS", {})
    DATABASES["default"]["OPTIONS"].setdefault("connect_timeout", 5)
    if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
        # Django's backend, plus a watchdog that cuts a connection past its deadline.
        DATABASES["default"]["ENGINE"] = "portal.db.postgresql"

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"  # created at start by portal/apps.py
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
# Serve app static files straight from the installed packages when collectstatic was not run.
WHITENOISE_USE_FINDERS = True

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
    ],
    # A view is public only by saying so (PublicRead, AllowAny): see docs/api.md.
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["plugins_app.api.renderers.SafeJSONRenderer"],
    "UNAUTHENTICATED_USER": None,
    "DEFAULT_SCHEMA_CLASS": "plugins_app.api.schema.PortalAutoSchema",
    "EXCEPTION_HANDLER": "plugins_app.api.errors.api_exception_handler",
}

# API tokens (docs/api.md): stored hashed; `Authorization: Token <key>` as before; no expiry
# unless issued with one (manage.py issuetoken --expires-in-days).
REST_KNOX = {"TOKEN_TTL": None, "AUTH_HEADER_PREFIX": "Token", "AUTO_REFRESH": False}

# Health and operations API (docs/api.md).
# Reads (health, runs) are public unless this is on; writes always need run_plugin.
PORTAL_API_READS_REQUIRE_AUTH = env_flag("PORTAL_API_READS_REQUIRE_AUTH")
# Writes (run, reload) per user, DRF rate syntax: "30/minute", "1000/hour".
PORTAL_API_WRITE_RATE = os.environ.get("PORTAL_API_WRITE_RATE", "30/minute")
# The cache of what is counted across requests (the write throttle's counts): local memory is
# per process, so a fleet of web processes shares them through Redis (docs/scale-out.md).
PORTAL_CACHE_URL = os.environ.get("PORTAL_CACHE_URL", "").strip()
CACHES = {
    "default": cache_from_url(
        PORTAL_CACHE_URL, key_prefix=os.environ.get("PORTAL_CACHE_KEY_PREFIX", "portal").strip()
    )
}
# Largest request body the API reads (run params); bigger is a 413.
PORTAL_API_MAX_BODY_BYTES = int(env_number("PORTAL_API_MAX_BODY_BYTES", 64 * 1024, int))
# Longest `?wait=` a run submission may ask for, in seconds.
PORTAL_API_MAX_WAIT_S = env_number("PORTAL_API_MAX_WAIT_S", 60.0)
# Health answers from the node's snapshot (plugins_app/health_snapshot.py), which one process
# of the node refreshes this often; a refresh slower than the timeout is cut (client side).
PORTAL_HEALTH_REFRESH_S = env_number("PORTAL_HEALTH_REFRESH_S", 1.0)
PORTAL_HEALTH_DB_TIMEOUT_S = env_number("PORTAL_HEALTH_DB_TIMEOUT_S", 2.0)
# A snapshot older than this, or whose last refresh failed, is served with stale: true.
PORTAL_HEALTH_STALE_AFTER_S = env_number("PORTAL_HEALTH_STALE_AFTER_S", 5.0)
PORTAL_HEALTH_SNAPSHOT_FILE = VAR_DIR / "health-snapshot"
# The test suite's mode: each health read refreshes the snapshot first, in its own thread.
PORTAL_HEALTH_REFRESH_ON_READ = False
# The longest any database statement of a request may take before its connection is cut on
# the client side (portal/db/): a hung server cannot hold a request, or a thread, longer.
PORTAL_DB_DEADLINE_S = env_number("PORTAL_DB_DEADLINE_S", 10.0)
# `?wait=` requests waiting at once in one server process, in all and per user; more is a 429.
PORTAL_API_MAX_WAITING = int(env_number("PORTAL_API_MAX_WAITING", 2, int))
PORTAL_API_MAX_WAITING_PER_CLIENT = int(env_number("PORTAL_API_MAX_WAITING_PER_CLIENT", 1, int))
# /readyz: plugins that must be available for the node to be ready (comma-separated, opt-in).
PORTAL_READY_REQUIRES_PLUGINS = env_list("PORTAL_READY_REQUIRES_PLUGINS", "")
# The broker /readyz checks when PORTAL_RUN_EXECUTOR is celery.
PORTAL_BROKER_URL = os.environ.get("PORTAL_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//")
# The node's last /metrics reading, which every server process of the node serves while the
# database cannot be read (plugins_app/metrics_reading.py).
PORTAL_METRICS_LAST_READING_FILE = VAR_DIR / "metrics-last-reading"
# A constant-payload view for benchmarks/api_bench.py; never on in production.
PORTAL_BENCHMARK_VIEWS = env_flag("PORTAL_BENCHMARK_VIEWS")

SPECTACULAR_SETTINGS = {
    "TITLE": "Plugin portal health and operations API",
    "DESCRIPTION": "Plugin health for load balancers, monitoring and automation; runs and reloads.",
    "VERSION": "1.0.0",
    "OAS_VERSION": "3.1.0",  # 3.1 for propertyNames: run params are named like Python arguments
    "SERVE_INCLUDE_SCHEMA": False,
    "SCHEMA_PATH_PREFIX": "/v1",
    "PREPROCESSING_HOOKS": ["plugins_app.api.schema.drop_trailing_slash_aliases"],
    # Served from the installed sidecar package: the portal has no internet access.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
}

# Plugin directories, os.pathsep-separated; `make run` points it at examples/plugins.
PORTAL_PLUGIN_DIRS = [
    item for item in os.environ.get("PORTAL_PLUGIN_DIRS", "").split(os.pathsep) if item
]


def env_environments(name: str) -> dict[str, str]:
    """NAME=/abs/path/to/python pairs, comma-separated: the named plugin interpreters."""
    environments: dict[str, str] = {}
    for item in os.environ.get(name, "").split(","):
        if not item.strip():
            continue
        key, sep, path = (part.strip() for part in item.partition("="))
        if not sep or not key or not path.startswith("/"):
            raise ImproperlyConfigured(
                f"{name} entry {item.strip()!r} is not NAME=/absolute/path/to/python: write "
                f"it as e.g. torch=/srv/envs/torch/bin/python (comma-separated for several)"
            )
        environments[key] = path
    return environments


# Named Python environments plugins may declare (python = "torch"): NAME=/path/to/python,...
PORTAL_PLUGIN_ENVIRONMENTS = env_environments("PORTAL_PLUGIN_ENVIRONMENTS")
# Where queued runs execute: "thread" (a pool in this process, the default), "inline"
# (synchronously inside submit_run, for tests and one-off scripts) or "celery" (worker nodes
# started with `manage.py runworker`, through the broker; docs/scale-out.md).
PORTAL_RUN_EXECUTOR = os.environ.get("PORTAL_RUN_EXECUTOR", "thread")
if PORTAL_RUN_EXECUTOR not in {"thread", "inline", "celery"}:
    raise ImproperlyConfigured(
        f"PORTAL_RUN_EXECUTOR={PORTAL_RUN_EXECUTOR!r} is not an executor: use 'thread' "
        "(background pool, the default), 'inline' (synchronous) or 'celery' (worker nodes)"
    )
# The broker the celery executor sends run ids through: RabbitMQ by default, redis:// works.
PORTAL_BROKER_URL = os.environ.get("PORTAL_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//")
PORTAL_RUN_WORKERS = int(env_number("PORTAL_RUN_WORKERS", 4, int))
# Runs in progress refresh heartbeat_at this often; a run whose heartbeat is older than
# PORTAL_RUN_STALE_AFTER_S is finished as INTERRUPTED (its process died).
PORTAL_RUN_HEARTBEAT_S = env_number("PORTAL_RUN_HEARTBEAT_S", 10.0)
PORTAL_RUN_STALE_AFTER_S = env_number("PORTAL_RUN_STALE_AFTER_S", 60.0)
if PORTAL_RUN_STALE_AFTER_S <= 2 * PORTAL_RUN_HEARTBEAT_S:
    # One late heartbeat must not make a live run look dead and get it interrupted.
    raise ImproperlyConfigured(
        f"PORTAL_RUN_STALE_AFTER_S={PORTAL_RUN_STALE_AFTER_S:g} must be more than twice "
        f"PORTAL_RUN_HEARTBEAT_S={PORTAL_RUN_HEARTBEAT_S:g}, or live runs get interrupted: raise "
        f"PORTAL_RUN_STALE_AFTER_S above {2 * PORTAL_RUN_HEARTBEAT_S:g} or lower the heartbeat"
    )
# Automatic quarantine: the first cooldown before a probe run, and the cap a failed probe's
# doubling stops at (docs/state-machine.md).
PORTAL_QUARANTINE_COOLDOWN_S = env_number("PORTAL_QUARANTINE_COOLDOWN_S", 300.0)
PORTAL_QUARANTINE_MAX_COOLDOWN_S = env_number("PORTAL_QUARANTINE_MAX_COOLDOWN_S", 6 * 3600.0)
# Schedules (docs/admin.md): "thread" runs a scheduler in each web process, "off" leaves it to
# `manage.py runscheduler`; any number of schedulers fire each occurrence once.
PORTAL_SCHEDULER = os.environ.get("PORTAL_SCHEDULER", "thread")
if PORTAL_SCHEDULER not in {"thread", "off"}:
    raise ImproperlyConfigured(
        f"PORTAL_SCHEDULER={PORTAL_SCHEDULER!r} is not a choice: use 'thread' (a scheduler in "
        "the web process, the default) or 'off' (run `manage.py runscheduler` instead)"
    )
PORTAL_SCHEDULER_TICK_S = env_number("PORTAL_SCHEDULER_TICK_S", 1.0)
# An occurrence later than this counts as missed (its schedule's missed-runs policy applies).
PORTAL_SCHEDULER_GRACE_S = env_number("PORTAL_SCHEDULER_GRACE_S", 60.0)
# Webhook deliveries (docs/notifications.md): per-attempt timeout, attempts, backoff, polling.
PORTAL_NOTIFY_TIMEOUT_S = env_number("PORTAL_NOTIFY_TIMEOUT_S", 5.0)
PORTAL_NOTIFY_MAX_ATTEMPTS = int(env_number("PORTAL_NOTIFY_MAX_ATTEMPTS", 8, int))
PORTAL_NOTIFY_BACKOFF_S = env_number("PORTAL_NOTIFY_BACKOFF_S", 2.0)
PORTAL_NOTIFY_MAX_BACKOFF_S = env_number("PORTAL_NOTIFY_MAX_BACKOFF_S", 3600.0)
PORTAL_NOTIFY_POLL_S = env_number("PORTAL_NOTIFY_POLL_S", 5.0)
# How long importing a plugin and running its setup() may take before the load is FAILED.
PORTAL_PLUGIN_LOAD_TIMEOUT_S = env_number("PORTAL_PLUGIN_LOAD_TIMEOUT_S", 120.0)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "filters": {"no_503": {"()": "portal.log_filters.DropServiceUnavailable"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {
        # django-axes announces its version at every start, commands included; its lockouts stay.
        "axes.apps": {"level": "WARNING"},
        # The health refresher logs an outage once when it starts and once when it ends.
        "django.request": {"filters": ["no_503"]},
        "django.server": {"filters": ["no_503"]},
    },
}
