"""The built-in tools: the current time, a safe calculator, an allowlisted HTTP request
and a search of the user's long-term memories. Imported by ``ChatConfig.ready()``, which
registers them; ``chat.tools.sync`` makes their ``Tool`` rows.

Their descriptions are marked with ``gettext_noop``: the rows keep them in each language
(the model is told the run's), so the text here is the English one.
"""

from __future__ import annotations

import ast
import json
import math
import operator
from collections.abc import Callable
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
from asgiref.sync import sync_to_async
from django.conf import settings
from django.utils.translation import gettext as _
from django.utils.translation import gettext_noop
from yarl import URL

from .. import memory
from ..workflows.nodes import HTTP_MAX_BYTES, HTTP_MAX_TIMEOUT_S, tool_url
from .registry import ToolContext, ToolFailed, register_tool

# --- current time --------------------------------------------------------------------


@register_tool(
    "current_time",
    description=gettext_noop(
        "The current date and time. Give “timezone” (an IANA name such as Europe/Paris) "
        "for the local time there; without it, the server's time zone."),
    parameters={"type": "object", "properties": {"timezone": {
        "type": "string", "description": "An IANA time zone name, e.g. Asia/Shanghai."}},
        "additionalProperties": False},
    timeout_s=5.0)
async def current_time(arguments: dict[str, Any], context: ToolContext) -> dict[str, Any]:
    """The time now in the zone asked for (the server's ``TIME_ZONE`` by default)."""
    name = arguments.get("timezone") or settings.TIME_ZONE
    try:
        zone = ZoneInfo(name)
    except (LookupError, ValueError, OSError) as exc:  # not found, or not a zone's key
        raise ToolFailed(_("“%(zone)s” is not a time zone: give an IANA name such as "
                           "Europe/Paris.") % {"zone": name}) from exc
    now = datetime.now(zone)
    return {"datetime": now.isoformat(timespec="seconds"), "timezone": name,
            "weekday": now.strftime("%A"), "utc_offset": now.strftime("%z")}


# --- calculator ----------------------------------------------------------------------

MAX_EXPRESSION_CHARS = 500
MAX_INT_BITS = 10_000  # ~3,000 digits: a result bigger than this is refused, not computed
MAX_ROUND_DIGITS = 100

Number = int | float

BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
    ast.Div: operator.truediv, ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod,
    ast.Pow: operator.pow}
UNARY: dict[type[ast.unaryop], Callable[[Any], Any]] = {
    ast.UAdd: operator.pos, ast.USub: operator.neg}
CONSTANTS: dict[str, float] = {"pi": math.pi, "e": math.e, "tau": math.tau}


def _round(value: Number, digits: int = 0) -> Number:
    # round(5, -10**9) would compute 10**(10**9): the digits are bounded.
    if not isinstance(digits, int) or abs(digits) > MAX_ROUND_DIGITS:
        raise ValueError(_("round's digits must be an integer between -%(max)d and %(max)d.")
                         % {"max": MAX_ROUND_DIGITS})
    return round(value, digits)


FUNCTIONS: dict[str, Callable[..., Number]] = {
    "sqrt": math.sqrt, "exp": math.exp, "log": math.log, "log10": math.log10,
    "log2": math.log2, "sin": math.sin, "cos": math.cos, "tan": math.tan,
    "asin": math.asin, "acos": math.acos, "atan": math.atan, "floor": math.floor,
    "ceil": math.ceil, "abs": abs, "round": _round, "min": min, "max": max}


def _refuse(what: str) -> ToolFailed:
    return ToolFailed(_("Not allowed in an expression: %(what)s. Use numbers, + - * / // "
                        "%% **, parentheses, %(names)s.")
                      % {"what": what, "names": ", ".join([*FUNCTIONS, *CONSTANTS])})


def _checked(value: Any) -> Number:
    """``value`` when it is a number small enough to go on with."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _refuse(type(value).__name__)
    if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
        raise ToolFailed(_("The result is too large (over %(bits)d bits).")
                         % {"bits": MAX_INT_BITS})
    if isinstance(value, float) and not math.isfinite(value):
        raise ToolFailed(_("The result is not a finite number."))
    return value


def _power(base: Number, exponent: Number) -> Number:
    # Refused before it is computed: 9**9**9 would take minutes and gigabytes.
    if isinstance(base, int) and isinstance(exponent, int) and exponent > 0 \
            and (abs(base).bit_length() - 1) * exponent > MAX_INT_BITS:
        raise ToolFailed(_("The result is too large (over %(bits)d bits).")
                         % {"bits": MAX_INT_BITS})
    return base ** exponent


def _evaluate(node: ast.AST) -> Number:
    if isinstance(node, ast.Expression):
        return _evaluate(node.body)
    if isinstance(node, ast.Constant):
        return _checked(node.value)
    if isinstance(node, ast.BinOp) and type(node.op) in BINARY:
        left, right = _evaluate(node.left), _evaluate(node.right)
        if isinstance(node.op, ast.Pow):
            return _checked(_power(left, right))
        return _checked(BINARY[type(node.op)](left, right))
    if isinstance(node, ast.UnaryOp) and type(node.op) in UNARY:
        return _checked(UNARY[type(node.op)](_evaluate(node.operand)))
    if isinstance(node, ast.Name):
        if node.id not in CONSTANTS:
            raise _refuse(_("the name “%(name)s”") % {"name": node.id})
        return CONSTANTS[node.id]
    if isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS:
            raise _refuse(_("calling “%(call)s”") % {"call": ast.unparse(node.func)})
        if node.keywords:
            raise _refuse(_("keyword arguments"))
        return _checked(FUNCTIONS[node.func.id](*(_evaluate(arg) for arg in node.args)))
    if isinstance(node, ast.Attribute):
        raise _refuse(_("attribute access"))
    raise _refuse(type(node).__name__)


def calculate(expression: str) -> Number:
    """The value of an arithmetic ``expression``; ``ToolFailed`` for anything else."""
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise ToolFailed(_("The expression is longer than %(max)d characters.")
                         % {"max": MAX_EXPRESSION_CHARS})
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        raise ToolFailed(_("Not an arithmetic expression: %(error)s")
                         % {"error": getattr(exc, "msg", None) or exc.__class__.__name__}
                         ) from exc
    try:
        return _evaluate(tree)
    except (ArithmeticError, ValueError, TypeError, RecursionError) as exc:
        raise ToolFailed(_("Cannot compute it: %(error)s")
                         % {"error": str(exc) or exc.__class__.__name__}) from exc


@register_tool(
    "calculator",
    description=gettext_noop(
        "Evaluates an arithmetic expression exactly as written and gives its value: "
        "numbers, + - * / // % ** and parentheses, the functions sqrt, exp, log, log10, "
        "log2, sin, cos, tan, asin, acos, atan, floor, ceil, abs, round, min, max and the "
        "constants pi, e, tau."),
    parameters={"type": "object", "properties": {"expression": {
        "type": "string", "minLength": 1, "maxLength": MAX_EXPRESSION_CHARS,
        "description": "e.g. (2 + 3) * sqrt(16) / 7"}},
        "required": ["expression"], "additionalProperties": False},
    timeout_s=5.0)
async def calculator(arguments: dict[str, Any], context: ToolContext) -> Number:
    """The expression's value (bounded work: no call can hang or fill memory)."""
    return calculate(arguments["expression"])


