"""Logging filters: an outage is logged once by the health refresher, not once per request."""

from __future__ import annotations

import logging


class DropServiceUnavailable(logging.Filter):
    """Drops Django's per-request line for a 503: during an outage that is thousands a minute."""

    def filter(self, record: logging.LogRecord) -> bool:
        return getattr(record, "status_code", None) != 503
