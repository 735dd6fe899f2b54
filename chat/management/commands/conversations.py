"""``openclaw conversations export|import``: a conversation as the seed's session JSON.

``export ID [-o FILE]`` writes it (standard output by default); ``import FILE --user U
[--new-id]`` stores one (``-`` reads standard input) and prints the new id.
"""

from __future__ import annotations

import json
import sys

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.utils.translation import gettext as _

from chat.conversations import ConversationError, export_session, import_session
from chat.models import Conversation


class Command(BaseCommand):
    help = "Export and import conversations as session JSON."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        export = sub.add_parser("export", help="write a conversation as session JSON")
        export.add_argument("conversation_id")
        export.add_argument("-o", "--output", help="file to write (default: standard output)")
        imported = sub.add_parser("import", help="store a session JSON file as a conversation")
        imported.add_argument("file", help="the session JSON file, or - for standard input")
        imported.add_argument("--user", required=True,
                              help="whose conversation it becomes (a username)")
        imported.add_argument("--new-id", action="store_true",
                              help="give it a new id instead of its session_id")

    def handle(self, *args, action, **options):
        getattr(self, f"_{action}")(**options)

    def _export(self, conversation_id, output, **_options):
        try:
            conversation = Conversation.objects.get(pk=conversation_id)
        except (Conversation.DoesNotExist, ValidationError, ValueError):
            raise CommandError(_("no conversation %(id)r") % {"id": conversation_id}) from None
        text = json.dumps(export_session(conversation), ensure_ascii=False, indent=2)
        if output:
            with open(output, "w", encoding="utf-8") as handle:
                handle.write(text + "\n")
            self.stderr.write(_("wrote %(file)s") % {"file": output})
        else:
            self.stdout.write(text)

    def _import(self, file, user, new_id, **_options):
        try:
            raw = sys.stdin.read() if file == "-" else open(file, encoding="utf-8").read()
            data = json.loads(raw)
        except OSError as exc:
            raise CommandError(_("cannot read %(file)s: %(error)s")
                               % {"file": file, "error": exc.strerror}) from None
        except ValueError as exc:
            raise CommandError(_("%(file)s is not valid JSON: %(error)s")
                               % {"file": file, "error": exc}) from None
        try:
            conversation = import_session(data, user, new_id=new_id)
        except ConversationError as exc:
            raise CommandError(exc.message) from None
        self.stderr.write(_("imported %(count)d messages")
                          % {"count": conversation.messages.count()})
        self.stdout.write(str(conversation.pk))
