"""Validation of a workflow's definition, before it is saved: every problem is named
with the node (or edge) it is about, so the admin can say what to fix.

``{"entry": "<node id>", "nodes": [{"id", "type", "config"}], "edges": [{"source",
"target"}]}`` — ``entry`` defaults to the first node. A node other than a router has
at most one outgoing edge (none: the run ends after it); a router (``condition``,
``router``) goes where its config says and has no edges of its own. Refused: unknown
node types, bad configs, dangling edges, nodes the entry cannot reach, cycles with
no way out, and sub-workflows that are missing or include themselves.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

from croniter import croniter
from django.core.exceptions import ValidationError
from django.utils.translation import gettext as _
from django.utils.translation import ngettext
from jsonschema.exceptions import ValidationError as Violation

from .registry import NodeType, get_node_type, node_types

if TYPE_CHECKING:  # django-stubs' alias, for type checking only (a dev dependency)
    from django_stubs_ext import StrOrPromise

NODE_ID = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")
RESERVED_IDS = {"begin"}
Lookup = Callable[[str], dict[str, Any] | None]  # a workflow's definition by slug


class Problem(NamedTuple):
    """One problem of a definition: the node it is about (None: the whole definition)
    and the sentence saying it."""

    node: str | None
    message: str


def node_label(node_id: str, kind: str | None = None) -> str:
    return (_("node “%(id)s” (%(type)s)") % {"id": node_id, "type": kind} if kind
            else _("node “%(id)s”") % {"id": node_id})


def problems(definition: Any, *, slug: str | None = None,
             lookup: Lookup | None = None) -> list[str]:
    """Every problem of ``definition`` as a sentence naming its node (empty: valid)."""
    return [problem.message for problem in located_problems(definition, slug=slug,
                                                            lookup=lookup)]


def located_problems(definition: Any, *, slug: str | None = None,
                     lookup: Lookup | None = None) -> list[Problem]:
    """Every problem of ``definition`` with the id of the node it is about (an edge's
    problem: its source node, when that is a node; None: the whole definition)."""
    if not isinstance(definition, dict):
        return [Problem(None, _("The definition must be a JSON object with “nodes” and "
                                "“edges”."))]
    nodes, sound, found = _nodes(definition.get("nodes"))
    if not nodes:
        return found or [Problem(None, _("A workflow needs at least one node."))]
    successors, edge_problems = _successors(nodes, sound, definition.get("edges", []))
    found += edge_problems
    entry = definition.get("entry") or next(iter(nodes))
    if not isinstance(entry, str) or entry not in nodes:
        return [*found, Problem(None, _("“entry” names no node: “%(id)s”.") % {"id": entry})]
    if found:
        return found
    found += _unreachable(nodes, successors, entry)
    found += _closed_cycles(successors)
    if lookup is not None:
        found += _sub_workflows(nodes, slug, lookup)
    return found


def _nodes(raw: Any) -> tuple[dict[str, dict[str, Any]], set[str], list[Problem]]:
    """The nodes by id, the ids of those whose config is valid, and the problems."""
    if not isinstance(raw, list):
        return {}, set(), [Problem(None, _("“nodes” must be a list of {id, type, config}."))]
    nodes: dict[str, dict[str, Any]] = {}
    sound: set[str] = set()
    found: list[Problem] = []
    for index, node in enumerate(raw):
        node_id = node.get("id") if isinstance(node, dict) else None
        if not isinstance(node_id, str) or not NODE_ID.match(node_id) \
                or node_id in RESERVED_IDS or "__" in node_id:
            # "__" separates an agent's own graph nodes (<id>__tools, <id>__review).
            found.append(Problem(
                node_id if isinstance(node_id, str) else None,
                _("nodes[%(i)d]: “id” must be a letter then letters, digits, _ or - (at "
                  "most 64), without “__”, and not “begin”.") % {"i": index}))
            continue
        if node_id in nodes:
            found.append(Problem(node_id, _("%(node)s is defined twice.")
                                 % {"node": node_label(node_id)}))
            continue
        nodes[node_id] = node
        messages = _node_problems(node_id, node)
        found += [Problem(node_id, message) for message in messages]
        if not messages:
            sound.add(node_id)
    return nodes, sound, found


def _node_problems(node_id: str, node: dict[str, Any]) -> list[str]:
    """A node's type and config problems: the schema's first, then the type's check."""
    kind = node.get("type")
    node_type = get_node_type(kind) if isinstance(kind, str) else None
    if node_type is None:
        return [_("%(node)s has an unknown type “%(type)s” (known: %(known)s).")
                % {"node": node_label(node_id), "type": kind,
                   "known": ", ".join(sorted(node_types()))}]
    label = node_label(node_id, kind)
    config = node.get("config", {})
    if not isinstance(config, dict):
        return [_("%(node)s: “config” must be a JSON object.") % {"node": label}]
    found = config_problems(node_type, config) or node_type.check(config)
    return [f"{label}: {problem}" for problem in found]


