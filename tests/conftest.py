"""Shared fixtures: factories that build registry rows through the services; the plugin guard."""

from __future__ import annotations

import itertools
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from django.conf import settings

from plugins_app import services
from plugins_app.models import Plugin, PluginRun, RunStatus, SourceKind
from plugins_app.sources import PluginSource
from tools.plugin_guard import PluginCodeGuard

# This machine class sets PYTHONDONTWRITEBYTECODE, so pytest rewrote and compiled every test
# module again in every xdist worker (7 s of CPU each); processes the tests start keep it set.
sys.dont_write_bytecode = False

_names = itertools.count(1)
_guard_key = pytest.StashKey[PluginCodeGuard]()


def pytest_configure(config: pytest.Config) -> None:
    # Installed before collection, so a test module importing plugin code is caught too.
    config.stash[_guard_key] = PluginCodeGuard.for_repository().install()


# Tests of outside parts wait on processes for seconds each: run first, the many short tests
# then fill the workers' ends instead of one long test finishing the run alone.
OUTSIDE_PARTS = {"browser", "broker", "portal_processes", "postgres_cluster", "redis", "torch"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that use an outside part first (a stable sort: each xdist worker collects the
    same order, which it must)."""
    items.sort(key=lambda item: not any(item.get_closest_marker(m) for m in OUTSIDE_PARTS))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    # Inside the call the test's own PORTAL_PLUGIN_DIRS (env or settings) is in force.
    guard = item.config.stash[_guard_key]
    guard.add_roots_from_env()
    guard.add_roots(getattr(settings, "PORTAL_PLUGIN_DIRS", []))
    try:
        return (yield)
    finally:
        guard.add_roots_from_env()
        guard.add_roots(getattr(settings, "PORTAL_PLUGIN_DIRS", []))


@pytest.fixture(autouse=True)
def _fresh_throttle_counts() -> Iterator[None]:
    """Write throttle counts live in the cache: one test's writes must not throttle the next."""
    from django.core.cache import cache

    cache.clear()
    yield
    cache.clear()


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings) -> None:
    """Hash test passwords cheaply: the production hasher's 10^6 rounds cost every login."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(scope="session", autouse=True)
def no_plugin_code_in_portal_process(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PluginCodeGuard]:
    """After the whole suite, no plugin code has run in this process (house rule 1)."""
    guard = request.config.stash[_guard_key]
    guard.add_roots([tmp_path_factory.getbasetemp()])  # tmp plugin dirs tests make live here
    yield guard
    problems = guard.violations()
    assert not problems, (
        "Plugin code ran in the portal (test) process instead of the sandbox:\n  "
        + "\n  ".join(problems)
    )


@pytest.fixture
def make_plugin() -> Callable[..., Plugin]:
    """Register a plugin (LOADED) and, by default, initialise it."""

    def factory(name: str | None = None, *, initialized: bool = True, **metadata) -> Plugin:
        name = name or f"plugin-{next(_names)}"
        source = PluginSource(location=f"/plugins/{name}.py", kind=SourceKind.FILE)
        meta = services.PluginMetadata(source=source, **metadata)
        plugin = services.plugin_register(name=name, metadata=meta, actor="test")
        if initialized:
            plugin = services.plugin_mark_initialized(name=name, actor="test")
        return plugin

    return factory


@pytest.fixture
def finish_run() -> Callable[..., PluginRun]:
    """Queue, start and finish one run of a plugin with the given status."""

    def factory(name: str, status: RunStatus = RunStatus.SUCCEEDED, **fields) -> PluginRun:
        run = services.run_queue(name=name, params={}, actor="test")
        services.run_start(run_id=run.pk, worker="test:1")
        fields.setdefault("duration_ms", 10.0)
        if status != RunStatus.SUCCEEDED:
            fields.setdefault("reason", f"Run of plugin '{name}' failed in the test on purpose")
        outcome = services.RunOutcome(status=status, **fields)
        return services.run_finish(run_id=run.pk, outcome=outcome)

    return factory


class PluginDir:
    """A temporary plugin directory that tests write plugin modules into."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def add(self, name: str, source: str, *, package: bool = False) -> Path:
        """Write plugin NAME as NAME.py (or NAME/__init__.py) and return its path."""
        code = textwrap.dedent(source)
        if package:
            directory = self.path / name
            directory.mkdir(exist_ok=True)
            (directory / "__init__.py").write_text(code)
            return directory
        target = self.path / f"{name}.py"
        target.write_text(code)
        return target


@pytest.fixture
def plugin_dir(tmp_path: Path) -> PluginDir:
    """An empty plugin directory of this test's own."""
    directory = tmp_path / "plugins"
    directory.mkdir()
    return PluginDir(directory)


@pytest.fixture
def plugins(plugin_dir: PluginDir, settings) -> Iterator[PluginDir]:
    """A plugin directory that PORTAL_PLUGIN_DIRS points at; warm hosts go with the test."""
    from plugins_app import pipeline

    settings.PORTAL_PLUGIN_DIRS = [str(plugin_dir.path)]
    yield plugin_dir
    pipeline.discard_warm_hosts()


