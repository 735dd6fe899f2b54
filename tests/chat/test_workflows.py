"""Admin-defined workflows on the real PostgreSQL (checkpoints) and Redis: compiling and
running a graph with a condition, human approval (interrupt / resume), recompiling an
edited workflow without a restart, refusing invalid graphs with the node named, and
LangGraph's Mermaid drawing."""

from __future__ import annotations

from pathlib import Path

import pytest
from asgiref.sync import sync_to_async
from django.core.exceptions import ValidationError
from django.core.management import call_command

from chat.graph import checkpointer, service
from chat.graph.service import (
    arun_resume,
    arun_turn,
    astream_resume,
    astream_turn,
    waiting_runs,
)
from chat.models import Conversation, Message, RunStatus, Workflow, WorkflowRun
from chat.workflows.validation import problems
from routing.models import ModelEndpoint

pytestmark = [pytest.mark.django_db(transaction=True),
              pytest.mark.usefixtures("no_recall", "closed_saver")]
FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "50_workflows.json"


@pytest.fixture
def models(db, openai_server):
    """``echo`` (the echo engine) and ``recorded`` (the loopback server: "echo: …")."""
    ModelEndpoint.objects.create(name="echo", engine="echo")
    ModelEndpoint.objects.create(name="recorded", engine="openai", upstream_model="echo",
                                 endpoint_url=openai_server.url)
    return openai_server


def node(node_id: str, kind: str, **config) -> dict:
    return {"id": node_id, "type": kind, "config": config}


def workflow(slug: str, nodes: list[dict], edges: list[tuple[str, str]] = (),
             **fields) -> Workflow:
    """A workflow saved as the admin saves it: validated first."""
    made = Workflow(slug=slug, name=slug, definition={
        "entry": nodes[0]["id"], "nodes": nodes,
        "edges": [{"source": s, "target": t} for s, t in edges]}, **fields)
    made.full_clean()
    made.save()
    return made


WEATHER = {"field": "content", "op": "icontains", "value": "weather"}


def triage() -> Workflow:
    """Three nodes: a condition sends weather questions to the loopback model and the
    rest to the echo engine."""
    return workflow("triage", [
        node("check", "condition", when=WEATHER, then="forecast", **{"else": "chat"}),
        node("forecast", "llm", model="recorded", prompt="You forecast. User: {{ user }}"),
        node("chat", "llm", model="echo"),
    ])


async def collect(**kwargs) -> list[dict]:
    return [event async for event in astream_turn(**kwargs)]


def started(events: list[dict]) -> list[str]:
    return [e["node"] for e in events if e["type"] == "node" and e["phase"] == "start"]


async def test_three_node_workflow_branches_on_its_condition(models):
    await sync_to_async(triage)()

    weather = await collect(conversation_id=None, user="ann", content="what weather today",
                            model="any", workflow="triage")
    other = await collect(conversation_id=None, user="ann", content="tell me a joke",
                          model="any", workflow="triage")

    # then each message took its branch, streamed its tokens and answered
    assert started(weather) == ["check", "forecast"]
    assert started(other) == ["check", "chat"]
    branch = next(e for e in weather if e["type"] == "branch")
    assert branch["to"] == "forecast" and "yes" in branch["explanation"][0]
    assert weather[-1]["type"] == "done" and weather[-1]["model"] == "recorded"
    assert weather[-1]["content"] == "echo: what weather today"
    assert "".join(e["text"] for e in weather if e["type"] == "token") == \
        "echo: what weather today"
    assert other[-1]["content"] == "tell me a joke" and other[-1]["model"] == "echo"
    # the prompt template went to the model as a system message
    assert models.requests[-1].body["messages"][0] == {
        "role": "system", "content": "You forecast. User: ann"}
    # the conversation remembers its workflow: the next turn runs it without naming it
    conversation = weather[0]["id"]
    assert (await Conversation.objects.select_related("workflow").aget(pk=conversation)
            ).workflow.slug == "triage"
    again = await arun_turn(conversation_id=conversation, user="ann",
                            content="and the weather tomorrow", model="any")
    assert again["model"] == "recorded"


