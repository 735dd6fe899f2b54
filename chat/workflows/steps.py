"""A workflow's runs step by step, for the editor's run panel: the runs of a workflow,
the state before and after each node of a conversation's thread, and time travel from
any of those steps.

* ``list_runs`` — a user's conversations pinned to a workflow, with the version each
  ran (the ``workflow_version`` its checkpoints record).
* ``asteps`` — the thread's checkpoints, oldest first, each with the node whose writes
  made it, the state before it (``input``), what it changed (``output``) and the
  approvals the run stopped for after it (``interrupts``). A turn sent with ``trace``
  (durability "sync") has one checkpoint per node.
* ``areplay`` — a branch from one checkpoint, inside a turn or not: a new conversation
  with the messages through that checkpoint's turn and a copy of THAT checkpoint,
  addressed to the branch (its ``conversation_id`` and message ids), so that
  ``astream_continue`` runs the graph on from it (input None: LangGraph's time
  travel), with the turn's machinery (``chat.graph.service.run_graph``).
"""

from __future__ import annotations

import dataclasses
import datetime
import math
import uuid
from collections.abc import AsyncGenerator
from typing import Any, cast

from asgiref.sync import sync_to_async
from django.db import connection, transaction
from django.utils.translation import gettext as _
from langchain_core.messages import BaseMessage
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import Checkpoint, CheckpointMetadata
from langgraph.types import StateSnapshot

from ..conversations import ConversationError
from ..graph.checkpointer import get_saver
from ..graph.events import error_event
from ..graph.graph import Graph
from ..graph.service import graph_for, run_graph, thread_config
from ..models import Conversation, DoubleTexting, Message, Role, RunStatus, Workflow
from . import runs
from .compiler import Plan, WorkflowError, aresolve, aresolve_recorded
from .history import completed_turn

RUNS_LISTED = 20
STEPS_LISTED = 200  # the newest steps of a thread that a listing shows
TEXT_CHARS = 2000  # longer strings in a step's state are cut
TITLE_CHARS = 200
ROLES = {"ai": "assistant", "human": "user", "system": "system", "tool": "tool"}


def owned(conversation_id: Any, user: str) -> Conversation:
    """``user``'s conversation, or ``ConversationError`` (404)."""
    try:
        return Conversation.objects.get(pk=uuid.UUID(str(conversation_id)), user=user)
    except (Conversation.DoesNotExist, ValueError, TypeError, AttributeError):
        raise ConversationError("conversation_not_found", _(
            "No conversation “%(id)s” for this user.") % {"id": conversation_id}) from None


# --- runs ------------------------------------------------------------------------------


def list_runs(slug: str, user: str) -> list[dict[str, Any]]:
    """``user``'s conversations pinned to the workflow ``slug``, newest first; each
    one's ``workflow_version`` is that of its latest run: the one its latest checkpoint
    records, else its waiting run's (None before versions were recorded).
    ``WorkflowError`` (404) for an unknown workflow."""
    workflow = Workflow.objects.filter(slug=slug).first()
    if workflow is None:
        raise WorkflowError("workflow_not_found", _("No workflow “%(slug)s”.")
                            % {"slug": slug}, 404)
    rows = list(Conversation.objects.filter(user=user, workflow=workflow)
                .order_by("-updated_at")[:RUNS_LISTED])
    versions = dict(workflow.runs.filter(conversation__in=rows)
                    .exclude(workflow_version=None).order_by("created_at")
                    .values_list("conversation_id", "workflow_version"))
    versions.update(_checkpointed_versions([str(c.pk) for c in rows]))
    return [{"conversation_id": str(c.pk), "title": c.title or _("New chat"),
             "created_at": c.created_at.isoformat(), "updated_at": c.updated_at.isoformat(),
             "turns": c.turns, "workflow_version": versions.get(c.pk),
             "parent_id": str(c.parent_id) if c.parent_id else None} for c in rows]


def _checkpointed_versions(threads: list[str]) -> dict[uuid.UUID, int]:
    """The ``workflow_version`` of each thread's latest checkpoint that records one
    (no table yet: no run has been checkpointed)."""
    if not threads:
        return {}
    with connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass('checkpoints') IS NOT NULL")
        if not cursor.fetchone()[0]:
            return {}
        cursor.execute(
            "SELECT DISTINCT ON (thread_id) thread_id, metadata->>'workflow_version' "
            "FROM checkpoints WHERE thread_id = ANY(%s) AND checkpoint_ns = '' AND "
            "metadata ? 'workflow_version' ORDER BY thread_id, checkpoint_id DESC", [threads])
        found = cursor.fetchall()
    return {uuid.UUID(thread): int(version) for thread, version in found
            if isinstance(version, str) and version.isdigit()}


# --- steps -----------------------------------------------------------------------------


