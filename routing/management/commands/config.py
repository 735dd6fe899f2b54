"""``openclaw config apply FILE`` / ``openclaw config export``."""

import sys
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from django.utils.translation import gettext as _

from routing.config import ConfigError, apply_config, export_config


class Command(BaseCommand):
    help = "Apply the model registry from a YAML file, or export it as YAML (no secrets)."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        apply = sub.add_parser("apply", help="create or update models from FILE")
        apply.add_argument("file", help="YAML file, or - for standard input")
        apply.add_argument("--dry-run", action="store_true",
                           help="check and report, change nothing")
        export = sub.add_parser("export", help="print the registry as YAML")
        export.add_argument("--output", "-o", help="write to this file instead")

    def handle(self, *args, action, **options):
        if action == "apply":
            self._apply(options["file"], options["dry_run"])
        else:
            self._export(options.get("output"))

    def _apply(self, path: str, dry_run: bool) -> None:
        if path == "-":
            text, source = sys.stdin.read(), "<stdin>"
        else:
            try:
                text, source = Path(path).read_text(encoding="utf-8"), path
            except OSError as exc:
                raise CommandError(_("cannot read %(file)s: %(error)s")
                                   % {"file": path, "error": exc.strerror}) from None
        try:
            report = apply_config(text, source=source, dry_run=dry_run)
        except ConfigError as exc:
            raise CommandError(_("%(file)s refused, nothing changed:\n%(problems)s")
                               % {"file": source, "problems": exc}) from None
        for warning in report.warnings:
            self.stderr.write(self.style.WARNING(_("warning: %(warning)s") % {"warning": warning}))
        for label, names in (("created", report.created), ("updated", report.updated),
                             ("unchanged", report.unchanged)):
            for name in names:
                self.stdout.write(f"{label:<9} {name}")
        counts = {"created": len(report.created), "updated": len(report.updated),
                  "unchanged": len(report.unchanged)}
        self.stdout.write((_("%(created)d created, %(updated)d updated, %(unchanged)d unchanged "
                             "(would be applied)") if dry_run else
                           _("%(created)d created, %(updated)d updated, %(unchanged)d "
                             "unchanged")) % counts)

    def _export(self, output: str | None) -> None:
        text = export_config()
        if output:
            Path(output).write_text(text, encoding="utf-8")
            self.stdout.write(_("written %(file)s") % {"file": output})
        else:
            self.stdout.write(text, ending="")