async def test_edited_workflow_is_recompiled_on_the_next_run(models):
    flow = await sync_to_async(triage)()
    first = await arun_turn(conversation_id=None, user="bo", content="weather?", model="x",
                            workflow="triage")
    assert first["model"] == "recorded"

    # when the admin points the weather branch at the echo engine
    flow.definition["nodes"][1]["config"]["model"] = "echo"
    await sync_to_async(flow.full_clean)()
    await sync_to_async(flow.save)()

    # then the same process runs the new version (no restart)
    second = await arun_turn(conversation_id=None, user="bo", content="weather?", model="x",
                             workflow="triage")
    assert flow.version == 2 and second["model"] == "echo"


def reviewed() -> Workflow:
    """An answer a person approves before it is stored."""
    return workflow("reviewed", [
        node("answer", "llm", model="echo"),
        node("review", "human_approval", prompt="Send this answer?"),
        node("store", "memory_write"),
    ], [("answer", "review"), ("review", "store")])


async def start_reviewed_turn(user: str, text: str) -> tuple[str, list[dict]]:
    events = await collect(conversation_id=None, user=user, content=text, model="echo",
                           workflow="reviewed")
    return events[0]["id"], events


async def test_run_waits_at_human_approval_and_is_listed(models):
    await sync_to_async(reviewed)()

    conversation, events = await start_reviewed_turn("cy", "draft me a reply")

    # then the run stopped before storing anything, and is listed as waiting
    waiting = events[-1]
    assert waiting["type"] == "waiting" and waiting["conversation_id"] == conversation
    stop = next(e for e in events if e["type"] == "interrupt")
    assert stop["value"] == {"node": "review", "prompt": "Send this answer?",
                             "reply": "draft me a reply", "message": "draft me a reply"}
    listed = await sync_to_async(waiting_runs)("cy")
    assert [(r["conversation_id"], r["node"], r["workflow"]) for r in listed] == [
        (conversation, "review", "reviewed")]
    assert listed[0]["interrupts"][0]["value"]["prompt"] == "Send this answer?"
    assert await Message.objects.filter(conversation_id=conversation,
                                        role="assistant").acount() == 0
    # a new message is refused while the run waits
    refused = await arun_turn(conversation_id=conversation, user="cy", content="hello?",
                              model="echo")
    assert refused["code"] == "awaiting_approval" and refused["status"] == 409


async def test_approve_resumes_and_stores_the_answer(models):
    await sync_to_async(reviewed)()
    conversation, _events = await start_reviewed_turn("dee", "approve me")

    events = [e async for e in astream_resume(conversation_id=conversation, user="dee",
                                              resume={"action": "approve"})]

    done = events[-1]
    assert done["type"] == "done" and done["content"] == "approve me"
    assert started(events) == ["review", "store"]
    stored = await Message.objects.aget(pk=done["message_id"])
    assert stored.role == "assistant" and stored.content == "approve me"
    run = await WorkflowRun.objects.aget(conversation_id=conversation)
    assert run.status == RunStatus.DONE
    assert await sync_to_async(waiting_runs)("dee") == []


async def test_a_refused_send_leaves_the_waiting_run_resumable(models):
    # given a run waiting for approval
    await sync_to_async(reviewed)()
    conversation, _events = await start_reviewed_turn("fay", "hold this one")
    saver = await checkpointer.get_saver()
    before = await saver.aget_tuple({"configurable": {"thread_id": conversation}})

    # when sends are refused (the graph starts while the message is stored, so these
    # runs are cancelled: they must write no checkpoint over the waiting one)
    for text in ("hello?", "anyone there?"):
        refused = await arun_turn(conversation_id=conversation, user="fay", content=text,
                                  model="echo")
        assert refused["code"] == "awaiting_approval"

    # then the thread's head is still the interrupted checkpoint, and approving works
    after = await saver.aget_tuple({"configurable": {"thread_id": conversation}})
    assert after.config["configurable"]["checkpoint_id"] == \
        before.config["configurable"]["checkpoint_id"]
    assert await Message.objects.filter(conversation_id=conversation).acount() == 1
    done = await arun_resume(conversation_id=conversation, user="fay",
                             resume={"action": "approve"})
    assert done["type"] == "done" and done["content"] == "hold this one"


