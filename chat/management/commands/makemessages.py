"""``openclaw makemessages``: Django's command with this project's defaults.

- The folders that are not ours are skipped without ``--ignore`` (virtual
  environments, the tests, ``node_modules``).
- The studio's scripts call ``gettext`` through a short alias, ``t("…")``
  (chat/static/studio/studio.js), so ``t`` is a keyword of the ``djangojs`` domain.
- Locations name the file only: line numbers would change the catalogue on every
  edit of a source file.
- No fuzzy matching: a new string starts untranslated (and is caught by
  tests/test_catalogues.py) instead of borrowing a neighbour's translation.

``locale/README.md`` has the whole workflow.
"""

from __future__ import annotations

from django.core.management.commands import makemessages

IGNORED = [".venv", "bench/.venv-litellm", "tests", "node_modules", "build", "dist",
           "*.egg-info", "htmlcov"]
JS_KEYWORDS = ["--keyword=t", "--keyword=tn:1,2"]


class Command(makemessages.Command):
    msgmerge_options = [*makemessages.Command.msgmerge_options, "--no-fuzzy-matching"]

    def add_arguments(self, parser):
        super().add_arguments(parser)
        parser.set_defaults(add_location="file", no_obsolete=True)

    def handle(self, *args, **options):
        options["ignore_patterns"] = list(options.get("ignore_patterns") or []) + IGNORED
        if options.get("domain") == "djangojs":
            self.xgettext_options = self.xgettext_options[:] + JS_KEYWORDS
        return super().handle(*args, **options)
