"""What /metrics reports, read from the database, and the node's last reading kept on disk.

A reading is three queries whatever the number of plugins: the plugin rows, their cumulative
run tallies (plugins_app.run_tallies) and their queued runs. Every successful scrape writes its
reading to one file per node (`PORTAL_METRICS_LAST_READING_FILE`, in the var directory), replaced
atomically; while the database cannot be read, every server process of the node serves that
file. So all of them serve the same numbers, a process started during an outage serves them
too, and a counter never seems to go back: an older reading never replaces a newer one.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, NotRequired, TypedDict, cast

from django.conf import settings

from plugins_app import node_file, selectors
from plugins_app.fleet.queues import queue_overview
from plugins_app.models import DURATION_BUCKETS

logger = logging.getLogger("plugins_app.metrics")


class PluginReading(TypedDict):
    name: str
    state: str
    enabled: bool
    consecutive_failures: int
    quarantined: NotRequired[bool]  # absent from a last reading an older version wrote
    running: int
    queued: int
    runs: dict[str, int]  # finished runs by outcome label ('ok': succeeded)
    timed_runs: int  # the duration histogram's count
    duration_s: float  # and its sum
    buckets: list[int]  # cumulative, one per DURATION_BUCKETS bound


class Reading(TypedDict):
    read_at: float  # when it was read from the database, seconds since the epoch
    plugins: list[PluginReading]
    # Live worker nodes per queue, routed-to queues without one included (older files: absent).
    workers_alive: NotRequired[dict[str, int]]


def read_registry() -> Reading:
    """Read what /metrics reports from the database (run it under a read deadline)."""
    plugins = selectors.plugin_metric_rows()
    tallies = selectors.run_tally_rows()
    queued = selectors.queued_run_counts()
    by_plugin: dict[int, list[dict[str, Any]]] = {}
    for tally in tallies:
        by_plugin.setdefault(tally["plugin_id"], []).append(tally)
    return {
        "read_at": time.time(),
        "plugins": [
            _plugin_reading(row, by_plugin.get(row["id"], []), queued.get(row["id"], 0))
            for row in plugins
        ],
        # Only worker nodes serve queues: with the thread executor there is nothing to count.
        "workers_alive": (
            {row["queue"]: row["live_workers"] for row in queue_overview()}
            if settings.PORTAL_RUN_EXECUTOR == "celery"
            else {}
        ),
    }


def _plugin_reading(row: dict[str, Any], tallies: list[dict[str, Any]], queued: int):
    return PluginReading(
        name=row["name"],
        state=row["state"],
        enabled=row["enabled"],
        consecutive_failures=row["consecutive_failures"],
        quarantined=row["quarantined_until"] is not None,
        running=row["running_count"],
        queued=queued,
        runs={tally["outcome"]: tally["runs"] for tally in tallies},
        timed_runs=sum(tally["timed_runs"] for tally in tallies),
        duration_s=sum(tally["duration_s"] for tally in tallies),
        buckets=[sum(tally[column] for tally in tallies) for column, _ in DURATION_BUCKETS],
    )


_write_failing = False  # only so that a failing disk is logged once, not at every scrape


def remember(reading: Reading, path: Path) -> None:
    """Make `reading` the node's last known, unless the file already holds a newer one.

    A failure to write is logged (once until a write succeeds again), never raised: the scrape
    that read the database still answers.
    """
    global _write_failing
    try:
        node_file.replace_if_newer(path, dict(reading), time_key="read_at")
    except OSError as error:
        if not _write_failing:
            logger.warning(
                "Could not keep the last metrics reading in %s (%s): during a database outage "
                "/metrics will serve an older one, or none (logged once until a write succeeds)",
                path,
                error,
            )
        _write_failing = True
    else:
        _write_failing = False


def last_known(path: Path) -> Reading | None:
    """The node's last reading, or None when there is none (or it cannot be read)."""
    try:
        reading = node_file.load(path)
    except OSError as error:
        logger.warning("Could not read the last metrics reading from %s: %s", path, error)
        return None
    if reading is None:
        return None
    if not isinstance(reading.get("read_at"), int | float):
        logger.warning("The last metrics reading in %s has no read time; it is ignored", path)
        return None
    return cast(Reading, reading)