async def test_a_send_to_a_stranger_conversation_writes_no_checkpoint(models):
    from uuid import uuid4

    missing = str(uuid4())
    refused = await arun_turn(conversation_id=missing, user="gus", content="hi",
                              model="echo")

    assert refused["code"] == "conversation_not_found" and refused["status"] == 404
    saver = await checkpointer.get_saver()
    assert await saver.aget_tuple({"configurable": {"thread_id": missing}}) is None


async def test_edit_resumes_with_the_approvers_text(models):
    await sync_to_async(reviewed)()
    conversation, _events = await start_reviewed_turn("eli", "rough draft")

    done = await arun_resume(conversation_id=conversation, user="eli",
                             resume={"action": "edit", "content": "polished answer"})

    assert done["type"] == "done" and done["content"] == "polished answer"
    assert (await Message.objects.aget(pk=done["message_id"])).content == "polished answer"


async def test_reject_ends_the_run_without_an_answer(models):
    await sync_to_async(reviewed)()
    conversation, _events = await start_reviewed_turn("fay", "bad idea")

    rejected = await arun_resume(conversation_id=conversation, user="fay",
                                 resume={"action": "reject", "reason": "off topic"})

    assert rejected == {"type": "error", "code": "rejected", "message": "off topic",
                        "status": 409}
    assert await Message.objects.filter(conversation_id=conversation,
                                        role="assistant").acount() == 0
    run = await WorkflowRun.objects.aget(conversation_id=conversation)
    assert run.status == RunStatus.ERROR and run.error == "rejected"
    # the conversation goes on
    after = await arun_turn(conversation_id=conversation, user="fay", content="next",
                            model="echo")
    assert after["type"] == "waiting"


async def test_resume_of_a_run_that_does_not_wait_is_refused(models):
    await sync_to_async(triage)()
    done = await arun_turn(conversation_id=None, user="gus", content="hi", model="x",
                           workflow="triage")

    refused = await arun_resume(conversation_id=done["conversation_id"], user="gus",
                                resume="approve")
    stranger = await arun_resume(conversation_id=done["conversation_id"], user="eve",
                                 resume="approve")

    assert refused["code"] == "not_waiting" and stranger["code"] == "not_waiting"


async def test_sub_workflow_runs_inside_its_parent(models):
    await sync_to_async(triage)()
    await sync_to_async(workflow)("outer", [
        node("inner", "sub_workflow", workflow="triage"),
        node("store", "memory_write"),
    ], [("inner", "store")])

    events = await collect(conversation_id=None, user="hal", content="weather here?",
                           model="x", workflow="outer")

    assert started(events) == ["check", "forecast", "store"]
    assert events[-1]["content"] == "echo: weather here?" and events[-1]["message_id"]
    assert [e["text"] for e in events if e["type"] == "token"]


# --- validation ------------------------------------------------------------------------


def refused(definition: dict) -> list[str]:
    flow = Workflow(slug="bad", name="bad", definition=definition)
    with pytest.raises(ValidationError) as caught:
        flow.full_clean()
    return caught.value.message_dict["definition"]


def test_unknown_node_type_is_refused_naming_the_node(db):
    messages = refused({"nodes": [node("start", "llm"), node("magic", "teleport")],
                        "edges": [{"source": "start", "target": "magic"}]})

    assert messages == [messages[0]] and "node “magic”" in messages[0]
    assert "unknown type “teleport”" in messages[0]


def test_dangling_edge_is_refused_naming_the_missing_node(db):
    messages = refused({"nodes": [node("start", "llm")],
                        "edges": [{"source": "start", "target": "ghost"}]})

    assert any("“ghost”" in m and "dangling" in m for m in messages)


def test_unreachable_node_is_refused_naming_it(db):
    messages = refused({"nodes": [node("start", "llm"), node("island", "memory_write")],
                        "edges": []})

    assert messages == ["node “island” (memory_write) cannot be reached from the entry "
                        "“start”."]