# --- HTTP request --------------------------------------------------------------------


async def fetch(url: URL, method: str, body: dict[str, Any] | None) -> dict[str, Any]:
    """The workflow ``http_tool``'s call: no redirects followed, the body read up to
    ``HTTP_MAX_BYTES`` and parsed when it is JSON."""
    timeout = aiohttp.ClientTimeout(total=HTTP_MAX_TIMEOUT_S)  # the row's timeout is shorter
    async with aiohttp.ClientSession(timeout=timeout) as session:
        kwargs: dict[str, Any] = {"json": body} if method == "POST" else {}
        async with session.request(method, url, allow_redirects=False, **kwargs) as response:
            text = (await response.content.read(HTTP_MAX_BYTES)).decode("utf-8", "replace")
            found: Any = text
            if response.content_type == "application/json":
                try:
                    found = json.loads(text)
                except ValueError:
                    pass  # a cut or broken JSON body is given as text
            return {"status": response.status, "body": found}


@register_tool(
    "http_request",
    description=gettext_noop(
        "Sends an HTTP GET, or a POST with a JSON body, to a URL on a host the operator "
        "allowed, and gives back the response's status and body (JSON when it is JSON)."),
    parameters={"type": "object", "properties": {
        "url": {"type": "string", "description": "An http(s) URL on an allowed host."},
        "method": {"type": "string", "enum": ["GET", "POST"], "default": "GET"},
        "body": {"type": "object", "description": "POST only: sent as JSON."}},
        "required": ["url"], "additionalProperties": False},
    timeout_s=15.0)
async def http_request(arguments: dict[str, Any], context: ToolContext) -> dict[str, Any]:
    """Call an allowlisted URL (``OPENCLAW_WORKFLOW_HTTP_HOSTS``, as workflows' HTTP
    tools do); a host that is not allowed is refused before anything is sent."""
    method, body = arguments.get("method", "GET"), arguments.get("body")
    target = tool_url(arguments["url"])
    if target is None:
        raise ToolFailed(_("The URL must be http(s) on a host the operator allowed "
                           "(OPENCLAW_WORKFLOW_HTTP_HOSTS: %(hosts)s).")
                         % {"hosts": ", ".join(settings.OPENCLAW_WORKFLOW_HTTP_HOSTS)
                            or _("none")})
    if method == "GET" and body is not None:
        raise ToolFailed(_("A GET request has no body: use POST to send one."))
    try:
        return await fetch(target, method, body)
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise ToolFailed(_("The request failed: %(error)s")
                         % {"error": str(exc) or exc.__class__.__name__}) from exc


# --- memory search -------------------------------------------------------------------

MAX_MEMORIES = 20


@register_tool(
    "memory_search",
    description=gettext_noop(
        "Searches the user's long-term memories (what they said in earlier "
        "conversations) for those most like “query”; gives each one's text and "
        "similarity score."),
    parameters={"type": "object", "properties": {
        "query": {"type": "string", "minLength": 1, "description": "What to look for."},
        "k": {"type": "integer", "minimum": 1, "maximum": MAX_MEMORIES, "default": 5,
              "description": "How many memories at most."}},
        "required": ["query"], "additionalProperties": False},
    timeout_s=15.0)
async def memory_search(arguments: dict[str, Any], context: ToolContext
                        ) -> list[dict[str, Any]]:
    """The context user's memories most similar to the query (as ``chat.memory.arecall``
    finds them, above the recall threshold), at most ``k``."""
    if not context.user:
        raise ToolFailed(_("Memories belong to a user, and this call has none."))
    query = arguments["query"].strip()
    if not query:
        return []
    vector = (await memory.aembed([query]))[0]
    hits = await sync_to_async(memory.search)(context.user, vector,
                                              top_k=int(arguments.get("k", 5)))
    return [hit.as_dict() for hit in hits]
