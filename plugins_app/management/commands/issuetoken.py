"""Issue an API token for a user and print it, the only time it is ever shown."""

from datetime import timedelta

from django.contrib.auth import get_user_model
from django.core.management.base import CommandError

from plugins_app.management.arguments import PortalCommand
from plugins_app.tokens import issue_token

MAX_DAYS = 36500  # a hundred years


class Command(PortalCommand):
    help = (
        "Issue an API token for USERNAME and print it once (the database keeps only its hash). "
        "Send it as: Authorization: Token <token>."
    )

    def add_arguments(self, parser):
        parser.add_argument("username", metavar="USERNAME", help="The user the token acts as.")
        parser.add_argument(
            "--expires-in-days",
            type=int,
            metavar="DAYS",
            help="Refuse the token after this many days (default: it does not expire).",
        )

    def handle(self, *args, username: str, expires_in_days: int | None, **options):
        if expires_in_days is not None and not 0 <= expires_in_days <= MAX_DAYS:
            raise CommandError(
                f"--expires-in-days must be from 0 to {MAX_DAYS}, got {expires_in_days}",
                returncode=2,
            )
        users = get_user_model()
        try:
            user = users.objects.get(**{users.USERNAME_FIELD: username})
        except users.DoesNotExist:
            raise CommandError(
                f"No user '{username}' (create one in the admin, or with: manage.py "
                "createsuperuser)",
                returncode=2,
            ) from None
        expires_in = timedelta(days=expires_in_days) if expires_in_days is not None else None
        token = issue_token(user=user, expires_in=expires_in)
        self.stdout.write(f"API token for '{username}': {token}")
        self.stdout.write(
            "It is shown only this once (the portal keeps a hash): store it now, and send it as "
            "'Authorization: Token <token>'. Revoke it in the admin under Knox > Auth tokens."
        )
