"""drf-spectacular hooks: the schema shows each endpoint once, without its trailing-slash alias."""

from __future__ import annotations


def drop_trailing_slash_aliases(endpoints: list[tuple], **kwargs) -> list[tuple]:
    return [endpoint for endpoint in endpoints if not endpoint[0].endswith("/")]
