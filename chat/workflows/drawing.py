"""A workflow's definition drawn as an inline SVG on the server (the admin's change
page): no script, no CDN, every text escaped.

Layered in the order a run goes, like the studio's graph panel: a depth-first walk
from the entry orders the nodes (each before what it leads to; an edge back to a
node still being walked is a loop), a node's layer is the longest path to it from the
entry, so every arrow points down but a loop's, which goes back up beside the rows
(on the side with fewer boxes in its way). An edge that skips layers passes through
placeholders, never through a box; rows are ordered to cross few edges, each node
under the mean of its predecessors. Plain edges are solid; a router's branches are
dashed and labelled with the config key naming their target (``then``, ``else``,
``routes[0]``, ``default``…). The entry has a start mark; a terminal node is a pill.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe
from django.utils.translation import gettext as _

from .registry import get_node_type
from .validation import branches

NODE_H = 44.0
GAP_X = 28.0  # between boxes of a row
GAP_Y = 56.0  # between rows: room for a branch's label
DUMMY_W = 14.0  # an edge passing through a row
MIN_W, MAX_W = 112.0, 232.0
MARGIN = 16.0
TOP = 44.0  # room for the start mark
LANE = 18.0  # between loops' lanes on the right


@dataclass
class Link:
    """An edge of the drawing: ``label`` set for a router's branch."""

    source: str
    target: str
    label: str = ""

    @property
    def branch(self) -> bool:
        return bool(self.label)


@dataclass
class Item:
    """A box (a node) or a placeholder an edge passes through, placed in a row."""

    key: str
    layer: int
    width: float
    node: dict[str, Any] | None = None  # None: a placeholder
    x: float = 0.0  # the centre
    preds: list[str] = field(default_factory=list)

    @property
    def y(self) -> float:
        return TOP + self.layer * (NODE_H + GAP_Y)


@dataclass
class Graph:
    """What is drawn: the nodes by id, every edge and branch, the entry."""

    nodes: dict[str, dict[str, Any]]
    links: list[Link]
    entry: str


# --- reading the definition (defensively: an invalid form is drawn too) ----------------


def graph_of(definition: Any) -> Graph | None:
    """The nodes (by id), edges and entry of ``definition``; None when it has no node."""
    if not isinstance(definition, dict) or not isinstance(definition.get("nodes"), list):
        return None
    nodes: dict[str, dict[str, Any]] = {}
    for node in definition["nodes"]:
        if isinstance(node, dict) and isinstance(node.get("id"), str) \
                and node["id"] not in nodes:
            nodes[node["id"]] = node
    if not nodes:
        return None
    links: list[Link] = []
    for node_id, node in nodes.items():
        links += _branch_links(node_id, node, nodes)
    edges = definition.get("edges")
    for edge in edges if isinstance(edges, list) else []:
        if isinstance(edge, dict) and edge.get("source") in nodes \
                and edge.get("target") in nodes:
            links.append(Link(edge["source"], edge["target"]))
    entry = definition.get("entry")
    unique = {(link.source, link.target): link for link in reversed(links)}  # first kept
    return Graph(nodes, list(reversed(unique.values())),
                 entry if entry in nodes else next(iter(nodes)))


def _branch_links(node_id: str, node: dict[str, Any],
                  nodes: dict[str, dict[str, Any]]) -> list[Link]:
    config = node.get("config")
    if not isinstance(node.get("type"), str) or not isinstance(config, dict):
        return []
    try:
        targets = branches(node)
    except (KeyError, TypeError, AttributeError):  # a router's config not yet valid
        return []
    found = []
    for target in dict.fromkeys(t for t in targets if isinstance(t, str) and t in nodes):
        keys = list(dict.fromkeys(_keys_naming(config, target))) or ["?"]
        found.append(Link(node_id, target, " · ".join(keys)))
    return found


def _keys_naming(value: Any, target: str, path: str = "") -> Iterator[str]:
    """The config keys whose value is ``target``: ``then``, ``a.b``; ``routes[0]`` for
    a key of a list's item (``routes[0].to``)."""
    if isinstance(value, dict):
        for key, inner in value.items():
            inner_path = f"{path}.{key}" if path else str(key)
            if inner == target:
                yield path if path.endswith("]") else inner_path
            else:
                yield from _keys_naming(inner, target, inner_path)
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            if inner == target:
                yield f"{path}[{index}]"
            else:
                yield from _keys_naming(inner, target, f"{path}[{index}]")


# --- layout ------------------------------------------------------------------------------


