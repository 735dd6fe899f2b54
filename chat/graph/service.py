"""Run one conversation turn through the graph and stream what happens as events.

``astream_turn`` stores the user's message (creating the conversation when asked),
runs the compiled graph on the conversation's thread (checkpointed in PostgreSQL, so
a turn after a restart resumes the thread) and yields JSON-serialisable events:

* ``{"type": "conversation", "id"}`` first;
* ``{"type": "node", "node", "phase": "start" | "end"}`` around each node;
* ``{"type": "memory", "hits"}``, ``{"type": "plugin", "plugin", "action", "detail",
  "phase"}``, ``{"type": "route", "rule", "target", "fallbacks", "explanation"}``;
* ``{"type": "token", "text"}`` as the model streams (``batched``: the tokens that
  queued up while the reader was busy come as one, their texts joined);
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

The graph streams ``updates`` (node ends, and the final state); the nodes write the
rest, tokens included, straight to the turn's queue (``context.event_sink``: the model
call writes each token as it arrives, with no LangChain callback or LangGraph stream
between the engine and the client), else to LangGraph's ``custom`` stream.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable
from typing import Any, cast

from asgiref.sync import sync_to_async
from django.conf import settings
from django.utils import timezone
from django.utils.translation import gettext as _
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from langgraph.types import Command, Durability, StreamMode

from core import shared_state
from core.redis_pipeline import RedisUnavailable
from plugins.chain import VERSION_KEY as PLUGINS_VERSION
from routing.rules import VERSION_KEY as RULES_VERSION

from ..conversations import ConversationError, astart_turn, window_key
from ..models import Conversation, DoubleTexting, RunStatus, WorkflowRun
from ..workflows import runs
from ..workflows.compiler import VERSION_KEY as WORKFLOWS_VERSION
from ..workflows.compiler import (
    Plan,
    WorkflowError,
    aresolve,
    aresolve_recorded,
    aresolve_version,
    compiled,
    pinned_to,
    remember_pin,
    workflows_changed,
)
from .checkpointer import expected_head, get_saver, head_key, pool_of
from .context import Context, event_sink
from .events import error_event, events_of, last_event, merged
from .graph import Graph, compile_graph
from .state import turn_start

logger = logging.getLogger(__name__)

STREAM_MODES: list[StreamMode] = ["updates", "custom"]


_graphs: weakref.WeakKeyDictionary[AsyncPostgresSaver, Graph] = (
    weakref.WeakKeyDictionary())


async def get_graph() -> Graph:
    """The graph compiled with this event loop's checkpointer (once per checkpointer)."""
    saver = await get_saver()
    graph = _graphs.get(saver)
    if graph is None:
        graph = _graphs[saver] = compile_graph(saver)
    return graph


def thread_config(conversation_id: str) -> RunnableConfig:
    return {"configurable": {"thread_id": conversation_id}}


async def graph_for(plan: Plan | None) -> Graph:
    """The compiled graph of a run: the workflow's, or the built-in conversation graph."""
    if plan is None:
        return await get_graph()
    return compiled(plan, await get_saver())


