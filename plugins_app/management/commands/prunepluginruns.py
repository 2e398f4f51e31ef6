"""Delete old finished runs in batches; plugin counters and history events stay."""

import math
from datetime import timedelta

from django.core.management.base import CommandError

from plugins_app import services
from plugins_app.management.arguments import PortalCommand

MAX_DAYS = 36500  # a hundred years
MAX_BATCH_SIZE = 10_000  # stays under SQLite's limit on query parameters


class Command(PortalCommand):
    help = (
        "Delete finished plugin runs older than DAYS, in batches. Counters on the plugins are "
        "kept; queued and running runs are never deleted."
    )

    def add_arguments(self, parser):
        parser.add_argument("--older-than", type=float, required=True, metavar="DAYS", dest="days")
        parser.add_argument("--batch-size", type=int, default=1000, metavar="N")

    def handle(self, *args, days, batch_size, **options):
        # nan/inf/huge ages would break timedelta; a huge batch overflows the database's integers.
        if not (math.isfinite(days) and 0 <= days <= MAX_DAYS):
            raise CommandError(
                f"--older-than must be a number of days from 0 to {MAX_DAYS}, got {days:g}",
                returncode=2,
            )
        if not 1 <= batch_size <= MAX_BATCH_SIZE:
            raise CommandError(
                f"--batch-size must be from 1 to {MAX_BATCH_SIZE}, got {batch_size}", returncode=2
            )
        deleted = services.runs_prune(older_than=timedelta(days=days), batch_size=batch_size)
        self.stdout.write(
            f"Deleted {deleted} finished run(s) older than {days:g} day(s); "
            "plugin counters are unchanged."
        )
