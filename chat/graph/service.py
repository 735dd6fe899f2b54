"""Run one conversation turn through the graph and stream what happens as events.

``astream_turn`` stores the user's message (creating the conversation when asked),
runs the compiled graph on the conversation's thread (checkpointed in PostgreSQL, so
a turn after a restart resumes the thread) and yields JSON-serialisable events:

* ``{"type": "conversation", "id"}`` first;
* ``{"type": "node", "node", "phase": "start" | "end"}`` around each node;
* ``{"type": "memory", "hits"}``, ``{"type": "plugin", "plugin", "action", "detail",
  "phase"}``, ``{"type": "route", "rule", "target", "fallbacks", "explanation"}``;
* ``{"type": "token", "text"}`` as the model streams;
* ``{"type": "usage", "model", "prompt_tokens", "completion_tokens", "total_tokens"}``;
* workflows add ``{"type": "branch", "node", "to", "explanation"}`` (routers),
  ``{"type": "tool", "node", "status"}`` (HTTP tools), ``{"type": "interrupt", "id",
  "value"}`` (a human-approval stop) and ``{"type": "approval", "node", "action", …}``
  (its decision, on resume); their ``node`` events carry the node's ``kind``;
* last, ``{"type": "done", "message_id", "content", "model", …}``,
  ``{"type": "waiting", "conversation_id", "run_id", "interrupts"}`` (resume it with
  ``astream_resume``) or ``{"type": "error", "code", "message", "status"}`` (double
  texting: ``run_active``, ``interrupted``, ``rolled_back``, ``run_busy``,
  ``awaiting_approval``).

The graph streams in three modes: ``messages`` (tokens, through LangChain's callbacks),
``updates`` (node ends, and the final state) and ``custom`` (the rest).
"""

from __future__ import annotations

import asyncio
import json
import logging
import weakref
from collections.abc import AsyncIterator
from typing import Any

from asgiref.sync import sync_to_async
from django.utils import timezone
from django.utils.translation import gettext as _
from langchain_core.messages import AIMessageChunk
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import Command

from ..conversations import ConversationError, start_turn
from ..models import Conversation, DoubleTexting, RunStatus, WorkflowRun
from ..workflows import runs
from ..workflows.compiler import Plan, WorkflowError, compiled, resolve
from .checkpointer import get_saver
from .context import Context
from .graph import compile_graph
from .nodes import REPLY_TAG

logger = logging.getLogger(__name__)

STREAM_MODES = ["messages", "updates", "custom"]


_graphs: weakref.WeakKeyDictionary[AsyncPostgresSaver, CompiledStateGraph] = (
    weakref.WeakKeyDictionary())


async def get_graph() -> CompiledStateGraph:
    """The graph compiled with this event loop's checkpointer (once per checkpointer)."""
    saver = await get_saver()
    graph = _graphs.get(saver)
    if graph is None:
        graph = _graphs[saver] = compile_graph(saver)
    return graph


def thread_config(conversation_id: str) -> dict[str, Any]:
    return {"configurable": {"thread_id": conversation_id}}


async def graph_for(plan: Plan | None) -> CompiledStateGraph:
    """The compiled graph of a run: the workflow's, or the built-in conversation graph."""
    if plan is None:
        return await get_graph()
    return compiled(plan, await get_saver())