def test_cycle_without_an_exit_is_refused_naming_its_nodes(db):
    messages = refused({"nodes": [node("start", "llm"), node("ping", "route"),
                                  node("pong", "route")],
                        "edges": [{"source": "start", "target": "ping"},
                                  {"source": "ping", "target": "pong"},
                                  {"source": "pong", "target": "ping"}]})

    assert len(messages) == 1 and "“ping”, “pong”" in messages[0]
    assert "no way out" in messages[0]


def test_cycle_with_a_condition_exit_is_accepted(db):
    loop = {"nodes": [node("draft", "llm"),
                      node("good", "condition", subject="reply", then="done",
                           when={"field": "content", "op": "contains", "value": "ok"},
                           **{"else": "draft"}),
                      node("done", "end")],
            "edges": [{"source": "draft", "target": "good"}]}

    assert problems(loop) == []


def test_bad_config_is_refused_naming_the_node_and_the_key(db, settings):
    settings.OPENCLAW_WORKFLOW_HTTP_HOSTS = ["tools.internal"]
    messages = refused({"nodes": [
        node("ask", "condition", when={"field": "colour", "op": "eq", "value": "red"},
             then="ask", **{"else": "ask"}),
        node("fetch", "http_tool", url="https://evil.example/x"),
    ], "edges": []})

    assert any(m.startswith("node “ask” (condition): when.field") for m in messages)
    assert any(m.startswith("node “fetch” (http_tool): “url”") and "tools.internal" in m
               for m in messages)


def test_sub_workflow_including_itself_is_refused(db):
    workflow("leaf", [node("a", "llm")])
    flow = Workflow(slug="leaf", name="x", definition={
        "nodes": [node("again", "sub_workflow", workflow="leaf")]})
    flow.pk = Workflow.objects.get(slug="leaf").pk

    with pytest.raises(ValidationError) as caught:
        flow.full_clean()

    assert "node “again” (sub_workflow) includes its own workflow" in \
        caught.value.message_dict["definition"][0]


# --- the shipped workflows ---------------------------------------------------------------

CONVERSATION_NODES = ["recall", "pre_process", "generate", "post_process", "remember"]


async def test_default_workflow_is_the_conversation_graph(models):
    # given the shipped workflows (the default one is the conversation graph)
    await sync_to_async(call_command)("loaddata", str(FIXTURE), verbosity=0)
    for flow in await sync_to_async(list)(Workflow.objects.all()):
        await sync_to_async(flow.full_clean)()

    # when a conversation that names no workflow runs a turn
    events = await collect(conversation_id=None, user="ivy", content="hello there world",
                           model="echo")

    # then it ran the default workflow: the same nodes, tokens and answer
    assert started(events) == CONVERSATION_NODES
    assert "".join(e["text"] for e in events if e["type"] == "token") == "hello there world"
    done = events[-1]
    assert done["type"] == "done" and done["content"] == "hello there world"
    assert (await Message.objects.aget(pk=done["message_id"])).role == "assistant"
    assert next(e for e in events if e["type"] == "route")["target"] == "echo"


async def test_demo_workflow_sends_refunds_for_approval(models):
    await sync_to_async(call_command)("loaddata", str(FIXTURE), verbosity=0)

    refund = await arun_turn(conversation_id=None, user="jay", content="I want a refund",
                             model="echo", workflow="support-triage")
    other = await arun_turn(conversation_id=None, user="jay", content="opening hours?",
                            model="echo", workflow="support-triage")

    assert refund["type"] == "waiting"
    assert refund["interrupts"][0]["value"]["node"] == "review"
    assert other["type"] == "done" and other["content"] == "opening hours?"


async def test_http_tool_feeds_a_router_and_the_prompt(models, settings):
    # given a tool that lists the loopback server's models, allowlisted by host
    settings.OPENCLAW_WORKFLOW_HTTP_HOSTS = ["127.0.0.1"]
    await sync_to_async(workflow)("tooled", [
        node("fetch", "http_tool", url=f"{models.url}/models", output="catalogue",
             timeout_s=5),
        node("pick", "router", subject="catalogue", default="stop", routes=[
            {"when": {"field": "content", "op": "contains", "value": "echo-large"},
             "to": "answer"}]),
        node("answer", "llm", model="recorded",
             prompt="Known: {{ outputs.catalogue.status }}"),
        node("stop", "end"),
    ], [("fetch", "pick")])

    events = await collect(conversation_id=None, user="kit", content="which models",
                           model="x", workflow="tooled")

    assert started(events) == ["fetch", "pick", "answer"]
    assert next(e for e in events if e["type"] == "tool")["status"] == 200
    assert events[-1]["content"] == "echo: which models"
    assert models.requests[-1].body["messages"][0]["content"] == "Known: 200"

    # when the host is no longer allowed, the run stops with a clear error
    settings.OPENCLAW_WORKFLOW_HTTP_HOSTS = []
    refused = await arun_turn(conversation_id=None, user="kit", content="again", model="x",
                              workflow="tooled")
    assert refused["code"] == "tool_not_allowed" and refused["status"] == 403