def run_order(graph: Graph) -> tuple[list[str], set[tuple[str, str]]]:
    """The nodes in the order a run goes through them (the reverse of the order a
    depth-first walk from the entry finishes them; a node's later branches walked
    first, so its first branch comes first) and the loops' edges back."""
    successors: dict[str, list[str]] = {n: [] for n in graph.nodes}
    for link in graph.links:
        successors[link.source].append(link.target)
    state: dict[str, str] = {}
    finished: list[str] = []
    back: set[tuple[str, str]] = set()
    for root in [graph.entry, *graph.nodes]:  # then what the entry cannot reach
        if root in state:
            continue
        state[root] = "open"
        stack = [(root, iter(reversed(successors[root])))]
        while stack:
            node, todo = stack[-1]
            target = next(todo, None)
            if target is None:
                state[node] = "done"
                finished.append(node)
                stack.pop()
            elif state.get(target) == "open":
                back.add((node, target))
            elif target not in state:
                state[target] = "open"
                stack.append((target, iter(reversed(successors[target]))))
    return finished[::-1], back


def layers(graph: Graph, order: list[str], back: set[tuple[str, str]]) -> dict[str, int]:
    """Each node's layer: the longest path to it from the entry (loops left out)."""
    layer = dict.fromkeys(order, 0)
    position = {node: index for index, node in enumerate(order)}
    forward = sorted((link for link in graph.links
                      if (link.source, link.target) not in back),
                     key=lambda link: position[link.source])
    for link in forward:
        layer[link.target] = max(layer[link.target], layer[link.source] + 1)
    return layer


Chain = tuple[Link, list[str]]  # a forward edge and the keys of the items it goes through


def rows_of(graph: Graph, width: float) -> tuple[list[list[Item]], dict[str, Item],
                                                  list[Chain], list[Link]]:
    """The rows of boxes and placeholders, ordered and placed; every item by key;
    the forward edges' chains; the loops' edges."""
    order, back = run_order(graph)
    layer = layers(graph, order, back)
    items = {node_id: Item(node_id, layer[node_id], width, graph.nodes[node_id])
             for node_id in order}
    chains: list[Chain] = []
    loops: list[Link] = []
    for link in graph.links:
        if (link.source, link.target) in back:
            loops.append(link)
            continue
        chain = [link.source]
        for between in range(layer[link.source] + 1, layer[link.target]):
            key = f"{link.source}>{link.target}#{between}"
            items[key] = Item(key, between, DUMMY_W)
            chain.append(key)
        chain.append(link.target)
        for upper, lower in zip(chain, chain[1:], strict=False):
            items[lower].preds.append(upper)
        chains.append((link, chain))
    rows: list[list[Item]] = [[] for _ in range(max(layer.values()) + 1)]
    for key in [*order, *(k for k in items if k not in layer)]:
        rows[items[key].layer].append(items[key])
    _order_rows(rows, items)
    _place(rows, items)
    return rows, items, chains, loops


def _order_rows(rows: list[list[Item]], items: dict[str, Item]) -> None:
    """Each row sorted by the mean position of its items' predecessors (the run order
    breaks ties), twice: fewer crossings, a branch kept under its node."""
    for _sweep in range(2):
        for row in rows[1:]:
            index = {item.key: i for r in rows for i, item in enumerate(r)}
            start = {item.key: i for i, item in enumerate(row)}
            row.sort(key=lambda item: (
                sum(index[p] for p in item.preds) / len(item.preds) if item.preds
                else start[item.key], start[item.key]))


def _place(rows: list[list[Item]], items: dict[str, Item]) -> None:
    """Centres: each item under the mean of its predecessors, pushed apart where they
    would overlap, the row then shifted as a whole to stay as close as it can."""
    for row in rows:
        wanted = [sum(items[p].x for p in item.preds) / len(item.preds) if item.preds
                  else 0.0 for item in row]
        placed: list[float] = []
        for item, want in zip(row, wanted, strict=True):
            if placed:
                previous = row[len(placed) - 1]
                want = max(want, placed[-1] + (previous.width + item.width) / 2 + GAP_X)
            placed.append(want)
        shift = sum(w - p for w, p in zip(wanted, placed, strict=True)) / len(row)
        for item, x in zip(row, placed, strict=True):
            item.x = x + shift
    left = min(item.x - item.width / 2 for row in rows for item in row)
    for row in rows:
        for item in row:
            item.x += MARGIN - left


# --- text --------------------------------------------------------------------------------


def text_width(text: str, size: float) -> float:
    """An estimate (no font metrics on the server): wide (CJK) characters are square."""
    return sum(size if unicodedata.east_asian_width(c) in "WF" else size * 0.62
               for c in text)