async def astream_turn(*, conversation_id: str | None, user: str, content: str | list[dict],
                       model: str, api_key: str = "", params: dict | None = None,
                       workflow: str | None = None,
                       double_texting: str | None = None) -> AsyncIterator[dict]:
    """One turn of ``user``'s conversation (a new one when ``conversation_id`` is None)
    with ``content`` as the user's message, as events (see the module's docstring).
    ``workflow`` (a slug) picks the workflow, and pins it to the conversation; else the
    conversation's runs, else the default workflow, else the built-in graph.
    ``double_texting`` overrides the workflow's policy for this send."""
    if not isinstance(model, str) or not model:
        yield _error("invalid_model", _("“model” must be a non-empty string."))
        return
    try:
        plan = await sync_to_async(resolve)(workflow, conversation_id)
    except WorkflowError as exc:
        yield _error(exc.code, exc.message, exc.status)
        return
    policy = double_texting or (plan.double_texting if plan else DoubleTexting.ENQUEUE)
    if policy not in DoubleTexting.values:
        yield _error("invalid_double_texting", _("“double_texting” must be one of %(names)s.")
                     % {"names": ", ".join(DoubleTexting.values)})
        return
    lease: runs.Lease | None = None
    started = None
    try:
        try:
            if conversation_id is not None:
                if plan is not None and await sync_to_async(_waiting_run)(conversation_id):
                    raise runs.RunRefused("awaiting_approval", _(
                        "A run of this conversation waits for approval: approve, edit or "
                        "reject it first."))
                lease = await runs.claim(conversation_id, policy)
            started = await sync_to_async(start_turn)(conversation_id, user, content, model)
            if lease is None:
                lease = await runs.claim(started.conversation_id, policy)
            if plan is not None and workflow:
                await sync_to_async(_pin)(started.conversation_id, plan.workflow_id)
        except runs.RunRefused as exc:
            yield _error(exc.code, exc.message, exc.status)
            return
        except ConversationError as exc:
            yield _error(exc.code, exc.message,
                         404 if exc.code.endswith("not_found") else 400)
            return
        yield {"type": "conversation", "id": started.conversation_id,
               "created": started.created}
        inputs = {"conversation_id": started.conversation_id, "user": user, "model": model,
                  "message": started.message, "api_key": api_key,
                  "params": dict(params or {})}
        async for event in _run(plan, inputs, lease):
            yield event
    finally:
        if lease is not None:
            if lease.info.get("cancelled_by") == DoubleTexting.ROLLBACK:
                await lease.hand_over(started.message["turn"] if started else None,
                                      lease.info.get("checkpoint_id"))
            await lease.release()


async def _run(plan: Plan | None, inputs: Any, lease: runs.Lease) -> AsyncIterator[dict]:
    """Drive the graph under ``lease`` (cancellable by a later send), as events."""
    conversation_id = lease.conversation_id
    config = thread_config(conversation_id)
    try:
        graph = await graph_for(plan)
        if lease.fork_from == "":  # rolled back to before the thread's first checkpoint
            await graph.checkpointer.adelete_thread(conversation_id)
        elif lease.fork_from:
            config = {"configurable": {**config["configurable"],
                                       "checkpoint_id": lease.fork_from}}
        # Where this run starts, should a later send roll it back (whatever its policy).
        head = lease.fork_from if lease.fork_from is not None else await _head(
            graph, conversation_id)
        await lease.note(checkpoint_id=head)
    except Exception:
        logger.exception("run of conversation %s could not start", conversation_id)
        yield _error("internal_error", _("The turn failed inside OpenClaw; the message is "
                                         "kept and can be sent again."), 500)
        return
    final: dict[str, Any] = {}
    interrupts: list[dict] = []
    try:
        async for event in _cancellable(graph, inputs, config, lease, final, interrupts):
            yield event
    except runs.RunCancelled as exc:
        code = "rolled_back" if exc.policy == DoubleTexting.ROLLBACK else "interrupted"
        yield _error(code, _("A newer message cancelled this run."), 409)
        return
    except Exception:
        logger.exception("turn of conversation %s failed", conversation_id)
        yield _error("internal_error", _("The turn failed inside OpenClaw; the message is "
                                         "kept and can be sent again."), 500)
        return
    if interrupts:
        run_id = await sync_to_async(record_waiting)(conversation_id, plan, inputs, interrupts)
        yield {"type": "waiting", "conversation_id": conversation_id, "run_id": run_id,
               "interrupts": interrupts}
        return
    yield _last(conversation_id, final)