def json_safe(value: Any) -> Any:
    """``value`` as JSON: LangChain messages as ``{role, content, tool_calls}``, strings
    cut at ``TEXT_CHARS``, anything else unknown as its text."""
    if isinstance(value, str):
        return value if len(value) <= TEXT_CHARS else value[:TEXT_CHARS - 1] + "…"
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, BaseMessage):
        return {"role": ROLES.get(value.type, value.type), "content": json_safe(value.content),
                "tool_calls": json_safe(getattr(value, "tool_calls", None) or [])}
    if isinstance(value, dict):
        return {str(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [json_safe(item) for item in value]
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return json_safe(dataclasses.asdict(value))
    return json_safe(str(value))


def _id(config: Any) -> str | None:
    return ((config or {}).get("configurable") or {}).get("checkpoint_id")


def changed(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """The keys whose (JSON-safe) values differ, with their new values."""
    return {key: value for key, value in after.items() if before.get(key) != value}


async def asteps(*, conversation_id: str, user: str, turn: int | None = None
                 ) -> list[dict[str, Any]]:
    """``user``'s conversation's steps, oldest first (the newest ``STEPS_LISTED``;
    ``turn``: that turn's only). A step is a checkpoint, but for the ones LangGraph
    writes before a run's input is applied (they repeat the previous step's state)."""
    await sync_to_async(owned)(conversation_id, user)
    plan = await aresolve(None, conversation_id)
    graph = await graph_for(plan)
    snapshots = await _history(graph, conversation_id)
    newest = next(iter(snapshots.values()), None)
    if newest is not None:  # read by the graph of the version the latest run ran
        recorded = await aresolve_recorded(plan, (newest.metadata or {}).get(
            "workflow_version"))
        if recorded is not plan:
            graph = await graph_for(recorded)
            snapshots = await _history(graph, conversation_id)
    listed = [s for s in snapshots.values() if (s.metadata or {}).get("source") != "input"
              and (turn is None or (s.values or {}).get("message", {}).get("turn") == turn)]
    listed = listed[:STEPS_LISTED][::-1]
    safe: dict[str, dict[str, Any]] = {}

    def values_of(snapshot: StateSnapshot) -> dict[str, Any]:
        key = _id(snapshot.config) or ""
        if key not in safe:
            safe[key] = json_safe(dict(snapshot.values or {}))
        return safe[key]

    steps = []
    for snapshot in listed:
        parent_id = _id(snapshot.parent_config)
        parent = snapshots.get(parent_id or "")
        if parent is None and snapshot.parent_config:
            parent = snapshots[parent_id or ""] = await graph.aget_state(snapshot.parent_config)
        steps.append(_step(snapshot, parent, values_of))
    return steps


async def _history(graph: Graph, conversation_id: str) -> dict[str, StateSnapshot]:
    """The thread's newest snapshots by checkpoint id, newest first."""
    return {_id(snapshot.config) or "": snapshot async for snapshot in graph.aget_state_history(
        thread_config(conversation_id), limit=STEPS_LISTED * 2)}


async def recorded_state(plan: Plan | None, config: RunnableConfig
                         ) -> tuple[Plan | None, StateSnapshot]:
    """The thread's latest state, read by the graph of the workflow's version that its
    checkpoint records (``workflow_version``: a draft the editor ran, an older
    published version), with that version's plan; ``plan`` (the live one) when it is
    that version."""
    state = await (await graph_for(plan)).aget_state(config)
    recorded = await aresolve_recorded(plan, (state.metadata or {}).get("workflow_version"))
    if recorded is not plan:
        state = await (await graph_for(recorded)).aget_state(config)
    return recorded, state


def _step(snapshot: StateSnapshot, parent: StateSnapshot | None, values_of) -> dict[str, Any]:
    metadata = snapshot.metadata or {}
    before = values_of(parent) if parent is not None else {}
    after = values_of(snapshot)
    ran = [name for name in (parent.next if parent is not None else ()) if name != "__start__"]
    return {"checkpoint_id": _id(snapshot.config), "parent_id": _id(snapshot.parent_config),
            "step": metadata.get("step"), "source": metadata.get("source"),
            "turn": (after.get("message") or {}).get("turn"),
            "node": ran[0] if ran else None, "next": list(snapshot.next),
            "created_at": snapshot.created_at,
            "workflow_version": metadata.get("workflow_version"),
            "interrupts": [json_safe(stop.value) for stop in snapshot.interrupts],
            "input": before, "output": changed(before, after)}


# --- replay ----------------------------------------------------------------------------


async def areplay(*, conversation_id: str, user: str, checkpoint_id: Any) -> dict[str, Any]:
    """A branch of ``user``'s conversation from its checkpoint ``checkpoint_id``: the
    new conversation, the checkpoint it starts at and the nodes that would run next
    (``astream_continue`` runs them). The parent is left as it was."""
    source = await sync_to_async(owned)(conversation_id, user)
    if not isinstance(checkpoint_id, str) or not checkpoint_id or len(checkpoint_id) > 64:
        raise ConversationError("invalid_checkpoint", _("“checkpoint_id” must be the id of "
                                                        "one of the conversation's steps."))
    saver = await get_saver()
    config = thread_config(str(source.pk))
    config["configurable"]["checkpoint_id"] = checkpoint_id
    found = await saver.aget_tuple(config)
    if found is None or (found.metadata or {}).get("source") == "input":
        raise ConversationError("checkpoint_not_found", _(
            "No step “%(id)s” in this conversation.") % {"id": checkpoint_id})
    values = found.checkpoint["channel_values"]
    branch, ids = await sync_to_async(copy_through)(source, values, checkpoint_id)
    checkpoint = {**found.checkpoint, "channel_values": readdressed(values, branch, ids)}
    metadata = {**found.metadata, "source": "fork",
                "forked_from": f"{source.pk}:{checkpoint_id}"}
    await saver.aput({"configurable": {"thread_id": branch, "checkpoint_ns": ""}},
                     cast(Checkpoint, checkpoint), cast(CheckpointMetadata, metadata),
                     found.checkpoint["channel_versions"])
    _plan, state = await recorded_state(await aresolve(None, branch), thread_config(branch))
    return {"conversation_id": branch, "checkpoint_id": checkpoint_id,
            "next": list(state.next)}


def copy_through(source: Conversation, values: dict[str, Any], checkpoint_id: str
                 ) -> tuple[str, dict[int, int]]:
    """The branch's conversation with copies of the source's messages through the
    checkpoint's turn (of a turn it stopped inside, the user's message only); the
    branch's id and the copies' ids by the originals'."""
    turn = int((values.get("message") or {}).get("turn") or 0)
    done = completed_turn(values) == turn
    kept = [m for m in source.messages.order_by("turn", "id")
            if m.turn < turn or (m.turn == turn and (done or m.role == Role.USER))]
    with transaction.atomic():
        branch = Conversation.objects.create(
            user=source.user, owner_id=source.owner_id, model=source.model,
            title=(_("%(title)s (branch)") % {"title": source.title})[:TITLE_CHARS],
            workflow_id=source.workflow_id, turns=turn, topic_vector=source.topic_vector,
            parent=source, forked_at_turn=turn, forked_from_checkpoint=checkpoint_id)
        copies = Message.objects.bulk_create([
            Message(conversation=branch, turn=m.turn, role=m.role, content=m.content,
                    content_format=m.content_format, model=m.model,
                    prompt_tokens=m.prompt_tokens, completion_tokens=m.completion_tokens,
                    latency_ms=m.latency_ms, in_context=m.in_context, created_at=m.created_at)
            for m in kept])
    return str(branch.pk), {m.pk: c.pk for m, c in zip(kept, copies, strict=True)}


def readdressed(values: dict[str, Any], branch: str, ids: dict[int, int]) -> dict[str, Any]:
    """A checkpoint's values for the branch: its conversation, and the branch's copies
    of the messages they name (the nodes still to run store and read by these)."""

    def moved(message: Any) -> Any:
        if isinstance(message, dict) and message.get("id") in ids:
            return {**message, "id": ids[message["id"]]}
        return message

    out = {**values, "conversation_id": branch}
    if "message" in values:
        out["message"] = moved(values["message"])
    if isinstance(values.get("window"), list):
        out["window"] = [moved(message) for message in values["window"]]
    reply = values.get("reply")
    if isinstance(reply, dict) and reply.get("message_id") in ids:
        out["reply"] = {**reply, "message_id": ids[reply["message_id"]]}
    return out


# --- continue --------------------------------------------------------------------------


def _waiting(conversation_id: str) -> bool:
    return Conversation.objects.filter(pk=conversation_id, runs__status=RunStatus.WAITING
                                       ).exists()


async def astream_continue(*, conversation_id: str, user: str, batched: bool = False
                           ) -> AsyncGenerator[dict, None]:
    """Run ``user``'s conversation's graph on from its latest checkpoint (a replayed
    branch's copy), as a turn's events (``chat.graph.service``), checkpointing after
    every node: ``conversation``, the nodes, then ``done``, ``waiting`` or ``error``
    (``nothing_to_continue`` when no node is pending)."""
    try:
        await sync_to_async(owned)(conversation_id, user)
        if await sync_to_async(_waiting)(conversation_id):
            raise ConversationError("awaiting_approval", _(
                "A run of this conversation waits for approval: approve, edit or reject "
                "it first."), 409)
        plan = await aresolve(None, conversation_id)
        lease = await runs.claim(conversation_id, DoubleTexting.REJECT)
    except (ConversationError, WorkflowError, runs.RunRefused) as exc:
        yield error_event(exc.code, exc.message, exc.status or 400)
        return
    try:
        # On the version the copied step's checkpoint records (a draft's run: the draft).
        plan, state = await recorded_state(plan, thread_config(conversation_id))
        if not state.next:
            yield error_event("nothing_to_continue", _(
                "Nothing is left to run here: the run ended at this step."), 409)
            return
        yield {"type": "conversation", "id": conversation_id, "created": False}
        async for event in run_graph(plan, None, lease, batched=batched, durability="sync",
                                     final=dict(state.values or {}), user=user):
            yield event
    finally:
        await lease.release()
