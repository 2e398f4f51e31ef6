"""When a run's finish became visible in the database, seen from a connection of its own."""

from __future__ import annotations

import threading
from datetime import datetime

from django.db import connection
from django.utils import timezone

from plugins_app.models import FINISHED_RUN_STATUSES, PluginRun

READ_EVERY_S = 0.001  # far finer than the 20 ms the waits are held to


class FinishObserver:
    """Reads which runs of a plugin are finished every millisecond, on a thread and connection
    of its own, and notes when each was first seen so: the moment it was visible to anyone."""

    def __init__(self, plugin: str) -> None:
        self.plugin = plugin
        self.seen: dict[int, datetime] = {}
        self._stop = threading.Event()
        self._noted = threading.Condition()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> FinishObserver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def lag_ms(self, run_id: int, answered: datetime) -> float:
        """How long after its finish was visible the answer about run `run_id` came (below 0
        when the answer beat this observer's next read)."""
        with self._noted:
            self._noted.wait_for(lambda: run_id in self.seen, timeout=10)
        return (answered - self.seen[run_id]).total_seconds() * 1000

    def _watch(self) -> None:
        try:
            while not self._stop.wait(READ_EVERY_S):
                finished = PluginRun.objects.filter(
                    plugin__name=self.plugin, status__in=FINISHED_RUN_STATUSES
                ).values_list("pk", flat=True)
                now = timezone.now()
                with self._noted:
                    for run_id in finished:
                        self.seen.setdefault(run_id, now)
                    self._noted.notify_all()
        finally:
            connection.close()