async def astream_turn(*, conversation_id: str | None, user: str, content: str | list[dict],
                       model: str, api_key: str = "", params: dict | None = None,
                       workflow: str | None = None, double_texting: str | None = None,
                       batched: bool = False, tools: list[str] | None = None,
                       durability: Durability | None = None, version: int | None = None
                       ) -> AsyncGenerator[dict, None]:
    """One turn of ``user``'s conversation (a new one when ``conversation_id`` is None)
    with ``content`` as the user's message, as events (see the module's docstring).
    ``workflow`` (a slug) picks the workflow, and pins it to the conversation; else the
    conversation's runs, else the default workflow, else the built-in graph.
    ``double_texting`` overrides the workflow's policy for this send. ``tools`` (names)
    are the tools the user enabled for the conversation; None keeps the thread's.
    ``durability`` overrides ``OPENCLAW_GRAPH_DURABILITY`` ("sync": a traced turn,
    a checkpoint after every node). ``version`` (with ``workflow``): run that saved
    version of the workflow, draft or published (the editor's Run tab)."""
    if not isinstance(model, str) or not model:
        yield error_event("invalid_model", _("“model” must be a non-empty string."))
        return
    lease = runs.Lease(str(conversation_id)) if conversation_id is not None else None
    added = await _read_ahead(conversation_id, lease)
    started = None
    head: str | asyncio.Future | None = None
    try:
        try:
            plan = await (aresolve_version(workflow, version) if workflow and version
                          else aresolve(workflow, conversation_id))
        except WorkflowError as exc:
            yield error_event(exc.code, exc.message, exc.status)
            return
        policy = double_texting or (plan.double_texting if plan else DoubleTexting.ENQUEUE)
        if policy not in DoubleTexting.values:
            yield error_event("invalid_double_texting", _(
                "“double_texting” must be one of %(names)s.")
                % {"names": ", ".join(DoubleTexting.values)})
            return
        try:
            if lease is not None:
                lease = await runs.claim(lease.conversation_id, policy, lease=lease,
                                         added=added)
                if lease.fork_from is None:
                    head = await _known_head(str(conversation_id), added)
            # A workflow's run waiting for approval refuses the send (nothing stored).
            started = await astart_turn(conversation_id, user, content, model,
                                        refuse_if_waiting=plan is not None)
            if lease is None:
                lease = await runs.claim(started.conversation_id, policy)
            if plan is not None and workflow and \
                    pinned_to(started.conversation_id) != plan.workflow_id:
                await sync_to_async(_pin)(started.conversation_id, plan.workflow_id,
                                          announce=not started.created)
                remember_pin(started.conversation_id, plan.workflow_id)
        except runs.RunRefused as exc:
            yield error_event(exc.code, exc.message, exc.status)
            return
        except ConversationError as exc:
            yield error_event(exc.code, exc.message, exc.status)
            return
        yield {"type": "conversation", "id": started.conversation_id,
               "created": started.created}
        inputs = {"conversation_id": started.conversation_id, "user": user, "model": model,
                  "message": started.message, "api_key": api_key,
                  "params": dict(params or {}), **turn_start(started.message)}
        if tools is not None:
            inputs["tools"] = list(tools)
        # A new conversation's thread has no checkpoint yet.
        async for event in run_graph(plan, inputs, lease, "" if started.created else head,
                                     batched, durability=durability):
            yield event
    finally:
        if isinstance(head, asyncio.Future) and not head.done():
            head.cancel()
            await asyncio.gather(head, return_exceptions=True)
        if lease is not None:
            if lease.info.get("cancelled_by") == DoubleTexting.ROLLBACK:
                await lease.hand_over(started.message["turn"] if started else None,
                                      lease.info.get("checkpoint_id"))
            await lease.release()


async def _read_ahead(conversation_id: str | None, lease: runs.Lease | None) -> bool | None:
    """One Redis round trip for what the turn's steps would each ask Redis: an attempt
    to take the conversation's ``lease`` — whether it was taken (None: not tried) —,
    the version tokens of the per-process copies they consult (workflows, plugins,
    routing rules), the conversation's cached window and its announced checkpoint.
    The values are kept in the turn's context (``shared_state.seen``): a change that commits
    while the turn runs applies from the next."""
    if not shared_state.available():
        return None
    names = [WORKFLOWS_VERSION, PLUGINS_VERSION, RULES_VERSION]
    commands: list[tuple] = []
    if conversation_id is not None and lease is not None:
        # The lease first: what is read after it, under it, no other run changes.
        commands.append(runs.claim_command(lease))
        names += [window_key(str(conversation_id)), head_key(str(conversation_id))]
    try:
        *taken, values = await shared_state.execute(
            [*commands, ("MGET", *(shared_state.full_key(name) for name in names))])
    except RedisUnavailable:
        return None  # each step asks again, and reports what it finds
    shared_state.remember(dict(zip(names, map(shared_state.loads, values), strict=True)))
    return taken[0] is not None if taken else None


