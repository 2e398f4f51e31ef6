"""Shared fixtures: factories that build registry rows through the services."""

from __future__ import annotations

import itertools
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from plugins_app import services
from plugins_app.models import Plugin, PluginRun, RunStatus

_names = itertools.count(1)


@pytest.fixture
def make_plugin() -> Callable[..., Plugin]:
    """Register a plugin (LOADED) and, by default, initialise it."""

    def factory(name: str | None = None, *, initialized: bool = True, **metadata) -> Plugin:
        name = name or f"plugin-{next(_names)}"
        meta = services.PluginMetadata(source=f"/plugins/{name}.py", **metadata)
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


@pytest.fixture(autouse=True)
def _stop_heartbeat():
    """A run starts the heartbeat thread; stop it after the test, before its database goes."""
    yield
    from plugins_app.executor import heartbeat

    heartbeat().stop(timeout_s=0)


@pytest.fixture(scope="session", autouse=True)
def _stop_background_work():
    """Stop the run executor, the heartbeat thread and warm plugin hosts after the suite."""
    yield
    from plugins_app import pipeline
    from plugins_app.executor import shutdown_executor

    shutdown_executor()
    pipeline.discard_warm_hosts()


# Admin roles: what each kind of operator may do (see docs/admin.md).
OPERATOR_PERMISSIONS = {
    "viewer": ("view_plugin", "view_pluginrun", "view_pluginevent"),
    "runner": ("view_plugin", "view_pluginrun", "view_pluginevent", "run_plugin"),
    "operator": (
        "view_plugin",
        "view_pluginrun",
        "view_pluginevent",
        "run_plugin",
        "operate_plugin",
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
