"""drf-spectacular hooks and extensions, so the schema says exactly what the API accepts."""

from __future__ import annotations

from drf_spectacular.extensions import OpenApiAuthenticationExtension, OpenApiSerializerExtension
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.plumbing import build_bearer_security_scheme_object

from plugins_app.api.policy import PublicRead


class PortalAutoSchema(AutoSchema):
    """drf-spectacular's schema, knowing that a PublicRead view's reads need no credentials."""

    def get_auth(self) -> list[dict]:
        auths = super().get_auth()
        public = any(isinstance(p, PublicRead) for p in self.view.get_permissions())
        if public and PublicRead.open() and {} not in auths:
            auths.append({})  # OpenAPI's "no credentials" alternative
        return auths


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


class TokenScheme(OpenApiAuthenticationExtension):
    """Our knox-backed token check: `Authorization: Token <key>`, as DRF's tokens were."""

    target_class = "plugins_app.api.authentication.TokenAuthentication"
    name = "tokenAuth"

    def get_security_definition(self, auto_schema):
        return build_bearer_security_scheme_object(
            header_name="Authorization", token_prefix="Token"
        )