async def _cancellable(graph: CompiledStateGraph, inputs: Any, config: dict,
                       lease: runs.Lease, final: dict[str, Any],
                       interrupts: list[dict]) -> AsyncIterator[dict]:
    """The graph's stream, run as a task that ``lease``'s watcher cancels when a later
    send interrupts or rolls back this run (``RunCancelled``)."""
    queue: asyncio.Queue = asyncio.Queue()
    cancelled = asyncio.Event()

    async def produce() -> None:
        try:
            # durability "async": each step's checkpoint is written while the next step
            # runs, not before it starts (the user's message is already stored by
            # start_turn, so a crash mid-turn loses no input).
            async for item in graph.astream(inputs, config, context=Context.from_settings(),
                                            stream_mode=STREAM_MODES, subgraphs=True,
                                            durability="async"):
                await queue.put(("item", item))
            await queue.put(("end", None))
        except asyncio.CancelledError:
            await queue.put(("cancelled", None))
            raise
        except Exception as exc:
            await queue.put(("failed", exc))

    producer = asyncio.create_task(produce())
    watcher = asyncio.create_task(lease.watch(producer, cancelled))
    try:
        while True:
            kind, item = await queue.get()
            if kind == "end":
                return
            if kind == "failed":
                raise item
            if kind == "cancelled":
                raise runs.RunCancelled(lease.info.get("cancelled_by",
                                                       DoubleTexting.INTERRUPT))
            namespace, mode, chunk = item
            for event in _events(mode, chunk, final if not namespace else {}, interrupts):
                yield event
    finally:
        for task in (producer, watcher):
            task.cancel()
        await asyncio.gather(producer, watcher, return_exceptions=True)


async def _head(graph: CompiledStateGraph, conversation_id: str) -> str:
    """The thread's latest checkpoint id ("" when it has none yet): its id alone, not
    the checkpoint (``aget_tuple`` would load and decrypt every channel)."""
    async with graph.checkpointer.conn.connection() as conn:
        cursor = await conn.execute(
            "SELECT checkpoint_id FROM checkpoints WHERE thread_id = %s AND "
            "checkpoint_ns = '' ORDER BY checkpoint_id DESC LIMIT 1", [conversation_id])
        row = await cursor.fetchone()
    return row["checkpoint_id"] if row else ""


def _waiting_run(conversation_id: str) -> bool:
    return WorkflowRun.objects.filter(conversation_id=conversation_id,
                                      status=RunStatus.WAITING).exists()


def _pin(conversation_id: str, workflow_id: int) -> None:
    Conversation.objects.filter(pk=conversation_id).update(workflow_id=workflow_id)


def record_waiting(conversation_id: str, plan: Plan | None, inputs: Any,
                   interrupts: list[dict]) -> int:
    """The run stopped at a human-approval node: list it as waiting (one per thread)."""
    user = inputs.get("user", "") if isinstance(inputs, dict) else ""
    run = (WorkflowRun.objects.filter(conversation_id=conversation_id,
                                      status=RunStatus.WAITING).first()
           or WorkflowRun(conversation_id=conversation_id, user=user))
    run.workflow_id = plan.workflow_id if plan else None
    run.user = run.user or user
    run.status = RunStatus.WAITING
    run.node = str((interrupts[0].get("value") or {}).get("node", ""))[:100] \
        if isinstance(interrupts[0].get("value"), dict) else ""
    run.interrupt = json.dumps(interrupts, ensure_ascii=False, default=str)
    run.save()
    return run.pk


async def astream_resume(*, conversation_id: str, user: str, resume: Any) -> AsyncIterator[dict]:
    """Resume the run of ``user``'s conversation that waits at a human-approval node
    with the approver's decision (``{"action": "approve"}``, ``{"action": "edit",
    "content": …}``, ``{"action": "reject", "reason": …}``), as events like a turn's:
    ``conversation``, the nodes that run, then ``done``, ``waiting`` (another
    approval) or ``error`` (``rejected``)."""
    run = await sync_to_async(_waiting_of)(conversation_id, user)
    if run is None:
        yield _error("not_waiting", _("No run of this conversation waits for approval."), 409)
        return
    try:
        plan = await sync_to_async(resolve)(None, conversation_id)
        lease = await runs.claim(conversation_id, DoubleTexting.REJECT)
    except (WorkflowError, runs.RunRefused) as exc:
        yield _error(exc.code, exc.message, exc.status)
        return
    try:
        yield {"type": "conversation", "id": conversation_id, "created": False}
        last: dict = {}
        async for event in _run(plan, Command(resume=resume), lease):
            last = event
            yield event
        await sync_to_async(_finish_run)(run.pk, last)
    finally:
        await lease.release()


