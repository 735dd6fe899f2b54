"""``openclaw doctor [model]``: can this machine serve the registry's models?"""

from django.core.management.base import BaseCommand, CommandError
from django.utils.translation import gettext as _

from routing.doctor import FAIL, run_doctor


class Command(BaseCommand):
    help = ("Check GPU visibility, engine packages, model folders, endpoint reachability "
            "and a one-token generation; each line passes or says what to do.")

    def add_arguments(self, parser):
        parser.add_argument("model", nargs="?", help="check only this model name")

    def handle(self, *args, model=None, **options):
        checks = run_doctor(model)
        for check in checks:
            self.stdout.write(check.line())
        failed = sum(check.status == FAIL for check in checks)
        if failed:
            raise CommandError(_("%(failed)d check(s) failed") % {"failed": failed})
        self.stdout.write(_("all checks passed"))