def test_a_second_default_workflow_is_refused(db):
    workflow("first", [node("a", "llm")], is_default=True)
    second = Workflow(slug="second", name="second", is_default=True,
                      definition={"nodes": [node("a", "llm")]})

    with pytest.raises(ValidationError) as caught:
        second.full_clean()

    assert "“first” is the default workflow" in caught.value.message_dict["is_default"][0]


async def test_approval_inside_a_sub_workflow_waits_and_resumes(models):
    await sync_to_async(reviewed)()
    await sync_to_async(workflow)("wrapper", [
        node("inner", "sub_workflow", workflow="reviewed")])

    waiting = await arun_turn(conversation_id=None, user="lou", content="nested draft",
                              model="echo", workflow="wrapper")
    done = await arun_resume(conversation_id=waiting["conversation_id"], user="lou",
                             resume="approve")

    assert waiting["type"] == "waiting"
    assert waiting["interrupts"][0]["value"]["node"] == "review"
    assert done["type"] == "done" and done["content"] == "nested draft"
    assert (await Message.objects.aget(pk=done["message_id"])).content == "nested draft"


async def test_annotation_reply_answers_curated_questions_and_passes_the_rest_on(models):
    """The optional annotation-reply node: a message close to a curated question is
    answered with its curated answer (real MiniLM embeddings), the match shown as an
    event; anything else goes on to the model."""
    from chat.curated import save_pair
    from chat.models import QAPair

    def curated() -> None:
        save_pair(QAPair(question="How do I get a refund for my order?",
                         answer="Open Orders, pick the order, press Refund.", threshold=0.6))
        workflow("curated", [
            node("faq", "annotation_reply", matched="store", otherwise="chat"),
            node("chat", "llm", model="echo"),
            node("store", "memory_write"),
        ], [("chat", "store")])

    await sync_to_async(curated)()

    refund = await collect(conversation_id=None, user="ann", model="any", workflow="curated",
                           content="how can I get my money back for an order")
    other = await collect(conversation_id=None, user="ann", model="any", workflow="curated",
                          content="Explain the rules of cricket")

    match = next(e for e in refund if e["type"] == "annotation")["match"]
    assert match["question"] == "How do I get a refund for my order?"
    assert match["similarity"] >= 0.6
    assert refund[-1]["type"] == "done" and refund[-1]["model"] == "annotation"
    assert refund[-1]["content"] == "Open Orders, pick the order, press Refund."
    assert refund[-1]["message_id"] is not None  # stored like any answer
    assert started(refund) == ["faq", "store"]
    assert next(e for e in other if e["type"] == "annotation")["match"] is None
    assert other[-1]["content"] == "Explain the rules of cricket"
    assert started(other) == ["faq", "chat", "store"]


async def test_turns_naming_their_workflow_pin_the_conversation_once(models, monkeypatch):
    await sync_to_async(triage)()
    pins = []
    real_pin = service._pin
    monkeypatch.setattr(service, "_pin",
                        lambda *args, **kwargs: pins.append(args) or real_pin(*args, **kwargs))
    conversation = None
    for _ in range(3):
        events = await collect(conversation_id=conversation, user="alice",
                               content="hello", model="echo", workflow="triage")
        assert events[-1]["type"] == "done"
        conversation = events[0]["id"]
    # the first turn wrote the pin; the next ones found it in this process's copy
    assert len(pins) == 1
    assert await sync_to_async(Conversation.objects.filter(
        pk=conversation, workflow__slug="triage").exists)()
