"""The admin page of API tokens: knox's, listing lookup prefixes, and showing a new token once."""

from __future__ import annotations

from django.contrib import admin, messages
from knox.admin import AuthTokenAdmin as KnoxAuthTokenAdmin
from knox.models import AuthToken

admin.site.unregister(AuthToken)


@admin.register(AuthToken)
class AuthTokenAdmin(KnoxAuthTokenAdmin):
    list_display = ("token_key", "user", "created", "expiry")

    def save_model(self, request, obj, form, change):
        admin.ModelAdmin.save_model(self, request, obj, form, change)
        if not change:
            # form.token exists only in this request: the database keeps its hash.
            self.message_user(
                request,
                f"API token for '{obj.user.get_username()}', shown only this once (the portal "
                "keeps a hash): store it now and send it as 'Authorization: Token <token>': "
                f"{form.token}",
                messages.WARNING,
            )
