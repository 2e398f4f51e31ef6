"""drf-spectacular hooks and extensions, so the schema says exactly what the API accepts."""

from __future__ import annotations

from drf_spectacular.extensions import OpenApiSerializerExtension


def drop_trailing_slash_aliases(endpoints: list[tuple], **kwargs) -> list[tuple]:
    """Each endpoint once: the trailing-slash alias answers the same and is left out."""
    return [endpoint for endpoint in endpoints if not endpoint[0].endswith("/")]


class StrictSerializerExtension(OpenApiSerializerExtension):
    """A StrictSerializer refuses unknown keys: `additionalProperties: false` says so."""

    target_class = "plugins_app.api.serializers.StrictSerializer"
    match_subclasses = True

    def map_serializer(self, auto_schema, direction):
        schema = auto_schema._map_serializer(self.target, direction, bypass_extensions=True)
        return {**schema, "additionalProperties": False}