def clipped(text: str, size: float, room: float) -> str:
    if text_width(text, size) <= room:
        return text
    while text and text_width(text + "…", size) > room:
        text = text[:-1]
    return text + "…"


def type_label(kind: Any) -> str:
    node_type = get_node_type(kind) if isinstance(kind, str) else None
    return str(node_type.label) if node_type else str(kind)


# --- SVG ---------------------------------------------------------------------------------


STYLE = mark_safe("""
.wf-drawing { max-width: 100%; height: auto; font-family: var(--font-family-primary,
  -apple-system, "Segoe UI", system-ui, Roboto, "Helvetica Neue", Arial, sans-serif); }
.wf-drawing .wf-box { fill: var(--body-bg, #fff); stroke: var(--border-color, #ccc);
  stroke-width: 1.5; }
.wf-drawing .wf-entry .wf-box { stroke: var(--link-fg, #417893); stroke-width: 2.5; }
.wf-drawing .wf-terminal .wf-box { fill: var(--darkened-bg, #f8f8f8);
  stroke: var(--body-quiet-color, #666); }
.wf-drawing .wf-id { fill: var(--body-fg, #333); font-size: 13px; font-weight: 600; }
.wf-drawing .wf-type { fill: var(--body-quiet-color, #666); font-size: 11px; }
.wf-drawing text { dominant-baseline: middle; text-anchor: middle; }
.wf-drawing .wf-edge { fill: none; stroke: var(--body-quiet-color, #666); stroke-width: 1.5; }
.wf-drawing .wf-branch { stroke-dasharray: 5 4; }
.wf-drawing .wf-arrow { fill: var(--body-quiet-color, #666); }
.wf-drawing .wf-start { fill: var(--link-fg, #417893); }
.wf-drawing .wf-label { fill: var(--body-fg, #333); font-size: 11px; font-style: italic;
  paint-order: stroke; stroke: var(--body-bg, #fff); stroke-width: 4px; }
.wf-drawing .wf-label.wf-side { text-anchor: start; }
""")  # a constant: no text of the workflow's in it


def svg(definition: Any, *, title: str = "") -> SafeString:
    """``definition`` drawn as an ``<svg>`` (escaped: safe to put in a page); a short
    sentence when there is nothing to draw."""
    graph = graph_of(definition)
    if graph is None:
        return format_html("<p>{}</p>", _("Nothing to draw: the workflow has no node."))
    width = max(MIN_W, min(MAX_W, 28 + max(
        max(text_width(n, 13) * 1.06, text_width(type_label(node.get("type")), 11))
        for n, node in graph.nodes.items())))
    rows, items, chains, loops = rows_of(graph, width)
    sides, shift = loop_sides(loops, rows)
    for item in items.values():
        item.x += shift
    loop_parts, right, lanes_bottom = _loops(loops, items, rows, sides)
    total_w = right + MARGIN
    total_h = max(TOP + len(rows) * NODE_H + (len(rows) - 1) * GAP_Y, lanes_bottom) + MARGIN
    parts = [_defs(), _start_mark(items[graph.entry])]
    ports = _ports(items, chains)
    parts += [_chain_path(index, chain, items, ports) for index, chain in enumerate(chains)]
    parts += loop_parts
    parts += [_box(items[n], graph, width) for n in graph.nodes]
    return format_html(
        '<svg xmlns="http://www.w3.org/2000/svg" class="wf-drawing" role="img" '
        'width="{w}" height="{h}" viewBox="0 0 {w} {h}" aria-label="{title}">'
        "<title>{title}</title><style>{style}</style>{parts}</svg>",
        w=_n(total_w), h=_n(total_h), title=title or _("Drawing of the workflow"),
        style=STYLE, parts=_join(parts))


def _n(value: float) -> str:
    return f"{value:.1f}".removesuffix(".0")


def _join(parts: Iterable[SafeString]) -> SafeString:
    return format_html_join("", "{}", ((part,) for part in parts))


def _defs() -> SafeString:
    return mark_safe(  # a constant: no text of the workflow's in it
        '<defs><marker id="wf-arrow" viewBox="0 0 10 10" refX="9" refY="5" '
        'markerWidth="7" markerHeight="7" orient="auto-start-reverse">'
        '<path class="wf-arrow" d="M 0 0 L 10 5 L 0 10 z"/></marker></defs>')