async def run_graph(plan: Plan | None, inputs: Any, lease: runs.Lease,
                    head: str | Awaitable[str] | None = None, batched: bool = False, *,
                    durability: Durability | None = None,
                    final: dict[str, Any] | None = None, user: str = ""
                    ) -> AsyncIterator[dict]:
    """Drive the graph under ``lease`` (cancellable by a later send), as events: a
    turn's, a resume's, a continue's (``chat.workflows.steps``; input None).
    ``head``: the thread's latest checkpoint id ("": none), or its pending read;
    ``final``: the state the run starts from, when its input is None (a continue)."""
    conversation_id = lease.conversation_id
    config = thread_config(conversation_id)
    try:
        graph = await graph_for(plan)
        saver = cast(AsyncPostgresSaver, graph.checkpointer)  # graph_for compiles on get_saver()
        if lease.fork_from == "":  # rolled back to before the thread's first checkpoint
            await saver.adelete_thread(conversation_id)
        elif lease.fork_from:
            config = {"configurable": {**config["configurable"],
                                       "checkpoint_id": lease.fork_from}}
        # Where this run starts, should a later send roll it back (whatever its policy).
        if lease.fork_from is not None:
            head = lease.fork_from
        elif head is None:
            head = await _head(saver, conversation_id)
        elif not isinstance(head, str):
            head = await head
        lease.note(checkpoint_id=head)
        if plan is not None and plan.live_version is not None:
            # LangGraph copies it into the metadata of each checkpoint the run writes.
            config["metadata"] = {"workflow_version": plan.live_version}
    except Exception:
        logger.exception("run of conversation %s could not start", conversation_id)
        yield error_event("internal_error", _("The turn failed inside OpenClaw; the message "
                                              "is kept and can be sent again."), 500)
        return
    final = dict(final or {})
    interrupts: list[dict] = []
    try:
        # Sub-workflows' own events need LangGraph's subgraph streaming (it costs).
        nested = plan is not None and len(plan.definitions) > 1
        context = Context.from_settings(workflow=plan.slug if plan else "")
        # settings.py allows only LangGraph's own values (exit, async, sync).
        durability = durability or cast(Durability, settings.OPENCLAW_GRAPH_DURABILITY)
        async for event in _cancellable(graph, inputs, config, context, lease, final,
                                        interrupts, head, nested, batched, durability):
            yield event
    except runs.RunCancelled as exc:
        code = "rolled_back" if exc.policy == DoubleTexting.ROLLBACK else "interrupted"
        yield error_event(code, _("A newer message cancelled this run."), 409)
        return
    except Exception:
        logger.exception("turn of conversation %s failed", conversation_id)
        yield error_event("internal_error", _("The turn failed inside OpenClaw; the message "
                                              "is kept and can be sent again."), 500)
        return
    if interrupts:
        run_id = await sync_to_async(record_waiting)(conversation_id, plan, inputs, interrupts,
                                                     user)
        yield {"type": "waiting", "conversation_id": conversation_id, "run_id": run_id,
               "interrupts": interrupts}
        return
    yield last_event(conversation_id, final)


async def _cancellable(graph: Graph, inputs: Any, config: RunnableConfig, context: Context,
                       lease: runs.Lease, final: dict[str, Any], interrupts: list[dict],
                       head: str, nested: bool, batched: bool,
                       durability: Durability) -> AsyncIterator[dict]:
    """The graph's stream, run as a task that ``lease``'s watcher cancels when a later
    send interrupts or rolls back this run (``RunCancelled``). ``head`` is the thread's
    latest checkpoint as read under the lease: the saver may answer it from memory."""
    queue: asyncio.Queue = asyncio.Queue()
    cancelled = asyncio.Event()
    loop, owner = asyncio.get_running_loop(), threading.get_ident()

    def sink(event: Any) -> None:
        """The nodes' events, straight into the queue (``context.event_sink``)."""
        if threading.get_ident() == owner:
            queue.put_nowait(("event", event))
        else:  # a node run in a thread
            loop.call_soon_threadsafe(queue.put_nowait, ("event", event))

    async def produce() -> None:
        expected_head.set(head)  # this task's context only (and the nodes' it starts)
        event_sink.set(sink)
        try:
            # The user's message is stored by start_turn and the answer by the
            # remember node, so a crash mid-turn loses no input whatever the durability
            # (OPENCLAW_GRAPH_DURABILITY; "exit": one checkpoint per run).
            async for item in graph.astream(inputs, config, context=context,
                                            stream_mode=STREAM_MODES, subgraphs=nested,
                                            durability=durability):
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
            # What queued up meanwhile is taken at once (``batched``: its tokens merged).
            events: list[dict] = []
            while kind in ("event", "item"):
                if kind == "event":
                    if isinstance(item, dict):
                        events.append(item)
                else:
                    namespace, mode, chunk = item if nested else ((), *item)
                    events += events_of(mode, chunk, final if not namespace else {}, interrupts)
                if queue.empty():
                    break
                kind, item = queue.get_nowait()
            for event in merged(events) if batched and len(events) > 1 else events:
                yield event
            if kind in ("event", "item"):
                continue
            if kind == "end":
                return
            if kind == "failed":
                raise item
            if kind == "cancelled":
                raise runs.RunCancelled(lease.info.get("cancelled_by",
                                                       DoubleTexting.INTERRUPT))
    finally:
        for task in (producer, watcher):
            task.cancel()
        await asyncio.gather(producer, watcher, return_exceptions=True)


