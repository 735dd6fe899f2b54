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

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from croniter import croniter
from django.core.exceptions import ValidationError
from django.utils.translation import gettext as _

from .registry import get_node_type, node_types

if TYPE_CHECKING:  # django-stubs' alias, for type checking only (a dev dependency)
    from django_stubs_ext import StrOrPromise

NODE_ID = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")
RESERVED_IDS = {"begin"}
Lookup = Callable[[str], dict[str, Any] | None]  # a workflow's definition by slug


def node_label(node_id: str, kind: str | None = None) -> str:
    return (_("node “%(id)s” (%(type)s)") % {"id": node_id, "type": kind} if kind
            else _("node “%(id)s”") % {"id": node_id})


def problems(definition: Any, *, slug: str | None = None,
             lookup: Lookup | None = None) -> list[str]:
    """Every problem of ``definition`` as a sentence naming its node (empty: valid)."""
    if not isinstance(definition, dict):
        return [_("The definition must be a JSON object with “nodes” and “edges”.")]
    nodes, found = _nodes(definition.get("nodes"))
    if not nodes:
        return found or [_("A workflow needs at least one node.")]
    successors, edge_problems = _successors(nodes, definition.get("edges", []))
    found += edge_problems
    entry = definition.get("entry") or next(iter(nodes))
    if entry not in nodes:
        return [*found, _("“entry” names no node: “%(id)s”.") % {"id": entry}]
    if found:
        return found
    found += _unreachable(nodes, successors, entry)
    found += _closed_cycles(successors)
    if lookup is not None:
        found += _sub_workflows(nodes, slug, lookup)
    return found


def _nodes(raw: Any) -> tuple[dict[str, dict[str, Any]], list[str]]:
    if not isinstance(raw, list):
        return {}, [_("“nodes” must be a list of {id, type, config}.")]
    nodes: dict[str, dict[str, Any]] = {}
    found: list[str] = []
    for index, node in enumerate(raw):
        node_id = node.get("id") if isinstance(node, dict) else None
        if not isinstance(node_id, str) or not NODE_ID.match(node_id) \
                or node_id in RESERVED_IDS or "__" in node_id:
            # "__" separates an agent's own graph nodes (<id>__tools, <id>__review).
            found.append(_("nodes[%(i)d]: “id” must be a letter then letters, digits, _ or "
                           "- (at most 64), without “__”, and not “begin”.") % {"i": index})
            continue
        if node_id in nodes:
            found.append(_("%(node)s is defined twice.") % {"node": node_label(node_id)})
            continue
        nodes[node_id] = node
        found += _node_problems(node_id, node)
    return nodes, found


def _node_problems(node_id: str, node: dict[str, Any]) -> list[str]:
    kind = node.get("type")
    node_type = get_node_type(kind) if isinstance(kind, str) else None
    if node_type is None:
        return [_("%(node)s has an unknown type “%(type)s” (known: %(known)s).")
                % {"node": node_label(node_id), "type": kind,
                   "known": ", ".join(sorted(node_types()))}]
    config = node.get("config", {})
    if not isinstance(config, dict):
        return [_("%(node)s: “config” must be a JSON object.")
                % {"node": node_label(node_id, kind)}]
    missing = [key for key in node_type.requires if key not in config]
    if missing:
        return [_("%(node)s: “config” lacks %(keys)s.")
                % {"node": node_label(node_id, kind), "keys": ", ".join(missing)}]
    return [f"{node_label(node_id, kind)}: {problem}" for problem in node_type.check(config)]


def branches(node: dict[str, Any]) -> list[str]:
    node_type = get_node_type(node["type"])
    return node_type.branches(node.get("config", {})) if node_type else []


def _successors(nodes: dict[str, dict[str, Any]],
                edges: Any) -> tuple[dict[str, list[str]], list[str]]:
    found: list[str] = []
    successors = {node_id: list(branches(node)) for node_id, node in nodes.items()}
    for node_id, targets in successors.items():
        found += [_("%(node)s branches to “%(target)s”, which is not a node.")
                  % {"node": node_label(node_id, nodes[node_id]["type"]), "target": target}
                  for target in targets if target not in nodes]
    if not isinstance(edges, list):
        return successors, [*found, _("“edges” must be a list of {source, target}.")]
    for index, edge in enumerate(edges):
        source = edge.get("source") if isinstance(edge, dict) else None
        target = edge.get("target") if isinstance(edge, dict) else None
        for end, name in ((source, "source"), (target, "target")):
            if end not in nodes:
                found.append(_("edges[%(i)d]: %(end)s “%(id)s” is not a node (a dangling "
                               "edge).") % {"i": index, "end": name, "id": end})
        if source not in nodes or target not in nodes:
            continue
        node_type = get_node_type(nodes[source]["type"])
        label = node_label(source, nodes[source]["type"])
        if node_type is not None and node_type.terminal:  # None: reported by _nodes
            found.append(_("%(node)s ends the run: it cannot have an outgoing edge.")
                         % {"node": label})
        elif branches(nodes[source]):
            found.append(_("%(node)s is a router: its config names where it goes, not "
                           "edges.") % {"node": label})
        elif successors[source]:
            found.append(_("%(node)s has more than one outgoing edge; use a condition or "
                           "router node to choose.") % {"node": label})
        else:
            successors[source].append(target)
    return successors, found


def _unreachable(nodes: dict[str, Any], successors: dict[str, list[str]],
                 entry: str) -> list[str]:
    seen, todo = {entry}, [entry]
    while todo:
        for target in successors[todo.pop()]:
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return [_("%(node)s cannot be reached from the entry “%(entry)s”.")
            % {"node": node_label(node_id, nodes[node_id]["type"]), "entry": entry}
            for node_id in nodes if node_id not in seen]


def _closed_cycles(successors: dict[str, list[str]]) -> list[str]:
    """Strongly connected components that loop (more than one node, or a node to
    itself) with no edge leaving them: such a run could never end."""
    found = []
    for component in _components(successors):
        loops = len(component) > 1 or any(n in successors[n] for n in component)
        exits = any(t not in component for n in component for t in successors[n])
        if loops and not exits:
            names = ", ".join(f"“{n}”" for n in sorted(component))
            found.append(_("Nodes %(nodes)s form a cycle with no way out (node “%(first)s” "
                           "and the others never reach an end).")
                         % {"nodes": names, "first": sorted(component)[0]})
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
                   lookup: Lookup) -> list[str]:
    found = []
    for node_id, node in nodes.items():
        if node["type"] != "sub_workflow":
            continue
        target = node["config"]["workflow"]
        chain = _inclusion_chain(target, slug, lookup, [slug or "", target])
        if chain is None:
            found.append(_("%(node)s runs workflow “%(slug)s”, which does not exist or is "
                           "disabled.") % {"node": node_label(node_id, "sub_workflow"),
                                           "slug": target})
        elif chain:
            found.append(_("%(node)s includes its own workflow (%(chain)s).")
                         % {"node": node_label(node_id, "sub_workflow"),
                            "chain": " → ".join(chain)})
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
