"""``openclaw models list``: the registry at a glance."""

import json

from django.core.management.base import BaseCommand
from django.utils.translation import gettext as _

from routing.models import ModelEndpoint


class Command(BaseCommand):
    help = "List the model registry."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        listing = sub.add_parser("list", help="one line per model instance")
        listing.add_argument("--json", action="store_true", help="JSON instead of a table")

    def handle(self, *args, action, **options):
        rows = [
            {"name": e.name, "engine": e.engine, "location": e.location,
             "enabled": e.enabled, "weight": e.weight, "health": e.health,
             "context_window": e.context_window, "api_key": e.masked_api_key}
            for e in ModelEndpoint.objects.all()
        ]
        if options["json"]:
            self.stdout.write(json.dumps(rows, indent=2))
            return
        if not rows:
            self.stdout.write(_("no models registered (openclaw config apply FILE adds some)"))
            return
        columns = ["name", "engine", "location", "enabled", "weight", "health"]
        widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in columns}
        self.stdout.write("  ".join(c.upper().ljust(widths[c]) for c in columns).rstrip())
        for row in rows:
            self.stdout.write("  ".join(str(row[c]).ljust(widths[c]) for c in columns).rstrip())
