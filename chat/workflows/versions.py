"""Versions of a workflow: every save of its definition in the editor (with the node
positions on the canvas), drafts, publishing, rolling back, and what changed between
two definitions.

A version is a draft until it is published. Publishing copies its definition into
``Workflow.definition`` (what runs use) and its number into ``Workflow.live_version``
through ``Workflow.save()``, so the compile counter grows and every process drops its
plans exactly as after an admin edit. Rolling back never rewrites history: the old
version is copied into a new one, which is published. Numbers (1, 2, 3… per workflow)
are taken under a row lock on the workflow, so two saves never get the same one.

Definitions are validated as the admin validates them (``validation.validate`` with
the lookup ``Workflow.clean`` uses), so both refuse the same definitions with the same
messages; ``InvalidDefinition`` also carries the problems with their nodes.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Max
from django.utils import timezone
from django.utils.translation import gettext as _

from ..models import Workflow, WorkflowVersion
from . import validation
from .compiler import workflows_changed
from .validation import Problem

Layout = dict[str, dict[str, float]]
NOTE_MAX = 200


class InvalidDefinition(ValidationError):
    """The definition's problems, as the admin's ``definition`` field error (the same
    messages); ``problems`` holds them with the node each is about."""

    def __init__(self, problems: list[Problem]):
        super().__init__({"definition": [problem.message for problem in problems]})
        self.problems = problems


def lookup_for(workflow: Workflow | None) -> validation.Lookup:
    """Other enabled workflows' definitions by slug, as ``Workflow.clean`` looks them
    up (``workflow`` itself left out: a sub-workflow naming it includes itself)."""

    def lookup(slug: str) -> dict | None:
        found = Workflow.objects.filter(slug=slug, enabled=True)
        if workflow is not None and workflow.pk is not None:
            found = found.exclude(pk=workflow.pk)
        return found.values_list("definition", flat=True).first()

    return lookup


def located_problems(definition: Any, workflow: Workflow | None) -> list[Problem]:
    """``definition``'s problems with the node each is about (empty: valid), as the
    admin finds them for ``workflow`` (None: a definition of no workflow yet)."""
    return validation.located_problems(
        definition, slug=workflow.slug if workflow is not None else None,
        lookup=lookup_for(workflow))


def check_definition(workflow: Workflow, definition: Any) -> None:
    """Raise ``InvalidDefinition`` when the admin would refuse ``definition``."""
    found = located_problems(definition, workflow)
    if found:
        raise InvalidDefinition(found)


def _check_layout(layout: Any) -> Layout:
    valid = isinstance(layout, dict) and all(
        isinstance(key, str) and isinstance(point, dict)
        and all(isinstance(point.get(axis), int | float)
                and not isinstance(point.get(axis), bool) for axis in ("x", "y"))
        for key, point in layout.items())
    if not valid:
        raise ValidationError({"layout": [_("The layout must be a JSON object of node "
                                            "positions: {node id: {\"x\", \"y\"}}.")]})
    return {key: {"x": point["x"], "y": point["y"]} for key, point in layout.items()}


def _locked(workflow: Workflow) -> Workflow:
    """The workflow's row, locked until the transaction ends (call inside one)."""
    return Workflow.objects.select_for_update().get(pk=workflow.pk)


def _last_number(workflow: Workflow) -> int:
    return workflow.versions.aggregate(last=Max("number"))["last"] or 0


def _set_live(workflow: Workflow, number: int) -> None:
    """Record ``number`` as live without a save (the definition is unchanged, so the
    compile counter stays); plans hold the number, so they are dropped all the same."""
    Workflow.objects.filter(pk=workflow.pk).update(live_version=number)
    workflow.live_version = number
    workflows_changed()


def ensure_history(workflow: Workflow, *, author: Any = None, note: str = "",
                   layout: Any = None) -> None:
    """A workflow with no versions (made before versions, by a fixture, or just now)
    gets version 1: its current definition, published."""
    if workflow.versions.exists():
        return
    with transaction.atomic():
        locked = _locked(workflow)
        if locked.versions.exists():  # another request recorded it meanwhile
            workflow.live_version = locked.live_version
            return
        WorkflowVersion.objects.create(workflow=locked, number=1,
                                       definition=locked.definition,
                                       layout=_check_layout(layout or {}), author=author,
                                       note=note[:NOTE_MAX], published_at=timezone.now())
        _set_live(workflow, 1)


def save_version(workflow: Workflow, definition: Any, *, layout: Any = None,
                 author: Any = None, note: str = "",
                 publish: bool = False) -> WorkflowVersion:
    """Save ``definition`` (and the canvas' ``layout``) as the workflow's next
    version, a draft unless ``publish``. Raises ``InvalidDefinition`` (the admin's
    messages) or ``ValidationError`` on ``layout``; nothing is saved then."""
    positions = _check_layout({} if layout is None else layout)
    check_definition(workflow, definition)
    ensure_history(workflow)  # the definition running now stays version 1
    with transaction.atomic():
        locked = _locked(workflow)
        version = WorkflowVersion.objects.create(
            workflow=locked, number=_last_number(locked) + 1, definition=definition,
            layout=positions, author=author, note=note[:NOTE_MAX])
        if publish:
            _make_live(locked, version)
    workflow.refresh_from_db()
    return version