# --- a config against its type's schema ----------------------------------------------

VALUE_ORDER = {"type": 0, "enum": 1, "const": 1}  # first of a value's errors, the one said
AS_EXPECTED = {"type", "enum", "const", "minimum", "maximum", "exclusiveMinimum",
               "exclusiveMaximum"}


def config_problems(node_type: NodeType, config: dict[str, Any]) -> list[str]:
    """The config's problems against its type's schema, a sentence each naming the
    field (its path: ``routes[0].to``): a missing key, an unknown key, and one problem
    per value (its type first)."""
    found: list[str] = []
    said: set[tuple[Any, ...]] = set()
    for error in sorted(node_type.validator.iter_errors(config), key=_error_order):
        path = tuple(error.absolute_path)
        if error.validator == "required":
            if (path, "required") not in said:
                said.add((path, "required"))
                missing = [key for key in error.validator_value if key not in error.instance]
                found.append(_("“%(field)s” lacks %(keys)s.")
                             % {"field": _field(path), "keys": ", ".join(missing)})
        elif error.validator == "additionalProperties":
            found += _unknown_keys(error, path)
        elif path not in said:
            said.add(path)
            found.append(_value_problem(error, _field(path)))
    return found


def _error_order(error: Violation) -> tuple[Any, ...]:
    path = tuple((0, part, "") if isinstance(part, int) else (1, 0, str(part))
                 for part in error.absolute_path)
    kind = {"required": 0, "additionalProperties": 1}.get(str(error.validator), 2)
    return (path, kind, VALUE_ORDER.get(str(error.validator), 2))