def _start_mark(entry: Item) -> SafeString:
    return format_html(
        '<g class="wf-start-mark"><circle class="wf-start" cx="{x}" cy="{cy}" r="6"/>'
        '<text class="wf-label wf-side" x="{tx}" y="{cy}">{start}</text>'
        '<path class="wf-edge" d="M {x} {y0} L {x} {y1}" marker-end="url(#wf-arrow)"/></g>',
        x=_n(entry.x), cy=_n(entry.y - 30), tx=_n(entry.x + 10), y0=_n(entry.y - 24),
        y1=_n(entry.y),
        start=_("entry"))


def _ports(items: dict[str, Item], chains: list[Chain]) -> dict[tuple[str, int], float]:
    """Where each chain leaves its source and enters its target: spread along the
    box's bottom (top), in the order of the other ends, so arrows do not meet."""
    ports: dict[tuple[str, int], float] = {}
    by_end: dict[tuple[str, str], list[tuple[float, int]]] = {}
    for index, (_link, chain) in enumerate(chains):
        by_end.setdefault((chain[0], "out"), []).append((items[chain[1]].x, index))
        by_end.setdefault((chain[-1], "in"), []).append((items[chain[-2]].x, index))
    for (key, side), ends in by_end.items():
        item, ends = items[key], sorted(ends)
        step = min(18.0, (item.width - 24) / max(len(ends) - 1, 1))
        for position, (_x, index) in enumerate(ends):
            offset = (position - (len(ends) - 1) / 2) * step
            ports[(f"{side}:{key}", index)] = item.x + offset
    return ports


def _chain_path(index: int, chain: Chain, items: dict[str, Item],
                ports: dict[tuple[str, int], float]) -> SafeString:
    link, keys = chain
    points = [(ports[(f"out:{keys[0]}", index)], items[keys[0]].y + NODE_H)]
    for key in keys[1:-1]:  # placeholders: straight through their row
        points += [(items[key].x, items[key].y), (items[key].x, items[key].y + NODE_H)]
    points.append((ports[(f"in:{keys[-1]}", index)], items[keys[-1]].y))
    path = [f"M {_n(points[0][0])} {_n(points[0][1])}"]
    for (x0, y0), (x1, y1) in zip(points, points[1:], strict=False):
        if x0 == x1 or y0 == y1 or (y1 - y0) == NODE_H:
            path.append(f"L {_n(x1)} {_n(y1)}")
        else:
            bend = (y1 - y0) / 2
            path.append(f"C {_n(x0)} {_n(y0 + bend)} {_n(x1)} {_n(y1 - bend)} "
                        f"{_n(x1)} {_n(y1)}")
    drawn = format_html('<path class="wf-edge{}" d="{}" marker-end="url(#wf-arrow)"/>',
                        " wf-branch" if link.branch else "", " ".join(path))
    if not link.branch:
        return drawn
    (x0, y0), (x1, y1) = points[0], points[1]
    return format_html('{}<text class="wf-label" x="{}" y="{}">{}</text>', drawn,
                       _n((x0 + x1) / 2), _n((y0 + y1) / 2), link.label)


def loop_sides(loops: list[Link],
               rows: list[list[Item]]) -> tuple[dict[tuple[str, str], int], float]:
    """The side each loop goes back on (-1: left, 1: right): the one with fewer boxes
    between its ends and that side; the room the left-hand lanes and labels need."""
    where = {item.key: (index, len(row)) for row in rows for index, item in enumerate(row)}
    sides = {}
    for link in loops:
        (source, width), (target, target_width) = where[link.source], where[link.target]
        right = (width - 1 - source) + (target_width - 1 - target)
        sides[(link.source, link.target)] = -1 if source + target < right else 1
    left = [link for link in loops if sides[(link.source, link.target)] < 0]
    return sides, (LANE * len(left) + 8 + max(text_width(link.label, 11) for link in left)
                   if left else 0.0)


