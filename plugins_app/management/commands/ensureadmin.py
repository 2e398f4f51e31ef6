"""Create the first admin account with a generated password, printed once."""

import secrets

from django.contrib.auth import get_user_model

from plugins_app.management.arguments import PortalCommand


class Command(PortalCommand):
    help = "Create an admin account with a generated password if no superuser exists yet."

    def add_arguments(self, parser):
        parser.add_argument("--username", default="admin", help="Account name (default: admin).")

    def handle(self, *args, username: str, **options):
        users = get_user_model()
        if users.objects.filter(is_superuser=True).exists():
            self.stdout.write("An admin account exists already; no password was changed.")
            return
        password = secrets.token_urlsafe(16)
        users.objects.create_superuser(username=username, email="", password=password)
        self.stdout.write(
            self.style.SUCCESS(
                f"Created admin account '{username}' with password: {password}\n"
                "It is shown only this once: note it now, then change it at "
                "/admin/password_change/."
            )
        )
