"""`Authorization: Token <key>` checked against the hashed tokens of django-rest-knox."""

from __future__ import annotations

import re

from knox.auth import TokenAuthentication as KnoxTokenAuthentication
from rest_framework import exceptions
from rest_framework.authentication import get_authorization_header

# knox issues 64 hex characters (AUTH_TOKEN_CHARACTER_LENGTH, no prefix).
TOKEN_SHAPE = re.compile(rb"[0-9a-f]{64}")

# OAuth's scheme, which clients send by habit: said plainly instead of "not provided".
BEARER_REFUSED = (
    "The API does not take 'Bearer' credentials: send your API token as "
    "'Authorization: Token <key>' (use 'Token <key>', not 'Bearer <key>')"
)


class TokenAuthentication(KnoxTokenAuthentication):
    """knox's check, after refusing what cannot be a token without asking the database.

    A header that is not ASCII (knox would raise UnicodeDecodeError: a 500) or holds a NUL
    (PostgreSQL refuses it: a false outage) is simply an invalid token.
    """

    def authenticate(self, request):
        scheme = get_authorization_header(request).split()[:1]
        if scheme and scheme[0].lower() == b"bearer":
            raise exceptions.AuthenticationFailed(BEARER_REFUSED)
        return super().authenticate(request)

    def authenticate_credentials(self, token: bytes):
        if not TOKEN_SHAPE.fullmatch(token):
            raise exceptions.AuthenticationFailed("Invalid token.")
        return super().authenticate_credentials(token)
