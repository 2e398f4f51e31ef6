"""Delete the plain-text DRF tokens: anyone who could read the database (a plugin) had them.

API tokens are hashed now (django-rest-knox); the old values cannot be kept usable without
keeping them readable, and they may already have leaked, so they are dropped with their table.
Operators issue new ones with `manage.py issuetoken USERNAME` (docs/api.md).
"""

import logging

from django.db import migrations
from django.db.migrations.recorder import MigrationRecorder

logger = logging.getLogger("plugins_app.tokens")
PLAIN_TOKEN_TABLE = "authtoken_token"


def retire_plain_tokens(apps, schema_editor):
    connection = schema_editor.connection
    if PLAIN_TOKEN_TABLE not in connection.introspection.table_names():
        return
    table = schema_editor.quote_name(PLAIN_TOKEN_TABLE)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT COUNT(*) FROM {table}")
        (count,) = cursor.fetchone()
    schema_editor.execute(f"DROP TABLE {table}")
    # So a later reinstall of rest_framework.authtoken would create its table again.
    MigrationRecorder(connection).migration_qs.filter(app="authtoken").delete()
    logger.warning(
        "Deleted %d plain-text API token(s): tokens are stored hashed now; issue new ones with "
        "manage.py issuetoken USERNAME",
        count,
    )


class Migration(migrations.Migration):
    dependencies = [("plugins_app", "0003_pluginrun_warnings")]

    operations = [migrations.RunPython(retire_plain_tokens, migrations.RunPython.noop)]
