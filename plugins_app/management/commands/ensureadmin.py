"""Create the first admin account, or give one a new password, generated and printed once."""

import secrets

from axes.models import AccessAttempt
from axes.utils import reset as reset_login_failures
from django.contrib.auth import get_user_model
from django.core.management.base import CommandError
from django.db import transaction

from plugins_app.management.arguments import PortalCommand

SHOWN_ONCE = "It is shown only this once: note it now, then change it at /admin/password_change/."


class Command(PortalCommand):
    help = (
        "Create an admin account with a generated password if no superuser exists yet; with "
        "--reset-password, give the account a new generated password (a lost one)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--username", default="admin", help="Account name (default: admin).")
        parser.add_argument(
            "--reset-password",
            action="store_true",
            help="Set a new generated password on the account and print it (the old one stops "
            "working, and a failed-login lockout of the account is lifted).",
        )

    def handle(self, *args, username: str, reset_password: bool, **options):
        users = get_user_model()
        admins = users.objects.filter(is_superuser=True)
        account = users.objects.filter(**{users.USERNAME_FIELD: username}).first()
        if reset_password and account is not None:
            self._reset(account, username)
        elif not admins.exists():
            password = secrets.token_urlsafe(16)
            users.objects.create_superuser(username=username, email="", password=password)
            self.stdout.write(
                self.style.SUCCESS(
                    f"Created admin account '{username}' with password: {password}\n{SHOWN_ONCE}"
                )
            )
        elif reset_password:
            names = ", ".join(sorted(admins.values_list(users.USERNAME_FIELD, flat=True)))
            raise CommandError(
                f"No account '{username}' (admin accounts: {names}); give one of them with "
                f"--username, or create '{username}' in the admin",
                returncode=2,
            )
        else:
            self.stdout.write(
                "An admin account exists already; no password was changed (a lost password? "
                "print a new one with: manage.py ensureadmin --reset-password)."
            )

    @transaction.atomic
    def _reset(self, account, username: str) -> None:
        password = secrets.token_urlsafe(16)
        account.set_password(password)
        account.save(update_fields=["password"])
        message = f"New password for admin account '{username}': {password}\n{SHOWN_ONCE}"
        # Whoever lost the password has often been guessing: a lockout would refuse the new one.
        if AccessAttempt.objects.filter(username=username).exists():
            reset_login_failures(username=username)
            message += "\nIts failed logins were cleared, so no lockout refuses the new password."
        self.stdout.write(self.style.SUCCESS(message))