def _field(path: tuple[Any, ...]) -> str:
    """A config's field as ``routes[0].to`` (the whole config: ``config``)."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "config"


def _unknown_keys(error: Violation, path: tuple[Any, ...]) -> list[str]:
    known = list(error.schema.get("properties", {}))
    unknown = [key for key in error.instance if key not in known]
    if not known:
        return [_("“%(field)s” is not a setting: this node takes none.")
                % {"field": _field((*path, key))} for key in unknown]
    return [_("“%(field)s” is not a setting here (known: %(known)s).")
            % {"field": _field((*path, key)), "known": ", ".join(known)} for key in unknown]


def _value_problem(error: Violation, field: str) -> str:
    kind, limit = str(error.validator), error.validator_value
    if kind in AS_EXPECTED or (kind in ("minLength", "minItems") and limit == 1):
        return _("“%(field)s” must be %(expected)s.") % {"field": field,
                                                          "expected": expected(error.schema)}
    values = {"field": field, "n": limit}
    if kind == "minLength":
        return ngettext("“%(field)s” must be at least %(n)d character long.",
                        "“%(field)s” must be at least %(n)d characters long.", limit) % values
    if kind == "maxLength":
        return ngettext("“%(field)s” must be at most %(n)d character long.",
                        "“%(field)s” must be at most %(n)d characters long.", limit) % values
    if kind == "minItems":
        return ngettext("“%(field)s” must list at least %(n)d item.",
                        "“%(field)s” must list at least %(n)d items.", limit) % values
    if kind == "maxItems":
        return ngettext("“%(field)s” must list at most %(n)d item.",
                        "“%(field)s” must list at most %(n)d items.", limit) % values
    if kind == "uniqueItems":
        return _("“%(field)s” lists %(item)s more than once.") % {
            "field": field, "item": _repeated(error.instance)}
    if kind == "pattern":
        return _("“%(field)s” must match the pattern %(pattern)s.") % {
            "field": field, "pattern": limit}
    return _("“%(field)s” is not valid: %(error)s.") % {"field": field,
                                                       "error": error.message}


def expected(schema: dict[str, Any]) -> str:
    """What a (sub)schema expects, as words: “a whole number from 1 to 50”."""
    if "enum" in schema:
        return _("one of %(values)s") % {"values": ", ".join(map(shown, schema["enum"]))}
    if "const" in schema:
        return shown(schema["const"])
    types = schema.get("type", [])
    phrases = [_kind(kind, schema) for kind in ([types] if isinstance(types, str) else types)]
    if not phrases:
        return _("valid")
    text = phrases[0]
    for phrase in phrases[1:]:
        text = _("%(one)s or %(other)s") % {"one": text, "other": phrase}
    return text


def _kind(kind: str, schema: dict[str, Any]) -> str:
    if kind in ("integer", "number"):
        return _bounded(_("a whole number") if kind == "integer" else _("a number"), schema)
    if kind == "string":
        return _("a non-empty string") if schema.get("minLength", 0) >= 1 else _("a string")
    if kind == "array":
        items = (schema.get("items") or {}).get("type")
        filled = schema.get("minItems", 0) >= 1
        if items == "string":
            return _("a non-empty list of strings") if filled else _("a list of strings")
        if items == "object":
            return (_("a non-empty list of JSON objects") if filled
                    else _("a list of JSON objects"))
        return _("a non-empty list") if filled else _("a list")
    return {"boolean": _("true or false"), "object": _("a JSON object"),
            "null": _("null")}.get(kind, kind)


def _bounded(noun: str, schema: dict[str, Any]) -> str:
    low, high = schema.get("minimum"), schema.get("maximum")
    if low is not None and high is not None:
        return _("%(noun)s from %(min)s to %(max)s") % {
            "noun": noun, "min": shown(low), "max": shown(high)}
    bounds = []
    if low is not None:
        bounds.append(_("at least %(n)s") % {"n": shown(low)})
    elif schema.get("exclusiveMinimum") is not None:
        bounds.append(_("greater than %(n)s") % {"n": shown(schema["exclusiveMinimum"])})
    if high is not None:
        bounds.append(_("at most %(n)s") % {"n": shown(high)})
    elif schema.get("exclusiveMaximum") is not None:
        bounds.append(_("less than %(n)s") % {"n": shown(schema["exclusiveMaximum"])})
    if len(bounds) == 2:
        return _("%(noun)s %(low)s and %(high)s") % {"noun": noun, "low": bounds[0],
                                                      "high": bounds[1]}
    return _("%(noun)s %(bound)s") % {"noun": noun, "bound": bounds[0]} if bounds else noun


def shown(value: Any) -> str:
    """A value as a message quotes it: “text”, 30 (not 30.0), true, [1, 2]."""
    if isinstance(value, str):
        return f"“{value}”"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 60 else text[:57] + "…"


def _repeated(items: list[Any]) -> str:
    seen: set[str] = set()
    for item in items:
        key = json.dumps(item, sort_keys=True)
        if key in seen:
            return shown(item)
        seen.add(key)
    return shown(items)


def branches(node: dict[str, Any]) -> list[str]:
    node_type = get_node_type(node["type"])
    return node_type.branches(node.get("config", {})) if node_type else []


def _successors(nodes: dict[str, dict[str, Any]], sound: set[str],
                edges: Any) -> tuple[dict[str, list[str]], list[Problem]]:
    found: list[Problem] = []
    successors = {node_id: list(branches(node)) if node_id in sound else []
                  for node_id, node in nodes.items()}
    for node_id, targets in successors.items():
        found += [Problem(node_id, _("%(node)s branches to “%(target)s”, which is not a "
                                     "node.") % {"node": node_label(node_id,
                                                                   nodes[node_id]["type"]),
                                                 "target": target})
                  for target in targets if target not in nodes]
    if not isinstance(edges, list):
        return successors, [*found, Problem(None, _("“edges” must be a list of {source, "
                                                    "target}."))]
    for index, edge in enumerate(edges):
        source = edge.get("source") if isinstance(edge, dict) else None
        target = edge.get("target") if isinstance(edge, dict) else None
        at = source if isinstance(source, str) and source in nodes else None
        for end, name in ((source, "source"), (target, "target")):
            if not isinstance(end, str) or end not in nodes:
                found.append(Problem(at, _("edges[%(i)d]: %(end)s “%(id)s” is not a node (a "
                                           "dangling edge).")
                                     % {"i": index, "end": name, "id": end}))
        if at is None or not isinstance(target, str) or target not in nodes:
            continue
        found += _edge_problem(nodes, successors, at, target)
    return successors, found


def _edge_problem(nodes: dict[str, dict[str, Any]], successors: dict[str, list[str]],
                  source: str, target: str) -> list[Problem]:
    """The problem of an edge between two nodes, if any (else it is added)."""
    node_type = get_node_type(nodes[source]["type"])
    label = node_label(source, nodes[source]["type"])
    if node_type is None:  # reported by _nodes
        return []
    if node_type.terminal:
        return [Problem(source, _("%(node)s ends the run: it cannot have an outgoing "
                                  "edge.") % {"node": label})]
    if node_type.router:
        return [Problem(source, _("%(node)s is a router: its config names where it goes, "
                                  "not edges.") % {"node": label})]
    if successors[source]:
        return [Problem(source, _("%(node)s has more than one outgoing edge; use a "
                                  "condition or router node to choose.") % {"node": label})]
    successors[source].append(target)
    return []


def _unreachable(nodes: dict[str, Any], successors: dict[str, list[str]],
                 entry: str) -> list[Problem]:
    seen, todo = {entry}, [entry]
    while todo:
        for target in successors[todo.pop()]:
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return [Problem(node_id, _("%(node)s cannot be reached from the entry “%(entry)s”.")
                    % {"node": node_label(node_id, nodes[node_id]["type"]), "entry": entry})
            for node_id in nodes if node_id not in seen]


def _closed_cycles(successors: dict[str, list[str]]) -> list[Problem]:
    """Strongly connected components that loop (more than one node, or a node to
    itself) with no edge leaving them: such a run could never end."""
    found: list[Problem] = []
    for component in _components(successors):
        loops = len(component) > 1 or any(n in successors[n] for n in component)
        exits = any(t not in component for n in component for t in successors[n])
        if loops and not exits:
            names, first = ", ".join(f"“{n}”" for n in sorted(component)), min(component)
            found.append(Problem(first, _("Nodes %(nodes)s form a cycle with no way out "
                                          "(node “%(first)s” and the others never reach an "
                                          "end).") % {"nodes": names, "first": first}))
    return found


def _components(successors: dict[str, list[str]]) -> list[set[str]]:
    """Tarjan's strongly connected components (iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    result: list[set[str]] = []
    for root in successors:
        if root in index:
            continue
        work = [(root, 0)]
        while work:
            node, position = work.pop()
            if position == 0:
                index[node] = low[node] = len(index)
                stack.append(node)
                on_stack.add(node)
            targets = successors[node]
            if position < len(targets):
                work.append((node, position + 1))
                target = targets[position]
                if target not in index:
                    work.append((target, 0))
                elif target in on_stack:
                    low[node] = min(low[node], index[target])
                continue
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                result.append(component)
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    return result