@pytest.fixture(autouse=True)
def _stop_run_executor():
    """A run starts the executor and the heartbeat thread: stop both after the test, before
    its database goes, so no retry timer or sweep of this test claims a later test's runs or
    opens a connection in the middle of its fd count."""
    yield
    from plugins_app import executor, run_waits
    from plugins_app.cancel_watch import cancel_watch
    from plugins_app.executor import heartbeat, shutdown_executor

    shutdown_executor(wait=False)
    heartbeat().stop(timeout_s=0)
    # Their connections would keep PostgreSQL's test database open.
    run_waits.stop_listening()
    cancel_watch().stop()
    executor._stopping = False  # a test's SIGTERM ends with it; a real one ends the process


@pytest.fixture(autouse=True)
def _stop_background_loops():
    """A commit with webhooks wakes the deliverer thread; stop it (and a scheduler thread a
    test started) after the test, before its database goes."""
    yield
    from plugins_app.notifications.deliverer import deliverer_loop
    from plugins_app.schedules.scheduler import scheduler_loop

    deliverer_loop.stop()
    scheduler_loop.stop()


@pytest.fixture(scope="session", autouse=True)
def _stop_background_work():
    """Stop the run executor, the heartbeat thread and warm plugin hosts after the suite."""
    yield
    from plugins_app import pipeline
    from plugins_app.executor import shutdown_executor

    shutdown_executor()
    pipeline.discard_warm_hosts()


# Admin roles: what each kind of operator may do (see docs/admin.md).
_SEES = ("view_plugin", "view_pluginrun", "view_pluginevent", "view_schedule", "view_worker")
OPERATOR_PERMISSIONS = {
    "viewer": _SEES,
    "runner": (*_SEES, "run_plugin"),
    "operator": (
        *_SEES,
        "run_plugin",
        "operate_plugin",
        "view_schedulefiring",
        "add_schedule",
        "change_schedule",
        "delete_schedule",
        "view_webhook",
        "add_webhook",
        "change_webhook",
        "delete_webhook",
        "view_webhookdelivery",
    ),
}
OPERATOR_PASSWORD = "operator-password-for-tests"


@pytest.fixture
def make_operator(django_user_model):
    """A staff user with one admin role: viewer, runner (run_plugin) or operator (both)."""
    from django.contrib.auth.models import Permission

    def factory(username: str | None = None, *, role: str = "operator"):
        user = django_user_model.objects.create_user(
            username=username or role, password=OPERATOR_PASSWORD, is_staff=True
        )
        codenames = OPERATOR_PERMISSIONS[role]
        permissions = Permission.objects.filter(
            content_type__app_label="plugins_app", codename__in=codenames
        )
        assert permissions.count() == len(codenames), "a plugins_app permission is missing"
        user.user_permissions.set(permissions)
        return user

    return factory


# --- sandbox ---


@pytest.fixture
def sandbox_settings():
    """Apply SandboxConfig changes for one test (hosts restart), then restore the previous."""
    from sandbox import configure_sandbox

    previous = []

    def apply(**changes):
        previous.append(configure_sandbox(**changes))

    yield apply
    if previous:
        configure_sandbox(previous[0])


# --- health and operations API ---


def own_directory(tmp_path_factory: pytest.TempPathFactory, prefix: str) -> Path:
    """A new directory under the run's base temp. Not mktemp(), which lists every numbered
    directory there to find the next number: twice per test, that grew as the square."""
    import tempfile

    return Path(tempfile.mkdtemp(prefix=f"{prefix}-", dir=tmp_path_factory.getbasetemp()))


@pytest.fixture(scope="session", autouse=True)
def _static_files_looked_up_per_request():
    """Each test client builds its own middleware, and WhiteNoise scanned the ~500 static files
    of the finders at each (29 ms a client); in autorefresh mode it finds a file when asked."""
    settings.WHITENOISE_AUTOREFRESH = True


@pytest.fixture(scope="session", autouse=True)
def _no_background_health_refresher():
    """No request in the test process starts the node's refresher thread, even between tests."""
    settings.PORTAL_HEALTH_REFRESH_ON_READ = True


@pytest.fixture(autouse=True)
def _fresh_health_snapshot(settings, tmp_path_factory):
    """Every test has a node health snapshot file of its own, none yet, refreshed on each read.

    The suite changes state through the services and reads health right after: each health read
    refreshes the snapshot first, in the request's thread (no background refresher here).
    """
    from plugins_app.health_snapshot import reader

    settings.PORTAL_HEALTH_REFRESH_ON_READ = True
    settings.PORTAL_HEALTH_SNAPSHOT_FILE = (
        own_directory(tmp_path_factory, "node") / "health-snapshot"
    )
    reader.forget()
    yield
    reader.forget()
    # A refresher a test started (a request in production mode) must not write the next test's file.
    from plugins_app.health_refresher import refresher

    refresher.stop(wait_s=5)


@pytest.fixture
def api_client():
    """An anonymous API client (DRF's test client, CSRF checks on as in production)."""
    from rest_framework.test import APIClient

    return APIClient(enforce_csrf_checks=True)


