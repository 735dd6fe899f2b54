"""Every message that reaches a user as an error — an engine's, the gateway's, an
API key's refusal, a /v1 or /v1/messages error body, a form's ValidationError — is
marked for translation, so a request made in 中文 is answered in 中文.

The guard reads the apps' source (no import): at each call of a constructor or
helper below, the argument that carries the message must not be a plain string
literal or an f-string (nor ``"…" % x``, ``"…".format(…)`` or ``"…" + x``) with words
in it. A ``gettext`` call (``_``, ``ngettext``, ``pgettext``, ``gettext_lazy``), a
formatted one (``_("…") % {…}``), an attribute or another call (``exc.message``,
``str(exc)``, a helper's result) passes: those are translated where they are built,
or a backend's own text passed through. A local variable is judged by what its
function assigns to it. Text with no letters outside its placeholders
(``f"{name}: {exc}"``, ``"%(path)s: %(message)s"``) has nothing to translate.

Management commands are scanned like the rest: their ``CommandError`` messages
are what the ``openclaw`` command prints. Their ``--help`` texts are not checked
here: ``makemessages`` and ``test_catalogues`` cover the ones that are marked,
and argparse help is not an error message.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ["core", "inference", "routing", "plugins", "chat", "jobs", "openclaw_site"]

# callee name -> (position of the message argument, its keyword name)
MESSAGE_ARGUMENT: dict[str, tuple[int, str]] = {
    # inference.errors: the engine error family
    **{name: (0, "message") for name in (
        "EngineError", "EngineTimeout", "RateLimited", "ServerError", "ConnectionFailed",
        "BadRequest", "Unsupported", "ContextTooLong", "AuthFailed", "EngineUnavailable")},
    "GatewayError": (2, "message"),  # routing.attempts (status, code, message)
    "KeyRefused": (2, "message"),  # routing.keys (status, code, message)
    "ConversationError": (1, "message"),  # chat.conversations (code, message)
    "RunRefused": (1, "message"),  # chat.workflows.runs (code, message)
    "WorkflowError": (1, "message"),  # chat.workflows.compiler (code, message)
    "FrameError": (1, "message"),  # chat.ws_frames (code, message): the studio's socket
    "PluginBlocked": (1, "message"),  # plugins.base (plugin, message)
    "InvalidBody": (0, "message"),  # chat.v1.validation
    "PairRefused": (0, "message"),  # chat.curated
    "BatchRefused": (2, "message"),  # jobs.batch_files (status, code, message)
    "DatasetRefused": (0, "message"),  # jobs.datasets
    "AnnotationRefused": (0, "message"),  # jobs.annotation
    "FineTuneRefused": (0, "message"),  # jobs.finetune
    "ValidationError": (0, "message"),  # Django's (forms, models, admin)
    "CommandError": (0, ""),  # Django's: what a management command prints
    # the openclaw command's own lines: a problem it refuses to start with, what it says
    "StartupError": (0, "message"),  # openclaw_site.children (gettext_noop + params)
    "say": (0, "message"),  # openclaw_site.cli, .supervisor: a line on stdout
    "fail": (0, "message"),  # openclaw_site.cli: a line on stderr, then exit 1
    "set_error": (0, "message"),  # jobs.models.Job: shown in the studio and the API
    # the helpers that write /v1 (OpenAI) and /v1/messages (Anthropic) error bodies
    "error_response": (1, "message"),  # chat.v1.wire, chat.v1.messages_wire
    "error_body": (1, "message"),  # chat.v1.wire, chat.v1.messages_wire
    "error_event": (1, "message"),  # chat.graph.events: a turn's error, on every surface
    "writer.error": (1, "message"),  # chat.v1.wire's SSE writer: an error event mid-stream
}
# Module-private helpers with a message argument: (module, name) -> as above.
LOCAL_HELPERS: dict[tuple[str, str], tuple[int, str]] = {
    ("chat/v1/conversations.py", "_error"): (1, "message"),
    ("chat/v1/workflows.py", "_error"): (1, "message"),
    ("chat/consumers.py", "_error"): (2, "message"),
    ("chat/consumers.py", "_refuse"): (2, "message"),
    ("jobs/annotation_api.py", "_error"): (0, "message"),
    ("jobs/studio.py", "_refused"): (1, "message"),
    ("jobs/batch_files.py", "_problem"): (1, "message"),
}

# Messages that stay English on purpose: (path, a piece of the call's source) -> why.
# None today: a backend's own text is passed through as a placeholder of a marked
# message (``_("%(model)s: HTTP %(status)d: %(error)s")``), never as the message.
ALLOWED: dict[tuple[str, str], str] = {}

PLACEHOLDER = re.compile(r"%\(\w+\)[-#0 +]*\d*(?:\.\d+)?[a-zA-Z]|%[-#0 +]*\d*(?:\.\d+)?[sdrfg]"
                         r"|\{\w*(?:![rsa])?(?::[^{}]*)?\}")


def callee(call: ast.Call) -> str | None:
    if isinstance(call.func, ast.Name):
        return call.func.id
    if isinstance(call.func, ast.Attribute):
        owner = call.func.value
        owner_name = (owner.id if isinstance(owner, ast.Name)
                      else owner.attr if isinstance(owner, ast.Attribute) else "")
        if call.func.attr == "error" and owner_name.endswith("writer"):
            return "writer.error"
        return call.func.attr
    return None


def message_argument(call: ast.Call, position: int, keyword: str) -> ast.expr | None:
    for kw in call.keywords:
        if keyword and kw.arg == keyword:
            return kw.value
    if len(call.args) > position and not any(isinstance(a, ast.Starred)
                                             for a in call.args[:position + 1]):
        return call.args[position]
    return None


def has_words(text: str) -> bool:
    """Letters outside the placeholders (``%(model)s``, ``{}``)."""
    return any(ch.isalpha() for ch in PLACEHOLDER.sub("", text))


def plain(node: ast.expr, assigned: dict[str, list[ast.expr]], seen: frozenset = frozenset()
          ) -> bool:
    """Whether ``node`` is text with words that was not passed through gettext;
    a local variable is judged by what the function assigns to it."""
    def again(child: ast.expr) -> bool:
        return plain(child, assigned, seen)

    if isinstance(node, ast.Constant):
        return isinstance(node.value, str) and has_words(node.value)
    if isinstance(node, ast.JoinedStr):
        return any(isinstance(part, ast.Constant) and has_words(part.value)
                   for part in node.values)
    if isinstance(node, ast.Name):
        if node.id in seen:
            return False
        return any(plain(value, assigned, seen | {node.id})
                   for value in assigned.get(node.id, []))
    if isinstance(node, ast.BinOp):
        if isinstance(node.op, ast.Mod):  # "…" % x: plain unless the left is gettext's
            return again(node.left)
        if isinstance(node.op, ast.Add):
            return again(node.left) or again(node.right)
    if isinstance(node, ast.Call):
        if isinstance(node.func, ast.Attribute) and node.func.attr == "format":
            return again(node.func.value)
        return False  # gettext, str(exc), a helper: built (and translated) elsewhere
    if isinstance(node, ast.IfExp):
        return again(node.body) or again(node.orelse)
    if isinstance(node, ast.BoolOp):
        return any(again(value) for value in node.values)
    if isinstance(node, ast.Dict):  # ValidationError({field: message})
        return any(again(value) for value in node.values if value is not None)
    if isinstance(node, (ast.List, ast.Tuple)):
        return any(again(item) for item in node.elts)
    return False


def sources() -> list[Path]:
    return sorted(path for package in PACKAGES for path in (REPO / package).rglob("*.py")
                  if "migrations" not in path.parts)


def scopes(tree: ast.Module) -> list[tuple[ast.AST, dict[str, list[ast.expr]]]]:
    """The module and each function, with what each assigns to its plain names."""
    found = []
    for scope in [tree, *(n for n in ast.walk(tree)
                          if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef))]:
        assigned: dict[str, list[ast.expr]] = {}
        for node in own_nodes(scope):
            if isinstance(node, ast.Assign):
                for target in node.targets:
                    if isinstance(target, ast.Name):
                        assigned.setdefault(target.id, []).append(node.value)
            elif isinstance(node, ast.AnnAssign | ast.NamedExpr) and node.value is not None \
                    and isinstance(node.target, ast.Name):
                assigned.setdefault(node.target.id, []).append(node.value)
        found.append((scope, assigned))
    return found


def own_nodes(scope: ast.AST):
    """The nodes of ``scope`` outside the functions nested in it."""
    stack = list(ast.iter_child_nodes(scope))
    while stack:
        node = stack.pop()
        yield node
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            stack.extend(ast.iter_child_nodes(node))


def unmarked(path: Path, root: Path = REPO) -> list[str]:
    text = path.read_text()
    relative = str(path.relative_to(root))
    found = []
    for scope, assigned in scopes(ast.parse(text, filename=relative)):
        for node in own_nodes(scope):
            if not isinstance(node, ast.Call):
                continue
            name = callee(node)
            spec = LOCAL_HELPERS.get((relative, name or "")) or MESSAGE_ARGUMENT.get(name or "")
            if spec is None:
                continue
            message = message_argument(node, *spec)
            if message is None or not plain(message, assigned):
                continue
            segment = ast.get_source_segment(text, node) or ""
            if any(where == relative and piece in segment for where, piece in ALLOWED):
                continue
            found.append(f"{relative}:{node.lineno}: {name}({ast.unparse(message)[:90]})")
    return sorted(found, key=lambda line: int(line.split(":")[1]))


def test_the_guard_sees_a_plain_message_and_passes_a_marked_one(tmp_path):
    # given: one plain message of each shape, then the forms that pass
    module = tmp_path / "sample.py"
    module.write_text(
        "raise BadRequest(f'{name}: an embedding model cannot chat')\n"
        "raise GatewayError(404, 'model_not_found', 'no such model')\n"
        "error_response(400, 'bad %s' % x, 'code')\n"
        "raise ValidationError({'field': 'must be set'})\n"
        "def f(ok):\n"
        "    text = 'the worker' if ok else _('no worker')\n"
        "    raise EngineTimeout(text, phase='total')\n"
        "yield self.writer.error(400, 'blocked by ' + name, 'content_blocked')\n"
        "raise BadRequest(_('%(model)s: cannot chat') % {'model': name})\n"
        "raise EngineError(str(exc))\n"
        "raise EngineError(f'{name}: {exc}')\n"
        "raise ValidationError('%(path)s: %(message)s')\n"
        "error_response(502, exc.message, exc.code)\n"
        "def g():\n"
        "    text = _('%(model)s: timed out') % {'model': name}\n"
        "    raise EngineTimeout(text, phase='total')\n"
        "logger.error('the worker failed')\n")

    # when
    found = unmarked(module, root=tmp_path)

    # then: the plain ones, and only those
    assert [int(line.split(":")[1]) for line in found] == [1, 2, 3, 4, 7, 8]


def test_every_user_visible_error_message_is_marked_for_translation():
    modules = sources()
    texts = {str(path.relative_to(REPO)): path.read_text() for path in modules}

    found = [line for path in modules for line in unmarked(path)]
    stale = [key for key in ALLOWED if key[1] not in texts.get(key[0], "")]
    gone = [f"{path}: {name}" for path, name in LOCAL_HELPERS
            if f"def {name}(" not in texts.get(path, "")]

    assert len(modules) > 100  # the scan found the apps
    assert found == [], ("plain user-visible messages (mark them with gettext and named "
                         "%-placeholders):\n" + "\n".join(found))
    assert stale == []  # an allowlist entry whose message is gone
    assert gone == []  # a helper the guard watches that moved or was renamed