def publish(workflow: Workflow, number: int, *, author: Any = None) -> WorkflowVersion:
    """Publish version ``number``: the latest one, a draft, in place; any other (a roll
    back) as a new version copying it. Publishing the live version changes nothing.
    Raises ``WorkflowVersion.DoesNotExist``, or ``InvalidDefinition`` when the
    definition no longer holds (a sub-workflow it runs was disabled since)."""
    ensure_history(workflow)
    with transaction.atomic():
        locked = _locked(workflow)
        chosen = locked.versions.get(number=number)
        if chosen.number == locked.live_version:
            return chosen
        check_definition(locked, chosen.definition)
        last = _last_number(locked)
        if chosen.number == last and chosen.published_at is None:
            version = chosen
        else:
            version = WorkflowVersion.objects.create(
                workflow=locked, number=last + 1, definition=chosen.definition,
                layout=chosen.layout, author=author,
                note=(_("Rolled back to version %(number)d") % {"number": chosen.number}
                      )[:NOTE_MAX])
        _make_live(locked, version)
    workflow.refresh_from_db()
    return version


def _make_live(locked: Workflow, version: WorkflowVersion) -> None:
    version.published_at = timezone.now()
    version.save(update_fields=["published_at"])
    locked.definition = version.definition
    locked.live_version = version.number
    # save(): the compile counter + 1 and the post_save receivers, as an admin edit.
    locked.save(update_fields=["definition", "live_version", "version", "updated_at"])


def record_admin_save(workflow: Workflow, author: Any) -> WorkflowVersion | None:
    """After the admin saved ``workflow``: a new published version of its definition
    when that differs from the live version's (or none was recorded); else None."""
    with transaction.atomic():
        locked = _locked(workflow)
        live = locked.versions.filter(number=locked.live_version).first() \
            if locked.live_version is not None else None
        if live is not None and live.definition == locked.definition:
            return None
        nodes = _node_ids(locked.definition)
        # The canvas keeps its places for the nodes that are still there.
        layout = {key: point for key, point in (live.layout if live else {}).items()
                  if key in nodes}
        version = WorkflowVersion.objects.create(
            workflow=locked, number=_last_number(locked) + 1, definition=locked.definition,
            layout=layout, author=author, note=_("Saved in the admin"),
            published_at=timezone.now())
        _set_live(workflow, version.number)
    return version


# --- differences -----------------------------------------------------------------------


def _nodes(definition: Any) -> dict[str, dict[str, Any]]:
    raw = definition.get("nodes") if isinstance(definition, dict) else None
    if not isinstance(raw, list):
        return {}
    return {node["id"]: node for node in raw
            if isinstance(node, dict) and isinstance(node.get("id"), str)}


def _node_ids(definition: Any) -> set[str]:
    return set(_nodes(definition))


def _edges(definition: Any) -> list[tuple[Any, Any]]:
    raw = definition.get("edges") if isinstance(definition, dict) else None
    if not isinstance(raw, list):
        return []
    found: list[tuple[Any, Any]] = []
    for edge in raw:
        if isinstance(edge, dict) and (edge.get("source"), edge.get("target")) not in found:
            found.append((edge.get("source"), edge.get("target")))
    return found


def _entry(definition: Any) -> str | None:
    """The entry a run starts at: ``entry``, else the first node."""
    entry = definition.get("entry") if isinstance(definition, dict) else None
    return entry or next(iter(_nodes(definition)), None)


def _config(node: dict[str, Any]) -> dict[str, Any]:
    config = node.get("config")
    return config if isinstance(config, dict) else {}


def _fields(a: dict[str, Any], b: dict[str, Any]) -> list[dict[str, Any]]:
    """What differs between two nodes of one id: ``type``, then each config key (the
    value ``None`` where a side lacks it)."""
    found = []
    if a.get("type") != b.get("type"):
        found.append({"key": "type", "a": a.get("type"), "b": b.get("type")})
    config_a, config_b = _config(a), _config(b)
    for key in [*config_a, *(k for k in config_b if k not in config_a)]:
        if config_a.get(key) != config_b.get(key) or (key in config_a) != (key in config_b):
            found.append({"key": key, "a": config_a.get(key), "b": config_b.get(key)})
    return found


def diff(a_definition: Any, b_definition: Any) -> dict[str, Any]:
    """What changed from ``a_definition`` to ``b_definition``: the entry (None when the
    same), the nodes added, removed and changed (with the fields that differ) and the
    edges added and removed."""
    nodes_a, nodes_b = _nodes(a_definition), _nodes(b_definition)
    edges_a, edges_b = _edges(a_definition), _edges(b_definition)
    entry_a, entry_b = _entry(a_definition), _entry(b_definition)
    changed = []
    for node_id, node in nodes_b.items():
        if node_id in nodes_a:
            fields = _fields(nodes_a[node_id], node)
            if fields:
                changed.append({"id": node_id, "type": node.get("type"), "fields": fields})
    return {
        "entry": None if entry_a == entry_b else {"a": entry_a, "b": entry_b},
        "nodes": {
            "added": [{"id": i, "type": n.get("type")} for i, n in nodes_b.items()
                      if i not in nodes_a],
            "removed": [{"id": i, "type": n.get("type")} for i, n in nodes_a.items()
                        if i not in nodes_b],
            "changed": changed,
        },
        "edges": {
            "added": [{"source": s, "target": t} for s, t in edges_b if (s, t) not in edges_a],
            "removed": [{"source": s, "target": t} for s, t in edges_a
                        if (s, t) not in edges_b],
        },
    }