async def arun_resume(*, conversation_id: str, user: str, resume: Any) -> dict:
    """``astream_resume`` without the stream: its last event."""
    last: dict = {}
    async for event in astream_resume(conversation_id=conversation_id, user=user,
                                      resume=resume):
        last = event
    return last


def _waiting_of(conversation_id: str, user: str) -> WorkflowRun | None:
    try:
        return WorkflowRun.objects.filter(conversation_id=conversation_id,
                                          conversation__user=user,
                                          status=RunStatus.WAITING).first()
    except (ValueError, TypeError):
        return None


def _finish_run(run_id: int, last: dict) -> None:
    kind = last.get("type")
    if kind == "waiting":
        return  # record_waiting updated the same row
    status = RunStatus.DONE if kind == "done" else RunStatus.ERROR
    WorkflowRun.objects.filter(pk=run_id).update(
        status=status, error="" if kind == "done" else str(last.get("code", ""))[:500],
        updated_at=timezone.now())


def waiting_runs(user: str | None = None) -> list[dict]:
    """The runs waiting for a person (a user's, or everyone's), newest first."""
    found = WorkflowRun.objects.filter(status=RunStatus.WAITING).select_related("workflow")
    if user is not None:
        found = found.filter(conversation__user=user)
    return [{"run_id": run.pk, "conversation_id": str(run.conversation_id),
             "workflow": run.workflow.slug if run.workflow else None, "node": run.node,
             "user": run.user, "interrupts": run.interrupt_value,
             "since": run.updated_at.isoformat()} for run in found]


def _events(mode: str, chunk: Any, final: dict[str, Any],
            interrupts: list[dict] | None = None) -> list[dict]:
    """The events for one item of the graph's stream; ``final`` gathers the updates
    (of the top graph: a subgraph's are passed an empty dict), ``interrupts`` the
    human-approval stops."""
    if mode == "custom":
        return [chunk] if isinstance(chunk, dict) else []
    if mode == "messages":
        message, metadata = chunk
        if (isinstance(message, AIMessageChunk) and isinstance(message.content, str)
                and message.content and (metadata.get("langgraph_node") == "generate"
                                         or REPLY_TAG in metadata.get("tags", ()))):
            return [{"type": "token", "text": message.content}]
        return []
    events = []
    for node, update in chunk.items():
        if node == "__interrupt__":
            for stop in update:
                found = {"id": stop.id, "value": stop.value}
                if interrupts is not None and found not in interrupts:
                    interrupts.append(found)
                    events.append({"type": "interrupt", **found})
            continue
        if isinstance(update, dict):
            final.update(update)
        events.append({"type": "node", "node": node, "phase": "end"})
    return events


def _last(conversation_id: str, final: dict[str, Any]) -> dict:
    error, reply = final.get("error"), final.get("reply") or {}
    if error:
        return {"type": "error", **error}
    if "content" not in reply:
        return _error("internal_error", _("The turn ended without an answer."), 500)
    # A workflow without a memory_write node answers without storing the reply.
    return {"type": "done", "conversation_id": conversation_id,
            "message_id": reply.get("message_id"), "content": reply["content"],
            "model": reply["model"], "models": reply.get("models", []),
            "finish_reason": reply.get("finish_reason"), "usage": reply.get("usage", {}),
            "route": {"rule": reply.get("rule"), "instance": reply.get("instance"),
                      "models_tried": reply.get("models_tried", [])},
            "overhead_ms": reply.get("overhead_ms")}


def _error(code: str, message: str, status: int = 400) -> dict:
    return {"type": "error", "code": code, "message": message, "status": status}


async def arun_turn(*, conversation_id: str | None, user: str, content: str | list[dict],
                    model: str, api_key: str = "", params: dict | None = None,
                    workflow: str | None = None, double_texting: str | None = None) -> dict:
    """``astream_turn`` without the stream: its last event (``done``, ``waiting`` or
    ``error``), with the conversation's id added."""
    last: dict = {}
    conversation = None
    async for event in astream_turn(conversation_id=conversation_id, user=user,
                                    content=content, model=model, api_key=api_key,
                                    params=params, workflow=workflow,
                                    double_texting=double_texting):
        if event["type"] == "conversation":
            conversation = event["id"]
        last = event
    return {**last, "conversation_id": conversation} if conversation else last
