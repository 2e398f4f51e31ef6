"""Discover plugins and (re)load them in the sandbox: one line per plugin, state and reason."""

from django.core.management.base import CommandError

from plugins_app import pipeline
from plugins_app.errors import PluginNotFound
from plugins_app.management.arguments import PortalCommand
from plugins_app.models import AVAILABLE_STATES, PluginState

ACTOR = "command:loadplugins"


class Command(PortalCommand):
    help = (
        "Discover plugins in PORTAL_PLUGIN_DIRS and the 'portal.plugins' entry points and "
        "(re)load them in the sandbox; with names, re-check only those plugins."
    )

    def add_arguments(self, parser):
        parser.add_argument("names", nargs="*", metavar="NAME", help="Plugins to reload.")

    def handle(self, *args, names: list[str], **options):
        pipeline.reconcile_interrupted(actor=ACTOR)
        try:
            reports = pipeline.load_plugins(names=names or None, actor=ACTOR)
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

    def _style(self, state: str):
        if state in AVAILABLE_STATES:
            return self.style.SUCCESS
        if state == PluginState.UNAVAILABLE:
            return self.style.WARNING
        return self.style.ERROR