def _loops(loops: list[Link], items: dict[str, Item], rows: list[list[Item]],
           sides: dict[tuple[str, str], int]) -> tuple[list[SafeString], float, float]:
    """Each loop's way back, up a lane beside everything (its side): out of its
    source's side (or, when a box is beside it, down into the gap below its row and
    along it), into its target's side (or along the gap above its row and down into
    its top); loops that do not overlap share a lane. The parts, and how far right and
    down they reach."""
    edge = {-1: min(i.x - i.width / 2 for row in rows for i in row),
            1: max(i.x + i.width / 2 for row in rows for i in row)}
    outer = {-1: {row[0].key for row in rows}, 1: {row[-1].key for row in rows}}
    taken: dict[tuple[int, int], list[tuple[float, float]]] = {}
    drawn: list[SafeString] = []
    right, bottom = edge[1], 0.0
    for link in sorted(loops, key=lambda k: (items[k.source].layer - items[k.target].layer,
                                            items[k.source].layer)):
        side = sides[(link.source, link.target)]
        start, end = _loop_ends(items[link.source], items[link.target], side, outer[side])
        low, high = end[0][1], start[-1][1]  # the lane runs up from high to low
        lane = next(n for n in range(1, len(loops) + 2) if all(
            high + 4 < other_low or low - 4 > other_high
            for other_low, other_high in taken.get((side, n), [])))
        taken.setdefault((side, lane), []).append((low, high))
        x = edge[side] + side * LANE * lane
        points = [*start, (x, high), (x, low), *end]
        drawn.append(format_html('<path class="wf-edge wf-loop{}" d="{}" '
                                 'marker-end="url(#wf-arrow)"/>',
                                 " wf-branch" if link.branch else "", _orthogonal(points)))
        right, bottom = max(right, x + 4), max(bottom, high)
        if link.branch:
            drawn.append(format_html(
                '<text class="wf-label wf-side" x="{}" y="{}" style="text-anchor: {}">'
                "{}</text>", _n(x + side * 4), _n((low + high) / 2),
                "start" if side > 0 else "end", link.label))
            if side > 0:
                right = max(right, x + 8 + text_width(link.label, 11))
    return drawn, right, bottom


def _loop_ends(source: Item, target: Item, side: int, outer: set[str]) -> tuple[
        list[tuple[float, float]], list[tuple[float, float]]]:
    """The points of a loop before its lane and after it: out of the source's side a
    little above its middle (or its bottom, then the gap below its row), into the
    target's side a little below its middle (or the gap above its row, then its top):
    a loop leaving a node never crosses one coming back to it."""
    if source.key in outer:
        start = [(source.x + side * source.width / 2, source.y + NODE_H / 2 - 5)]
    else:
        at = source.x + side * (source.width / 2 - 12)
        start = [(at, source.y + NODE_H), (at, source.y + NODE_H + 10)]
    if target.key in outer:
        end = [(target.x + side * target.width / 2, target.y + NODE_H / 2 + 5)]
    else:
        at = target.x + side * (target.width / 2 - 12)
        end = [(at, target.y - 10), (at, target.y)]
    return start, end


def _orthogonal(points: list[tuple[float, float]], radius: float = 6.0) -> str:
    """A path through ``points`` (each segment horizontal or vertical), its corners
    rounded."""
    path = [f"M {_n(points[0][0])} {_n(points[0][1])}"]
    for (x0, y0), (x1, y1), (x2, y2) in zip(points, points[1:], points[2:], strict=False):
        r = min(radius, (abs(x1 - x0) + abs(y1 - y0)) / 2, (abs(x2 - x1) + abs(y2 - y1)) / 2)
        ax, ay = x1 - _sign(x1 - x0) * r, y1 - _sign(y1 - y0) * r
        bx, by = x1 + _sign(x2 - x1) * r, y1 + _sign(y2 - y1) * r
        path.append(f"L {_n(ax)} {_n(ay)} Q {_n(x1)} {_n(y1)} {_n(bx)} {_n(by)}")
    path.append(f"L {_n(points[-1][0])} {_n(points[-1][1])}")
    return " ".join(path)


def _sign(value: float) -> float:
    return (value > 0) - (value < 0)


def _box(item: Item, graph: Graph, width: float) -> SafeString:
    kind = (item.node or {}).get("type")
    node_type = get_node_type(kind) if isinstance(kind, str) else None
    terminal = bool(node_type and node_type.terminal)
    classes = "wf-node" + (" wf-entry" if item.key == graph.entry else "") \
        + (" wf-terminal" if terminal else "")
    label = type_label(kind)
    return format_html(
        '<g class="{classes}" data-node="{id}"><title>{id} ({label})</title>'
        '<rect class="wf-box" x="{x}" y="{y}" width="{w}" height="{h}" rx="{rx}"/>'
        '<text class="wf-id" x="{cx}" y="{y1}">{shown_id}</text>'
        '<text class="wf-type" x="{cx}" y="{y2}">{shown_label}</text></g>',
        classes=classes, id=item.key, label=label, x=_n(item.x - width / 2), y=_n(item.y),
        w=_n(width), h=_n(NODE_H), rx=_n(NODE_H / 2 if terminal else 8), cx=_n(item.x),
        y1=_n(item.y + 16), y2=_n(item.y + 32),
        shown_id=clipped(item.key, 13 * 1.06, width - 20),
        shown_label=clipped(label, 11, width - 20))
