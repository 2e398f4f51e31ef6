"""`Authorization: Token <key>` checked against the hashed tokens of django-rest-knox."""

from __future__ import annotations

import re

from knox.auth import TokenAuthentication as KnoxTokenAuthentication
from rest_framework import exceptions

# knox issues 64 hex characters (AUTH_TOKEN_CHARACTER_LENGTH, no prefix).
TOKEN_SHAPE = re.compile(rb"[0-9a-f]{64}")


class TokenAuthentication(KnoxTokenAuthentication):
    """knox's check, after refusing what cannot be a token without asking the database.

    A header that is not ASCII (knox would raise UnicodeDecodeError: a 500) or holds a NUL
    (PostgreSQL refuses it: a false outage) is simply an invalid token.
    """

    def authenticate_credentials(self, token: bytes):
        if not TOKEN_SHAPE.fullmatch(token):
            raise exceptions.AuthenticationFailed("Invalid token.")
        return super().authenticate_credentials(token)
