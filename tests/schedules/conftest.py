"""Fixtures of the schedule tests: a registered plugin whose source file exists."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
from django.utils import timezone

from plugins_app import services
from plugins_app.models import Plugin, SourceKind
from plugins_app.schedules.models import Schedule
from plugins_app.schedules.writes import refresh_plugin_next_run
from plugins_app.sources import PluginSource


@pytest.fixture
def real_plugin(plugins) -> Callable[..., Plugin]:
    """Register plugin NAME from a real file (runs would find it), INITIALIZED; no load."""

    def factory(name: str = "tick", **metadata) -> Plugin:
        path = plugins.add(name, "def run(**params):\n    return params\n")
        source = PluginSource(location=str(path), kind=SourceKind.FILE)
        meta = services.PluginMetadata(source=source, **metadata)
        services.plugin_register(name=name, metadata=meta, actor="test")
        return services.plugin_mark_initialized(name=name, actor="test")

    return factory


@pytest.fixture
def due_schedule() -> Callable[..., Schedule]:
    """A schedule of PLUGIN due `late_s` seconds ago (an interval of 60 s unless given)."""

    def factory(plugin: Plugin, *, late_s: float = 1.0, **fields) -> Schedule:
        fields.setdefault("name", "every-minute")
        if not fields.get("cron"):
            fields.setdefault("every_s", 60.0)
        schedule = Schedule.objects.create(
            plugin=plugin, next_run_at=timezone.now() - timedelta(seconds=late_s), **fields
        )
        refresh_plugin_next_run(plugin.pk)
        return schedule

    return factory
