"""The node's health snapshot: every plugin's health record, as one refresher last read them.

One process per node (plugins_app.health_refresher) reads the registry and publishes the records
to one file (`PORTAL_HEALTH_SNAPSHOT_FILE`) replaced atomically; every server process of the node
answers the health endpoints from that file and never from the database. A reader re-parses the
file only when its inode, mtime or size changed, so a health request costs one `stat()`.

A snapshot is `stale` when it is older than `PORTAL_HEALTH_STALE_AFTER_S` or when the last
refresh failed (the database did not answer); `stale_since` says since when.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypedDict

from django.conf import settings

from plugins_app import node_file

logger = logging.getLogger("plugins_app.health")

Record = dict[str, Any]


class SnapshotDocument(TypedDict):
    """The file's content, written by the refresher (plugins_app.health_refresher)."""

    read_at: float  # when the records were read, seconds since the epoch
    records: list[Record]  # sorted by name, as selectors.health_records() returns them
    refreshed_at: float  # the last refresh attempt, successful or not
    failing_since: float | None  # the first failed refresh since the last good one
    failure: str | None  # what the last failed refresh said


@dataclass(frozen=True)
class Snapshot:
    """A parsed snapshot document, with its records by name."""

    document: SnapshotDocument
    by_name: dict[str, Record] = field(repr=False)
    # Bodies rendered from this snapshot, by what was asked: each is rendered once, not per request.
    rendered: dict[tuple, bytes] = field(default_factory=dict, repr=False, compare=False)

    @property
    def read_at(self) -> float:
        return self.document["read_at"]

    @property
    def database_up(self) -> bool:
        return self.document["failing_since"] is None

    def age_s(self, now: float | None = None) -> float:
        return max(0.0, (now or time.time()) - self.read_at)

    def stale_since(self, now: float | None = None) -> float | None:
        """When this snapshot started to be stale; None while it is fresh."""
        aged_out = self.read_at + settings.PORTAL_HEALTH_STALE_AFTER_S
        failing = self.document["failing_since"]
        if failing is not None:
            return min(failing, aged_out)
        return aged_out if (now or time.time()) > aged_out else None

    def served(self, record: Record, now: float | None = None) -> Record:
        """The record as the API serves it: the snapshot's time, and whether it is stale."""
        since = self.stale_since(now)
        return {
            **record,
            "checked_at": iso(self.read_at),
            "stale": since is not None,
            "stale_since": iso(since) if since is not None else None,
        }


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")


class SnapshotReader:
    """This process's view of the node's snapshot file, re-read only when the file changed."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._key: tuple[str, int, int, int] | None = None
        self._snapshot: Snapshot | None = None

    def current(self) -> Snapshot | None:
        """The node's last snapshot, or None when the node has none (or it cannot be read)."""
        path = Path(settings.PORTAL_HEALTH_SNAPSHOT_FILE)
        try:
            status = os.stat(path)
        except OSError:
            return None
        key = (str(path), status.st_ino, status.st_mtime_ns, status.st_size)
        if key == self._key:
            return self._snapshot
        with self._lock:
            if key != self._key:
                self._snapshot = _parse(path)
                self._key = key
            return self._snapshot

    def forget(self) -> None:
        with self._lock:
            self._key = None
            self._snapshot = None


def _parse(path: Path) -> Snapshot | None:
    try:
        document = node_file.load(path)
    except OSError as error:
        logger.warning("Could not read the health snapshot %s: %s", path, error)
        return None
    if document is None or not isinstance(document.get("records"), list):
        return None
    snapshot_document = SnapshotDocument(
        read_at=float(document.get("read_at") or 0.0),
        records=document["records"],
        refreshed_at=float(document.get("refreshed_at") or 0.0),
        failing_since=document.get("failing_since"),
        failure=document.get("failure"),
    )
    by_name = {record["name"]: record for record in snapshot_document["records"]}
    return Snapshot(document=snapshot_document, by_name=by_name)


# The process-wide reader the health endpoints, /metrics and /readyz share.
reader = SnapshotReader()


def snapshot_age_seconds() -> float | None:
    """Seconds since the node's snapshot was read from the database; None when there is none."""
    snapshot = reader.current()
    return None if snapshot is None else snapshot.age_s()
