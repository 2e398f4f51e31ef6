"""Print plugin health, the same records the API serves; exit 1 if an enabled one is down."""

import json

from django.core.management.base import CommandError

from plugins_app import selectors
from plugins_app.errors import PluginNotFound
from plugins_app.management.arguments import PortalCommand
from plugins_app.models import AVAILABLE_STATES


class Command(PortalCommand):
    help = (
        "Show plugin health (as GET /v1/plugins does). Exit code 0 when every enabled plugin "
        "is available, 1 otherwise, 2 for an unknown plugin."
    )

    def add_arguments(self, parser):
        parser.add_argument("name", nargs="?", metavar="NAME", help="Only this plugin.")
        parser.add_argument(
            "--json", action="store_true", dest="as_json", help="Print the records as JSON."
        )

    def handle(self, *args, name, as_json, **options):
        if name:
            try:
                records = [selectors.health_record(selectors.plugin_get(name=name))]
            except PluginNotFound as exc:
                raise CommandError(
                    f"{exc} (list all plugins with: pluginhealth)", returncode=2
                ) from None
        else:
            records = selectors.health_records()
        if as_json:
            self.stdout.write(json.dumps(records[0] if name else records, indent=2))
        else:
            self._table(records)
        down = [r["name"] for r in records if r["enabled"] and r["state"] not in AVAILABLE_STATES]
        if down:
            raise CommandError(
                f"{len(down)} enabled plugin(s) not available: {', '.join(down)}", returncode=1
            )

    def _table(self, records):
        if not records:
            self.stdout.write("No plugins registered (run: manage.py loadplugins)")
            return
        width = max(len("NAME"), *(len(r["name"]) for r in records))
        self.stdout.write(f"{'NAME':<{width}}  {'STATE':<11}  {'ENABLED':<7}  OK/ERR  REASON")
        for r in records:
            counts = f"{r['success_count']}/{r['error_count']}"
            enabled = "yes" if r["enabled"] else "no"
            line = f"{r['name']:<{width}}  {r['state']:<11}  {enabled:<7}  {counts:<6}  "
            self.stdout.write((line + (r["reason"] or "")).rstrip())
