"""The X-Portal-Signature header: HMAC-SHA256 over "<timestamp>.<body>" with the webhook's
secret, so a receiver can check who sent the body and refuse a replayed one.

    X-Portal-Signature: t=1767225600,v1=5f0c...e9

Standard library only: receivers may copy verify() as it is (docs/notifications.md).
"""

from __future__ import annotations

import hashlib
import hmac
import time

SIGNATURE_HEADER = "X-Portal-Signature"
DEFAULT_TOLERANCE_S = 300


def signature(*, secret: str, body: bytes, timestamp: int) -> str:
    signed = str(timestamp).encode() + b"." + body
    return hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def header_value(*, secret: str, body: bytes, timestamp: int | None = None) -> str:
    stamp = int(time.time()) if timestamp is None else timestamp
    return f"t={stamp},v1={signature(secret=secret, body=body, timestamp=stamp)}"


def verify(
    *,
    secret: str,
    body: bytes,
    header: str,
    tolerance_s: int = DEFAULT_TOLERANCE_S,
    now: float | None = None,
) -> bool:
    """True when `header` signs `body` with `secret` and its timestamp is recent."""
    parts = dict(item.split("=", 1) for item in header.split(",") if "=" in item)
    try:
        stamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - stamp) > tolerance_s:
        return False
    expected = signature(secret=secret, body=body, timestamp=stamp)
    return hmac.compare_digest(expected, parts.get("v1", ""))
