"""The project's own app: at start, the local files are made owner-only (portal/local_files.py)."""

from __future__ import annotations

from django.apps import AppConfig
from django.db.backends.signals import connection_created


class PortalConfig(AppConfig):
    name = "portal"
    verbose_name = "Portal"

    def ready(self) -> None:
        from django.conf import settings

        from portal import local_files

        database = settings.DATABASES["default"]
        sqlite = database["ENGINE"].endswith("sqlite3")
        local_files.secure_local_files(
            var_dir=settings.VAR_DIR,
            key_file=settings.SECRET_KEY_FILE,
            sqlite_database=str(database["NAME"]) if sqlite else None,
        )
        settings.STATIC_ROOT.mkdir(exist_ok=True)  # whitenoise warns on every request without it
        connection_created.connect(_tighten_sqlite_files, dispatch_uid="portal-owner-only-sqlite")


def _tighten_sqlite_files(sender, connection, **kwargs) -> None:
    """A database SQLite created itself (the test database, a recreated file) is tightened."""
    if connection.vendor != "sqlite":
        return
    from portal import local_files

    # Not logged: a file SQLite just made with the umask was never readable for long.
    local_files.tighten([], local_files.sqlite_files(str(connection.settings_dict["NAME"])))
