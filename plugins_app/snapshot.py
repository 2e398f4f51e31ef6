"""The last health this server process served, kept so health reads survive a database outage.

Per process and thread-safe. Every successful health read refreshes it; when the database is
down, locked or slow the health endpoints answer from it with `stale: true` and each record's own
`checked_at`. `ReadFailures` logs a failing database once per outage, not once per request, and
lets one request per retry interval probe it while the others answer from the snapshot at once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

logger = logging.getLogger("plugins_app.health")

Record = dict[str, Any]


class HealthSnapshot:
    """Health records by plugin name, each as last read from the database."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._records: dict[str, Record] = {}
        self._complete = False  # an unfiltered list was served: we know every plugin
        self._served_filters: set[tuple[str | None, bool | None]] = set()

    def remember_list(
        self, records: list[Record], *, state: str | None = None, enabled: bool | None = None
    ) -> None:
        read_at = max((_checked_at(record) for record in records), default=None)
        with self._lock:
            if state is None and enabled is None:
                # The whole registry: plugins missing from it are gone, unless read after it.
                kept = {
                    name: record
                    for name, record in self._records.items()
                    if read_at is not None and _checked_at(record) > read_at
                }
                self._records = _newest(kept, records)
                self._complete = True
            else:
                self._records = _newest(self._records, records)
            self._served_filters.add((state, enabled))

    def remember_record(self, record: Record) -> None:
        with self._lock:
            self._records = _newest(self._records, [record])

    def forget(self, name: str) -> None:
        """The database says this plugin does not exist."""
        with self._lock:
            if name in self._records:
                self._records = {k: v for k, v in self._records.items() if k != name}

    def stale_list(
        self, *, state: str | None = None, enabled: bool | None = None
    ) -> list[Record] | None:
        """The list as last known, or None when this process never served one it can stand by."""
        with self._lock:
            if not self._complete and (state, enabled) not in self._served_filters:
                return None
            records = self._records
        matching = (
            record
            for _, record in sorted(records.items())
            if (state is None or record["state"] == state)
            and (enabled is None or record["enabled"] == enabled)
        )
        return [_stale(record) for record in matching]

    def stale_record(self, name: str) -> Record | None:
        """The plugin's last record; None when unknown here (see `knows_every_plugin`)."""
        record = self._records.get(name)
        return _stale(record) if record is not None else None

    @property
    def knows_every_plugin(self) -> bool:
        """True once an unfiltered list was served: a name not in it was not registered."""
        return self._complete

    def clear(self) -> None:
        with self._lock:
            self._records = {}
            self._complete = False
            self._served_filters = set()


def _newest(records: dict[str, Record], incoming: Iterable[Record]) -> dict[str, Record]:
    """A copy of records with each incoming one in, unless the held one was checked later.

    A slow read can finish after a faster, newer one: the later answer must not win.
    """
    merged = dict(records)
    for record in incoming:
        held = merged.get(record["name"])
        if held is None or _checked_at(record) >= _checked_at(held):
            merged[record["name"]] = record
    return merged


def _checked_at(record: Record) -> datetime:
    # Parsed, not compared as text: isoformat() drops ".000000", which breaks text order.
    checked = record.get("checked_at")
    return datetime.fromisoformat(checked) if checked else datetime.min.replace(tzinfo=UTC)


def _stale(record: Record) -> Record:
    return {**record, "stale": True}


def oldest_checked_at(records: Iterable[Record]) -> str | None:
    times = [record["checked_at"] for record in records if record.get("checked_at")]
    return min(times) if times else None


class ReadFailures:
    """One failure streak (an outage) at a time: logged when it starts and when it ends."""

    def __init__(self, what: str, meanwhile: str) -> None:
        self._what = what
        self._meanwhile = meanwhile
        self._lock = threading.Lock()
        self._since: float | None = None
        self._failed_reads = 0
        self._seen_errors: set[type[BaseException]] = set()
        self._last_try = 0.0

    @property
    def failing(self) -> bool:
        return self._since is not None

    def should_probe(self, retry_after_s: float) -> bool:
        """False while failing, except for one caller per retry interval, which tries again."""
        if self._since is None:
            return True
        with self._lock:
            now = time.monotonic()
            if now - self._last_try < retry_after_s:
                return False
            self._last_try = now
            return True

    def failed(self, error: BaseException) -> None:
        """Count a failed read; log it only when it starts an outage or fails in a new way."""
        with self._lock:
            starts = self._since is None
            new_kind = type(error) not in self._seen_errors
            if starts:
                self._since = time.monotonic()
                self._failed_reads = 0
                self._seen_errors = set()
            self._failed_reads += 1
            self._seen_errors.add(type(error))
            self._last_try = time.monotonic()
        if starts:
            logger.error(
                "%s failed (%s: %s); %s until reads succeed again (logged once per outage)",
                self._what,
                type(error).__name__,
                _one_line(error),
                self._meanwhile,
                exc_info=error,
            )
        elif new_kind:
            logger.error(
                "%s failed again, differently (%s: %s)",
                self._what,
                type(error).__name__,
                _one_line(error),
                exc_info=error,
            )

    def succeeded(self) -> None:
        if self._since is None:  # the common case: no lock on the hot path
            return
        with self._lock:
            if self._since is None:
                return
            lasted, reads = time.monotonic() - self._since, self._failed_reads
            self._since = None
            self._failed_reads = 0
            self._seen_errors = set()
            self._last_try = 0.0
        logger.warning("%s recovered after %.1f s and %d failed read(s)", self._what, lasted, reads)

    def reset(self) -> None:
        with self._lock:
            self._since = None
            self._failed_reads = 0
            self._seen_errors = set()
            self._last_try = 0.0


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return text[:300] or "no message"


# The process-wide instances the health endpoints share.
health_snapshot = HealthSnapshot()
health_read_failures = ReadFailures(
    "Health read", "answering from the last snapshot, marked stale,"
)


def health_snapshot_age_seconds() -> float | None:
    """Seconds since the health snapshot was last refreshed from the database, None while empty.

    /metrics publishes it (portal_health_snapshot_age_seconds); it follows the snapshot to
    wherever the health endpoints read it from.
    """
    records = health_snapshot._records  # replaced, never changed in place: no lock needed
    if not records:
        return None
    newest = max(_checked_at(record) for record in records.values())
    return max(0.0, (datetime.now(UTC) - newest).total_seconds())
