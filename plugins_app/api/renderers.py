"""JSON rendering that cannot fail on stored text: a lone surrogate is sent as its escape."""

from __future__ import annotations

from typing import Any

from rest_framework.renderers import JSONRenderer


class _EscapingJSONRenderer(JSONRenderer):
    ensure_ascii = True


class SafeJSONRenderer(JSONRenderer):
    """UTF-8 JSON as DRF writes it; when a value is not valid text (a lone surrogate a plugin
    or an older version stored), the whole body as ASCII with `\\uXXXX` escapes instead of a 500.
    """

    def render(
        self,
        data: Any,
        accepted_media_type: str | None = None,
        renderer_context: Any = None,
    ) -> bytes:
        try:
            return super().render(data, accepted_media_type, renderer_context)
        except UnicodeEncodeError:
            return _EscapingJSONRenderer().render(data, accepted_media_type, renderer_context)
