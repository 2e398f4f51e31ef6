"""Run the scheduler (and the webhook deliverer) in the foreground, for a fleet whose web
processes run with PORTAL_SCHEDULER=off; several may run at once, each occurrence fires once."""

from __future__ import annotations

import math

from django.core.management.base import CommandError

from plugins_app.background import run_scheduler_until
from plugins_app.management.arguments import PortalCommand
from plugins_app.management.stop_signals import StopSignals

MAX_TICK_S = 3600.0
MIN_TICK_S = 0.1


class Command(PortalCommand):
    help = (
        "Fire due schedules every TICK seconds and deliver webhooks, until SIGTERM or Ctrl-C. "
        "Runs it queues execute in this process (thread executor) like any submitted run."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--tick",
            type=float,
            default=None,
            metavar="SECONDS",
            help="How often to look for due schedules (default PORTAL_SCHEDULER_TICK_S, 1 s).",
        )

    def handle(self, *args, tick, **options):
        if tick is not None and not (math.isfinite(tick) and MIN_TICK_S <= tick <= MAX_TICK_S):
            raise CommandError(
                f"--tick must be a number of seconds from {MIN_TICK_S:g} to {MAX_TICK_S:g}, "
                f"got {tick:g}",
                returncode=2,
            )
        self.stdout.write(
            "Scheduler running: firing due schedules and delivering webhooks until stopped "
            "(SIGTERM or Ctrl-C).",
        )
        self.stdout.flush()
        with StopSignals() as stop:
            run_scheduler_until(stop, tick_s=tick)
        self.stdout.write("Scheduler stopped; runs it started have finished.")
