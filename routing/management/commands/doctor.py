"""``openclaw doctor [model]``: can this machine serve the registry's models?"""

from django.core.management.base import BaseCommand, CommandError
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from routing.doctor import FAIL, WARN, run_doctor


class Command(BaseCommand):
    help = ("Check GPU visibility, engine packages, model folders, endpoint reachability, "
            "and each model with the call its kind answers (a one-token generation, an "
            "embedding); each line passes or says what to do. Warnings alone exit 0.")

    def add_arguments(self, parser):
        parser.add_argument("model", nargs="?", help="check only this model name")

    def handle(self, *args, model=None, **options):
        checks = run_doctor(model)
        for check in checks:
            self.stdout.write(check.line())
        failed = sum(check.status == FAIL for check in checks)
        if failed:
            raise CommandError(_("%(failed)d check(s) failed") % {"failed": failed})
        warnings = sum(check.status == WARN for check in checks)
        self.stdout.write(ngettext("all checks passed (%(count)d warning above)",
                                   "all checks passed (%(count)d warnings above)", warnings)
                          % {"count": warnings} if warnings else _("all checks passed"))