def _sub_workflows(nodes: dict[str, dict[str, Any]], slug: str | None,
                   lookup: Lookup) -> list[Problem]:
    found: list[Problem] = []
    for node_id, node in nodes.items():
        if node["type"] != "sub_workflow":
            continue
        target = node["config"]["workflow"]
        chain = _inclusion_chain(target, slug, lookup, [slug or "", target])
        if chain is None:
            found.append(Problem(node_id, _(
                "%(node)s runs workflow “%(slug)s”, which does not exist or is disabled.")
                % {"node": node_label(node_id, "sub_workflow"), "slug": target}))
        elif chain:
            found.append(Problem(node_id, _("%(node)s includes its own workflow (%(chain)s).")
                                 % {"node": node_label(node_id, "sub_workflow"),
                                    "chain": " → ".join(chain)}))
    return found


def _inclusion_chain(target: str, slug: str | None, lookup: Lookup,
                     path: list[str]) -> list[str] | None:
    """``[]`` when ``target`` exists and never includes ``slug``; the chain of slugs
    that does; None when ``target`` is missing."""
    if target == slug:
        return path
    definition = lookup(target)
    if definition is None:
        return None
    for node in definition.get("nodes", []):
        if isinstance(node, dict) and node.get("type") == "sub_workflow":
            inner = (node.get("config") or {}).get("workflow")
            if not isinstance(inner, str):
                continue  # no slug: nothing it could include
            if inner in path[1:-1]:
                continue  # a loop among other workflows: reported when they are saved
            chain = _inclusion_chain(inner, slug, lookup, [*path, inner])
            if chain:
                return chain
    return []


def validate(definition: Any, *, slug: str | None = None,
             lookup: Lookup | None = None) -> None:
    """Raise ``ValidationError`` on the ``definition`` field listing every problem."""
    found = problems(definition, slug=slug, lookup=lookup)
    if found:
        raise ValidationError({"definition": found})


def schedule_problems(cron: str, every_seconds: int | None) -> dict[str, StrOrPromise]:
    """Field errors of a schedule's timing: exactly one of cron or interval, valid."""
    if bool(cron) == bool(every_seconds):
        return {"cron": _("Give either a cron expression or an interval, not both.")}
    if cron and not croniter.is_valid(cron):
        return {"cron": _("“%(cron)s” is not a valid cron expression (five fields, e.g. "
                          "“*/5 * * * *”).") % {"cron": cron}}
    return {}
