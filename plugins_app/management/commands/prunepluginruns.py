"""Delete old finished runs in batches; plugin counters and history events stay."""

from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError

from plugins_app import services


class Command(BaseCommand):
    help = (
        "Delete finished plugin runs older than DAYS, in batches. Counters on the plugins are "
        "kept; queued and running runs are never deleted."
    )

    def add_arguments(self, parser):
        parser.add_argument("--older-than", type=float, required=True, metavar="DAYS", dest="days")
        parser.add_argument("--batch-size", type=int, default=1000, metavar="N")

    def handle(self, *args, days, batch_size, **options):
        if days < 0:
            raise CommandError(f"--older-than must be 0 or more days, got {days:g}", returncode=2)
        if batch_size < 1:
            raise CommandError(f"--batch-size must be 1 or more, got {batch_size}", returncode=2)
        deleted = services.runs_prune(older_than=timedelta(days=days), batch_size=batch_size)
        self.stdout.write(
            f"Deleted {deleted} finished run(s) older than {days:g} day(s); "
            "plugin counters are unchanged."
        )