async def _head(saver: AsyncPostgresSaver, conversation_id: str) -> str:
    """The thread's latest checkpoint id ("" when it has none yet): its id alone, not
    the checkpoint (``aget_tuple`` would load and decrypt every channel)."""
    async with pool_of(saver).connection() as conn:
        cursor = await conn.execute(
            "SELECT checkpoint_id FROM checkpoints WHERE thread_id = %s AND "
            "checkpoint_ns = '' ORDER BY checkpoint_id DESC LIMIT 1", [conversation_id])
        row = await cursor.fetchone()
    return row["checkpoint_id"] if row else ""


async def _known_head(conversation_id: str, leased_ahead: bool | None) -> str | asyncio.Future:
    """The thread's latest checkpoint id: the one announced in Redis when this process
    keeps that very checkpoint and the announcement was read under the lease (see
    ``checkpointer``); else a read from the database, started now."""
    saver = await get_saver()
    announced = shared_state.seen(head_key(conversation_id)) if leased_ahead else None
    if announced is not None and announced == saver.kept(conversation_id):
        return announced
    return asyncio.ensure_future(_head(saver, conversation_id))


def _pin(conversation_id: str, workflow_id: int, announce: bool = True) -> None:
    """Pin the conversation to the workflow; a changed pin makes every process re-read
    pins, unless ``announce`` is false (a conversation this turn created: no process
    has read its pin yet)."""
    if Conversation.objects.filter(pk=conversation_id).exclude(
            workflow_id=workflow_id).update(workflow_id=workflow_id) and announce:
        workflows_changed()


def record_waiting(conversation_id: str, plan: Plan | None, inputs: Any,
                   interrupts: list[dict], user: str = "") -> int:
    """The run stopped at a human-approval node: list it as waiting (one per thread),
    with the workflow's version it ran."""
    user = inputs.get("user", "") if isinstance(inputs, dict) else user
    run = (WorkflowRun.objects.filter(conversation_id=conversation_id,
                                      status=RunStatus.WAITING).first()
           or WorkflowRun(conversation_id=conversation_id, user=user))
    run.workflow_id = plan.workflow_id if plan else None
    run.workflow_version = plan.live_version if plan else None
    run.user = run.user or user
    run.status = RunStatus.WAITING
    run.node = str((interrupts[0].get("value") or {}).get("node", ""))[:100] \
        if isinstance(interrupts[0].get("value"), dict) else ""
    run.interrupt = json.dumps(interrupts, ensure_ascii=False, default=str)
    run.save()
    return run.pk


async def astream_resume(*, conversation_id: str, user: str, resume: Any,
                         batched: bool = False, durability: Durability | None = None
                         ) -> AsyncGenerator[dict, None]:
    """Resume the run of ``user``'s conversation that waits at a human-approval node
    with the approver's decision (``{"action": "approve"}``, ``{"action": "edit",
    "content": …}``, ``{"action": "reject", "reason": …}``), as events like a turn's:
    ``conversation``, the nodes that run, then ``done``, ``waiting`` (another
    approval) or ``error`` (``rejected``). The run goes on at the version it recorded
    (a draft the editor ran, or a version published since it stopped)."""
    run = await sync_to_async(_waiting_of)(conversation_id, user)
    if run is None:
        yield error_event("not_waiting", _("No run of this conversation waits for approval."), 409)
        return
    try:
        plan = await aresolve(None, conversation_id)
        if plan is not None and run.workflow_id == plan.workflow_id:
            plan = await aresolve_recorded(plan, run.workflow_version)
        lease = await runs.claim(conversation_id, DoubleTexting.REJECT)
    except (WorkflowError, runs.RunRefused) as exc:
        yield error_event(exc.code, exc.message, exc.status)
        return
    try:
        yield {"type": "conversation", "id": conversation_id, "created": False}
        last: dict = {}
        async for event in run_graph(plan, Command(resume=resume), lease, batched=batched,
                                     durability=durability, user=user):
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


async def arun_turn(*, conversation_id: str | None, user: str, content: str | list[dict],
                    model: str, api_key: str = "", params: dict | None = None,
                    workflow: str | None = None, double_texting: str | None = None,
                    tools: list[str] | None = None) -> dict:
    """``astream_turn`` without the stream: its last event (``done``, ``waiting`` or
    ``error``), with the conversation's id added."""
    last: dict = {}
    conversation = None
    async for event in astream_turn(conversation_id=conversation_id, user=user,
                                    content=content, model=model, api_key=api_key,
                                    params=params, workflow=workflow,
                                    double_texting=double_texting, tools=tools):
        if event["type"] == "conversation":
            conversation = event["id"]
        last = event
    return {**last, "conversation_id": conversation} if conversation else last
