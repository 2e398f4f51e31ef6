"""API tokens: issued once in plain text to the caller, kept only as a hash (django-rest-knox)."""

from __future__ import annotations

from datetime import timedelta

from django.contrib.auth.models import AbstractBaseUser
from knox.models import AuthToken


def issue_token(*, user: AbstractBaseUser, expires_in: timedelta | None = None) -> str:
    """A new token for `user`; the database keeps its SHA-512 hash and a short lookup prefix."""
    _, token = AuthToken.objects.create(user=user, expiry=expires_in)
    return token