@pytest.fixture
def make_user(django_user_model):
    """A user, with the permissions named ("plugins_app.run_plugin") if any."""
    from django.contrib.auth.models import Permission

    def factory(username: str = "operator", *perms: str):
        user = django_user_model.objects.create_user(username=username, password="pw-for-tests")
        for perm in perms:
            app_label, codename = perm.split(".")
            user.user_permissions.add(
                Permission.objects.get(content_type__app_label=app_label, codename=codename)
            )
        return user

    return factory


@pytest.fixture
def operator_client(make_user):
    """An API client authenticated by token as a user who may run plugins."""
    from rest_framework.test import APIClient

    from plugins_app.tokens import issue_token

    user = make_user("operator", "plugins_app.run_plugin")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {issue_token(user=user)}")
    return client


def _closed_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def database_outage():
    """A real outage of the test database, as a context manager; use with transactional_db.

    SQLite: the database file is moved aside and garbage bytes put in its place.
    PostgreSQL: the connection is pointed at a closed port (the shared server stays up).
    Restored on exit, and in any case at teardown.
    """
    import contextlib
    from pathlib import Path

    from django.db import connection, connections

    restorers = []

    @contextlib.contextmanager
    def outage():
        connections.close_all()
        if connection.vendor == "sqlite":
            path = Path(connection.settings_dict["NAME"])
            moved = []
            for suffix in ("", "-wal", "-shm"):
                part = Path(f"{path}{suffix}")
                if part.exists():
                    part.rename(f"{part}.outage")
                    moved.append(part)
            path.write_bytes(b"not a database, an outage " * 64)

            def restore():
                connections.close_all()
                path.unlink(missing_ok=True)
                for part in moved:
                    Path(f"{part}.outage").rename(part)

        else:
            port = connection.settings_dict["PORT"]
            connection.settings_dict["PORT"] = str(_closed_port())

            def restore():
                connections.close_all()
                connection.settings_dict["PORT"] = port

        restorers.append(restore)
        try:
            yield
        finally:
            restorers.remove(restore)
            restore()

    yield outage
    for restore in restorers:
        restore()


@pytest.fixture
def database_lock(tmp_path):
    """A real lock on the database held by another connection, as a context manager.

    SQLite: the test database is copied to a file of this test's own (other threads may hold
    the shared one open), the connection pointed at it, and a connection in exclusive locking
    mode holds it (WAL readers are blocked). Use with transactional_db, so the copy has the data.
    PostgreSQL: another session holds ACCESS EXCLUSIVE on the plugin table.
    """
    import contextlib
    import sqlite3

    from django.db import connection, connections

    @contextlib.contextmanager
    def lock():
        if connection.vendor == "sqlite":
            shared = connection.settings_dict["NAME"]
            copy = tmp_path / "locked.sqlite3"
            with (
                contextlib.closing(sqlite3.connect(shared)) as source,
                contextlib.closing(sqlite3.connect(copy)) as target,
            ):
                source.backup(target)
            connections.close_all()
            connection.settings_dict["NAME"] = str(copy)
            holder = sqlite3.connect(copy, isolation_level=None)
            holder.execute("PRAGMA journal_mode=WAL")
            holder.execute("PRAGMA locking_mode=EXCLUSIVE")
            holder.execute("BEGIN EXCLUSIVE")
            try:
                yield
            finally:
                holder.execute("ROLLBACK")
                holder.close()
                connections.close_all()
                connection.settings_dict["NAME"] = shared
        else:
            import psycopg

            db = connection.settings_dict
            holder = psycopg.connect(
                dbname=db["NAME"],
                user=db["USER"],
                password=db["PASSWORD"] or None,
                host=db["HOST"] or None,
                port=db["PORT"] or None,
            )
            holder.execute("LOCK TABLE plugins_app_plugin IN ACCESS EXCLUSIVE MODE")
            try:
                yield
            finally:
                holder.rollback()
                holder.close()

    return lock


@pytest.fixture
def targets_readable_by_anyone(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The sandbox test targets copied where any user can import them (a world-readable
    directory on sys.path): a SANDBOX_RUN_AS user cannot read a checkout under a mode-700
    directory (root's home, `mktemp -d`). Yields the package name to use in targets."""
    import shutil
    import tempfile
    import uuid

    root = Path(tempfile.mkdtemp(prefix="sandbox-targets-", dir="/tmp"))
    package = f"readable_targets_{uuid.uuid4().hex[:8]}"
    shutil.copytree(Path(__file__).parent / "sandbox_targets", root / package)
    for path in [root, *root.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    monkeypatch.syspath_prepend(str(root))
    yield package
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(autouse=True)
def _own_metrics_file(settings, tmp_path_factory):
    """Each test keeps the node's last metrics reading in a directory of its own."""
    name = Path(
        settings.PORTAL_METRICS_LAST_READING_FILE
    ).name  # as a process started there names it
    settings.PORTAL_METRICS_LAST_READING_FILE = own_directory(tmp_path_factory, "var") / name
