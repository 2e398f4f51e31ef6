"""The page a login locked out by django-axes gets: what happened, for how long, what next."""

from __future__ import annotations

from typing import Any

from axes.helpers import get_client_username, get_cool_off, get_failure_limit
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse

TOO_MANY_REQUESTS = 429


def lockout_response(
    request: HttpRequest, original_response: HttpResponse | None, credentials: Any = None
) -> HttpResponse:
    """AXES_LOCKOUT_CALLABLE: a 429 page in the admin's look that says when to try again."""
    cool_off = get_cool_off(request)
    context = {
        "title": "Login locked",
        "username": get_client_username(request, credentials) or "",
        "failure_limit": get_failure_limit(request, credentials),
        "cooloff_minutes": round(cool_off.total_seconds() / 60) if cool_off else None,
    }
    response = TemplateResponse(request, "portal/lockout.html", context, status=TOO_MANY_REQUESTS)
    return response.render()
