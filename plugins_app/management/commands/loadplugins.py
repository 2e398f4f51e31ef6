"""Discover plugins and (re)load them in the sandbox: one line per plugin, state and reason."""

from django.core.management.base import CommandError

from plugins_app import pipeline
from plugins_app.errors import PluginNotFound, PluginRefused, TooManyVanished
from plugins_app.management.arguments import PortalCommand
from plugins_app.models import AVAILABLE_STATES, PluginState

ACTOR = "command:loadplugins"


class Command(PortalCommand):
    help = (
        "Discover plugins in PORTAL_PLUGIN_DIRS and the 'portal.plugins' entry points and "
        "(re)load them in the sandbox; with names, re-check only those plugins. Exit code 0: "
        "every plugin loaded is available; 1: some ended FAILED or UNAVAILABLE, or (celery "
        "executor) no live worker node serves a queue a load must go to; 2: misuse, or "
        "more than 2 plugins would be marked vanished at once without --prune (nothing changed)."
    )

    def add_arguments(self, parser):
        parser.add_argument("names", nargs="*", metavar="NAME", help="Plugins to reload.")
        parser.add_argument(
            "--prune",
            action="store_true",
            help="Mark every registered plugin that is no longer found UNAVAILABLE, however "
            "many (without it, more than 2 at once is refused as a likely wrong "
            "PORTAL_PLUGIN_DIRS).",
        )

    def handle(self, *args, names: list[str], prune: bool, **options):
        pipeline.reconcile_interrupted(actor=ACTOR)
        try:
            reports = pipeline.load_plugins(names=names or None, actor=ACTOR, prune=prune)
        except TooManyVanished as exc:
            raise CommandError(str(exc), returncode=2) from None
        except PluginRefused as exc:  # celery executor: no live node where a load must go
            raise CommandError(str(exc), returncode=1) from None
        except PluginNotFound as exc:
            raise CommandError(
                f"{exc}: it is neither registered nor found in PORTAL_PLUGIN_DIRS or the "
                "'portal.plugins' entry points (check the name)",
                returncode=2,
            ) from None
        if not reports:
            self.stdout.write(
                "No plugins found (put NAME.py files or NAME/ packages in a directory listed "
                "in PORTAL_PLUGIN_DIRS, or install a distribution with 'portal.plugins' "
                "entry points)"
            )
            return
        width = max(len(report.name) for report in reports)
        for report in reports:
            line = f"{report.name:<{width}}  {report.state:<11}  {report.reason}".rstrip()
            self.stdout.write(self._style(report.state)(line))
        unwell = sum(1 for report in reports if report.state not in AVAILABLE_STATES)
        if unwell:
            raise CommandError(
                f"{unwell} of {len(reports)} plugins are FAILED or UNAVAILABLE (their reasons "
                "are above: fix each, then reload it)",
                returncode=1,
            )

    def _style(self, state: str):
        if state in AVAILABLE_STATES:
            return self.style.SUCCESS
        if state == PluginState.UNAVAILABLE:
            return self.style.WARNING
        return self.style.ERROR
