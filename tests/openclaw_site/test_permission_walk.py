"""Every URL of the site, walked from the root URLconf as a member of the staff with no
permission, an ordinary signed-in user and an anonymous visitor (and, on ``/v1``, as
another API key), with every method, its converters filled with another person's (or
another key's) objects: nobody gets a 2xx that reads or changes another's object or
lists others' objects, nobody gets a 500, and nothing of theirs changes.

Each URL pattern has a rule in ``RULES`` (the admin's generated model views take the
rule of their model in ``ADMIN_MODELS``): a new URL fails the walk until it joins.
A member of the staff holding the right permission does get through (the last tests),
so the walk fails both ways."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

import pytest
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.contrib.contenttypes.models import ContentType
from django.core.management import call_command
from django.test import Client, RequestFactory
from django.urls import URLPattern, URLResolver, get_resolver

from chat import stored_responses
from chat.models import (
    Conversation,
    McpServer,
    MemoryItem,
    Message,
    StoredResponse,
    Tool,
    ToolKind,
    Workflow,
    WorkflowVersion,
)
from jobs import batch, batch_files
from jobs.annotation import AnnotationInput, annotate
from jobs.models import (
    Annotation,
    BatchFile,
    BatchJob,
    BatchStatus,
    Dataset,
    FineTuneJob,
    FineTuneStatus,
)
from routing import rules
from routing.key_models import ApiKey
from routing.keys import create_key
from routing.models import ModelEndpoint
from tests.grants import grant

pytestmark = pytest.mark.django_db

# --- the rules ---------------------------------------------------------------------------

PUBLIC = "public"          # anyone: nobody's objects (health, sign-in, language)
TOKEN = "token"            # a bearer token or network, not a person (the Prometheus scrape)
SELF = "self"              # signed in: one's own objects only (the studio's chat)
PERMISSION = "permission"  # staff holding a model permission (jobs, training, the admin)
API_KEY = "api key"        # /v1: an API key, its own family's objects only

RULES: dict[str, str] = {
    "": PUBLIC,  # / → /studio/
    "favicon": PUBLIC,  # /favicon.ico → the studio's icon (a static file)
    "healthz": PUBLIC,
    "readyz": PUBLIC,
    "metrics": TOKEN,
    "javascript-catalog": PUBLIC,
    "set_language": PUBLIC,
    # the studio
    "studio:login": PUBLIC,
    "studio:logout": PUBLIC,
    "studio:page": SELF,
    "studio:conversations": SELF,
    "studio:conversation": SELF,
    "studio:memory-delete": SELF,
    "studio:quota": SELF,               # the signed-in user's own quota
    "studio:tools": SELF,               # the tools the signed-in user may use
    "studio:steps": SELF,               # one's own conversation's checkpoints
    "studio:replay": SELF,              # a branch of one's own conversation
    # the workflow editor: chat.view_workflow to read, change / add to write
    **{f"studio:{name}": PERMISSION for name in (
        "workflows", "workflow-editor", "node-types", "workflows-api", "workflow-validate",
        "workflow-api", "workflow-versions", "workflow-version", "workflow-publish",
        "workflow-diff", "workflow-runs")},
    "training:annotations": SELF,       # everyone's: jobs.view_annotation
    "training:annotate": SELF,          # others' replies: jobs.add_annotation + content
    "training:qa-match": SELF,          # the curated answers every turn may get
    "studio:jobs": PERMISSION,          # jobs.view_batchjob or jobs.view_finetunejob
    "studio:jobs-api": PERMISSION,
    "studio:batch-cancel": PERMISSION,  # jobs.change_batchjob
    "studio:batch-retry": PERMISSION,
    "studio:finetune-cancel": PERMISSION,  # jobs.change_finetunejob
    "training:datasets": PERMISSION,    # view_dataset; POST add_dataset + content
    "training:finetune-jobs": PERMISSION,  # view_finetunejob; POST add_finetunejob
    "training:finetune-job": PERMISSION,
    "training:finetune-cancel": PERMISSION,
    # the admin's own pages (its model views: ADMIN_MODELS)
    "admin:login": PUBLIC,
    "admin:logout": PUBLIC,
    "admin:index": SELF,
    "admin:password_change": SELF,
    "admin:password_change_done": SELF,
    "admin:jsi18n": SELF,
    "admin:app_list": SELF,
    "admin/(?P<url>.*)$": SELF,  # the catch-all: a redirect or a 404
    "admin:autocomplete": PERMISSION,
    "admin:view_on_site": PERMISSION,
    "admin:auth_user_password_change": PERMISSION,
    "admin:routing_usagerecord_summary": PERMISSION,
    "admin:routing_routingrule_dry_run": PERMISSION,
    "admin:plugins_plugin_reload": PERMISSION,
    "admin:chat_conversation_import": PERMISSION,
    "admin:chat_mcpserver_refresh": PERMISSION,  # chat.change_mcpserver
    "admin:jobs_batchfile_download": PERMISSION,
    "admin:jobs_dataset_download": PERMISSION,  # view_dataset + chat.view_message_content
    # /v1
    **{f"openai_api:{name}": API_KEY for name in (
        "models", "model", "chat-completions", "completions", "responses", "response",
        "response-input-items", "messages", "messages-count-tokens", "embeddings",
        "key-successor", "conversation-import", "conversation-export", "files", "file",
        "file-content", "batches", "batch", "batch-cancel")},
}

# Every model the admin shows: its generated views (list, add, change, delete, history)
# need the model's permissions, except where the admin shows people their own rows.
ADMIN_MODELS: dict[str, str] = {
    **{label: PERMISSION for label in (
        "auth.group", "auth.user", "routing.apikey", "routing.quota", "routing.usagerecord",
        "routing.auditevent", "routing.modelendpoint", "routing.routingrule",
        "plugins.plugin", "chat.workflow", "chat.workflowrun", "chat.workflowschedule",
        "chat.conversation", "chat.message", "chat.qapair", "chat.tool", "chat.mcpserver",
        "jobs.batchjob",
        "jobs.batchfile", "jobs.annotation", "jobs.dataset", "jobs.finetunejob")},
    "chat.memoryitem": SELF,  # each member of the staff their own memories
}
ADMIN_VIEWS = ("changelist", "add", "change", "delete", "history")
REGEX_SAMPLES = {"admin:app_list": "/admin/chat/", "admin/(?P<url>.*)$": "/admin/nowhere"}

CANARY = "walkcanary"  # in the names and texts of the other person's objects
# A POST naming the other person's object in its body: refused like a path naming it.
FOREIGN_IN_BODY = {"openai_api:batches", "openai_api:responses"}
SHARED_ARGS = {"model_id"}  # the registry's models are nobody's own


# --- the URLs ----------------------------------------------------------------------------


@dataclass
class Route:
    key: str    # its name (namespace:name), or its route where it has none
    route: str  # the concatenated pattern
    args: list[str] = field(default_factory=list)  # the converters' names


def walk(resolver: URLResolver | None = None, prefix: str = "", namespace: str = ""):
    for entry in (resolver or get_resolver()).url_patterns:
        route = prefix + str(entry.pattern)
        if isinstance(entry, URLResolver):
            inner = f"{namespace}{entry.namespace}:" if entry.namespace else namespace
            yield from walk(entry, route, inner)
        elif isinstance(entry, URLPattern):
            key = f"{namespace}{entry.name}" if entry.name else route
            yield Route(key, route, re.findall(r"<(?:\w+:)?(\w+)>", route))


def admin_model_views() -> dict[str, str]:
    """The admin's generated views: their keys and the label of their model."""
    found = {}
    for model in admin.site._registry:
        label = model._meta.label_lower
        app, name = label.split(".")
        for view in ADMIN_VIEWS:
            found[f"admin:{app}_{name}_{view}"] = label
        found[f"admin/{app}/{name}/<path:object_id>/"] = label  # redirects to change/
    return found


def rule_of(route: Route) -> str | None:
    if route.key in RULES:
        return RULES[route.key]
    label = admin_model_views().get(route.key)
    return ADMIN_MODELS.get(label) if label else None


def test_every_url_has_a_rule():
    routes = list(walk())
    unclassified = sorted(r.key for r in routes if rule_of(r) is None)
    stale = sorted(set(RULES) - {r.key for r in routes})

    assert len(routes) > 100  # the walk expanded the includes
    assert unclassified == [], "add these URLs to RULES (or their model to ADMIN_MODELS)"
    assert stale == []
    assert set(ADMIN_MODELS) == {m._meta.label_lower for m in admin.site._registry}


# --- the other person's objects --------------------------------------------------------

LINES = (b'{"custom_id": "r1", "method": "POST", "url": "/v1/chat/completions", "body": '
         b'{"model": "echo", "messages": [{"role": "user", "content": "hi"}]}}\n')


@pytest.fixture
def theirs(tmp_path) -> dict[str, Any]:
    """Olga's conversation, reply, memory and annotation; her API key's file, batch and
    stored response; a dataset and a fine-tuning job of the operator's; the demo data."""
    call_command("loaddata", *(f"fixtures/{name}.json" for name in (
        "10_models", "20_routing_rules", "40_plugins", "50_workflows")), verbosity=0)
    rules.clear_local_copy()
    olga = get_user_model().objects.create_user(f"olga-{CANARY}", password="pw-olga-12")
    chat = Conversation.objects.create(owner=olga, user=olga.get_username(), model="echo",
                                       title=f"{CANARY} title")
    Message.objects.create(conversation=chat, turn=1, role="user", content=f"{CANARY} ask")
    reply = Message.objects.create(conversation=chat, turn=1, role="assistant", model="echo",
                                   content=f"{CANARY} answer")
    memory = MemoryItem.objects.create(owner=olga, user=olga.get_username(), conversation=chat,
                                       text=f"{CANARY} memory", embedding=[0.1] * 384)
    annotate(olga, reply.pk, AnnotationInput(rating="down", tags=[f"{CANARY}-tag"],
                                             corrected_content=f"{CANARY} fix"))
    key, _secret = create_key(f"{CANARY}-key", owner=olga)
    upload = batch_files.create_file(LINES, f"{CANARY}.jsonl", owner=key.family)
    job = batch.create_job(upload, model="echo", api_key=key)
    response_id = f"resp_{CANARY}"
    stored_responses.save(key.family, {"id": response_id, "model": "echo",
                                       "output": [{"text": CANARY}]}, [{"content": CANARY}])
    (tmp_path / "config.json").write_text("{}")
    base = ModelEndpoint.objects.create(name=f"{CANARY}-base", engine="transformers",
                                        model_path=str(tmp_path), enabled=False)
    dataset = Dataset.objects.create(name=f"{CANARY}-data", line_count=1, sha256="0" * 64,
                                     content=b'{"messages": []}\n')
    tuning = FineTuneJob.objects.create(base_endpoint=base, dataset=dataset)
    Group.objects.create(name=f"{CANARY}-group")
    # An MCP server (nobody's: the admin's) and a tool only Olga may use.
    server = McpServer.objects.create(name=f"{CANARY}-mcp", url="http://127.0.0.1:9/mcp")
    Tool.objects.create(name=f"{CANARY}_tool", kind=ToolKind.BUILTIN, builtin="calculator",
                        description=f"{CANARY} tool").users.add(olga)
    return {"olga": olga, "conversation": chat, "reply": reply, "memory": memory, "key": key,
            "file": upload, "batch": job, "response_id": response_id, "base": base,
            "dataset": dataset, "finetune": tuning, "mcp": server}


def fill(route: Route, objects: dict[str, Any]) -> str:
    """The route's path with each converter naming one of the other person's objects."""
    if route.key in REGEX_SAMPLES:
        return REGEX_SAMPLES[route.key]
    finetune = "finetune" in route.route
    values: dict[str, Any] = {
        "conversation_id": objects["conversation"].pk, "memory_id": objects["memory"].pk,
        "message_id": objects["reply"].pk, "batch_id": objects["batch"].pk,
        "file_id": objects["file"].pk, "response_id": objects["response_id"],
        "model_id": "echo", "dataset_id": objects["dataset"].pk, "id": objects["olga"].pk,
        "job_id": objects["finetune"].pk if finetune else objects["batch"].pk,
        "content_type_id": ContentType.objects.get_for_model(Conversation).pk,
        "pk": objects["mcp"].pk,  # the one admin page named by pk: an MCP server's refresh
        "slug": "support-triage", "number": 1,  # a workflow of the demo and its first version
    }
    if "object_id" in route.args:
        values["object_id"] = admin_object(route, objects)
    return "/" + re.sub(r"<(?:\w+:)?(\w+)>", lambda m: str(values[m.group(1)]), route.route)


def admin_object(route: Route, objects: dict[str, Any]) -> Any:
    """For an admin page of one object: the other person's, else the model's first."""
    label = admin_model_views().get(route.key)
    if label is None:  # view_on_site
        return objects["conversation"].pk
    named = {"auth.user": "olga", "chat.conversation": "conversation", "chat.message": "reply",
             "chat.memoryitem": "memory", "routing.apikey": "key", "jobs.batchfile": "file",
             "jobs.batchjob": "batch", "jobs.dataset": "dataset", "jobs.finetunejob": "finetune"}
    if label in named:
        return objects[named[label]].pk
    model = next(m for m in admin.site._registry if m._meta.label_lower == label)
    first = model._default_manager.order_by("pk").first()
    return first.pk if first else 1


WALKED_DEFINITION = {"entry": "answer", "nodes": [{"id": "answer", "type": "llm"}], "edges": []}


def bodies(objects: dict[str, Any]) -> dict[str, dict]:
    """What a POST sends where an empty body would be refused before the permission
    matters: with these, a missing check answers 2xx."""
    return {
        "studio:conversation": {"title": "walked"},
        "training:annotate": {"rating": "up"},
        "training:qa-match": {"text": "hello"},
        "training:datasets": {"name": "walked", "filters": {}},
        "training:finetune-jobs": {"base_endpoint_id": objects["base"].pk,
                                   "dataset_id": objects["dataset"].pk, "max_steps": 1},
        "studio:workflows-api": {"slug": "walked", "name": "walked"},
        "studio:workflow-versions": {"definition": WALKED_DEFINITION, "publish": True},
        "openai_api:batches": {"input_file_id": objects["file"].pk},
        "openai_api:responses": {"model": "echo", "input": "hi",
                                 "previous_response_id": objects["response_id"]},
    }


# --- the walk ----------------------------------------------------------------------------


def body_of(response) -> bytes:
    if getattr(response, "streaming", False):
        return b"".join(response.streaming_content)
    return response.content


@dataclass
class Walker:
    name: str
    client: Client
    user: Any = None
    headers: dict[str, str] = field(default_factory=dict)

    def request(self, method: str, path: str, body: dict | None):
        if self.user is not None and "_auth_user_id" not in self.client.session:
            self.client.force_login(self.user)  # a logout route signed it out
        return self.client.generic(method, path, json.dumps(body or {}),
                                   content_type="application/json", headers=self.headers)


def problems(walker: Walker, route: Route, rule: str, path: str, method: str,
             response) -> list[str]:
    status, where = response.status_code, f"{walker.name} {method} {path} → {{}}"
    found = []
    if status >= 500:
        found.append(where.format(status))
    elif 200 <= status < 300:
        detail = (bool(set(route.args) - SHARED_ARGS) and route.key not in REGEX_SAMPLES) \
            or (method == "POST" and route.key in FOREIGN_IN_BODY)
        refused = rule in (PERMISSION, TOKEN) or (rule in (SELF, API_KEY) and detail) \
            or (rule == API_KEY and walker.name != "another key")
        if refused:
            found.append(where.format(status))
        elif CANARY.encode() in body_of(response):
            found.append(where.format(f"{status} showing the other person's objects"))
    return found


def walkers() -> list[Walker]:
    users = get_user_model().objects
    stan = users.create_user("stan", password="pw-stan-12", is_staff=True)
    ora = users.create_user("ora", password="pw-ora-123")
    found = []
    for name, user in (("staff without permissions", stan), ("signed-in user", ora),
                       ("anonymous", None)):
        client = Client(raise_request_exception=False)
        if user is not None:
            client.force_login(user)
        found.append(Walker(name, client, user))
    return found


def state(objects: dict[str, Any]) -> dict[str, Any]:
    """What a request that got through would have changed."""
    counts = {model.__name__: model.objects.count() for model in (
        Conversation, Message, MemoryItem, Annotation, Dataset, FineTuneJob, BatchJob,
        BatchFile, StoredResponse, ApiKey, ModelEndpoint, Group, get_user_model())}
    return {**counts,
            "title": Conversation.objects.get(pk=objects["conversation"].pk).title,
            "batch": BatchJob.objects.values_list("status", "cancel_requested")
            .get(pk=objects["batch"].pk),
            "finetune": FineTuneJob.objects.values_list("status", "cancel_requested")
            .get(pk=objects["finetune"].pk),
            "key": ApiKey.objects.values_list("revoked_at", "grace_until")
            .get(pk=objects["key"].pk),
            "endpoints": sorted(ModelEndpoint.objects.values_list("name", "enabled")),
            "workflows": sorted(Workflow.objects.values_list("slug", "live_version", "version")),
            "versions": WorkflowVersion.objects.count(),
            "olga": get_user_model().objects.values_list("is_staff", "password")
            .get(pk=objects["olga"].pk)}


def test_no_one_without_permission_reads_or_changes_anothers_objects(theirs, settings):
    # given: a scrape token, the three walkers, and what they must not change
    settings.OPENCLAW_METRICS_TOKEN = "walk-metrics-token"
    people = walkers()
    before = state(theirs)
    posted = bodies(theirs)
    found: list[str] = []
    # when: every URL, every method, as each of them
    for route in walk():
        rule = rule_of(route) or PERMISSION  # unclassified: the strictest, till it joins
        path = fill(route, theirs)
        methods = ("GET", "POST") if path.startswith("/admin/") else \
            ("GET", "POST", "PATCH", "DELETE")
        for walker in people:
            for method in methods:
                response = walker.request(method, path, posted.get(route.key))
                found += problems(walker, route, rule, path, method, response)
    # then
    assert found == []
    assert state(theirs) == before


@pytest.mark.django_db(transaction=True)  # async views: their queries on other threads
def test_another_api_key_gets_none_of_the_keys_objects(theirs):
    # given: a second key, not of the same family
    _other, secret = create_key("another")
    walker = Walker("another key", Client(raise_request_exception=False),
                    headers={"Authorization": f"Bearer {secret}"})
    before = state(theirs)
    posted = bodies(theirs)
    found: list[str] = []
    # when: every /v1 URL with every method, the first key's objects in the paths
    for route in walk():
        if rule_of(route) != API_KEY:
            continue
        path = fill(route, theirs)
        for method in ("GET", "POST", "DELETE"):
            response = walker.request(method, path, posted.get(route.key))
            found += problems(walker, route, API_KEY, path, method, response)
    after_anchor = walker.request("GET", f"/v1/batches?after={theirs['batch'].pk}", None)
    # then
    assert found == []
    assert after_anchor.status_code == 404
    assert state(theirs) == before


# --- with the permission, through -----------------------------------------------------


def staff_with(*perms: str) -> Client:
    users = get_user_model().objects
    user = users.create_user(f"pat{users.count()}", password="pw-pat-123", is_staff=True)
    client = Client()
    client.force_login(grant(user, *perms))
    return client


def test_staff_with_the_view_permissions_see_everyones_jobs_and_annotations(theirs):
    client = staff_with("jobs.view_batchjob", "jobs.view_finetunejob", "jobs.view_dataset",
                        "jobs.view_annotation", "routing.view_usagerecord")

    listed = client.get("/studio/api/jobs/").json()
    assert [row["id"] for row in listed["batches"]] == [theirs["batch"].pk]
    assert [row["id"] for row in listed["finetunes"]] == [theirs["finetune"].pk]
    assert client.get("/studio/jobs/").status_code == 200
    assert client.get(f"/studio/api/finetune/jobs/{theirs['finetune'].pk}/").status_code == 200
    [dataset] = client.get("/studio/api/datasets/").json()["data"]
    assert dataset["name"] == f"{CANARY}-data"
    [annotation] = client.get("/studio/api/annotations/").json()["data"]
    assert annotation["tags"] == [f"{CANARY}-tag"]
    assert client.get("/admin/jobs/batchjob/").status_code == 200
    assert client.get("/admin/routing/usagerecord/summary/").status_code == 200
    # viewing is not changing
    assert client.post(f"/studio/api/jobs/batch/{theirs['batch'].pk}/cancel/") \
        .status_code == 403


def test_staff_with_the_change_permissions_cancel_jobs(theirs):
    client = staff_with("jobs.change_batchjob", "jobs.change_finetunejob")

    cancelled = client.post(f"/studio/api/jobs/batch/{theirs['batch'].pk}/cancel/")
    tuning = client.post(f"/studio/api/finetune/jobs/{theirs['finetune'].pk}/cancel/")

    assert cancelled.status_code == 200
    assert cancelled.json()["status"] in (BatchStatus.CANCELLING, BatchStatus.CANCELLED)
    assert tuning.status_code == 200 and tuning.json()["status"] == FineTuneStatus.CANCELLED


def test_staff_with_the_workflow_permissions_read_and_save_in_the_editor(theirs):
    reader = staff_with("chat.view_workflow")
    editor = staff_with("chat.view_workflow", "chat.change_workflow")
    save = json.dumps({"definition": WALKED_DEFINITION, "publish": True})

    listed = reader.get("/studio/api/workflows/").json()["workflows"]
    refused = reader.post("/studio/api/workflows/support-triage/versions/", save,
                          content_type="application/json")
    saved = editor.post("/studio/api/workflows/support-triage/versions/", save,
                        content_type="application/json")

    assert "support-triage" in {row["slug"] for row in listed}
    assert reader.get("/studio/workflows/support-triage/").status_code == 200
    assert refused.status_code == 403
    assert saved.status_code == 201 and saved.json()["version"]["live"]
    assert Workflow.objects.get(slug="support-triage").definition == WALKED_DEFINITION


def test_exporting_a_dataset_needs_the_content_permission_too(theirs):
    body = json.dumps({"name": "export"})
    without = staff_with("jobs.add_dataset")
    refused = without.post("/studio/api/datasets/", body, content_type="application/json")
    admin_refused = without.get("/admin/jobs/dataset/add/")

    reader = staff_with("jobs.view_dataset")
    download = reader.get(f"/admin/jobs/dataset/{theirs['dataset'].pk}/download/")

    client = staff_with("jobs.add_dataset", "chat.view_message_content")
    exported = client.post("/studio/api/datasets/", body, content_type="application/json")

    assert refused.status_code == 403
    assert download.status_code == 403  # its lines are conversations' text
    assert refused.json()["error"]["message"] == \
        "You need the “chat.view_message_content” permission."
    assert admin_refused.status_code == 403
    assert exported.status_code == 201 and exported.json()["line_count"] == 1


def test_downloading_a_batch_file_needs_the_content_permission_too(theirs):
    file = BatchFile.objects.first()
    url = f"/admin/jobs/batchfile/{file.pk}/download/"

    refused = staff_with("jobs.view_batchfile").get(url)
    allowed = staff_with("jobs.view_batchfile", "chat.view_message_content").get(url)

    assert refused.status_code == 403  # its lines are API users' prompts
    assert allowed.status_code == 200 and allowed.content


def test_staff_with_the_add_permission_start_a_fine_tune(theirs):
    client = staff_with("jobs.add_finetunejob")
    body = json.dumps({"base_endpoint_id": theirs["base"].pk,
                       "dataset_id": theirs["dataset"].pk, "max_steps": 1})

    created = client.post("/studio/api/finetune/jobs/", body, content_type="application/json")

    assert created.status_code == 201 and created.json()["status"] == FineTuneStatus.QUEUED


def test_admin_actions_that_change_rows_need_more_than_the_view_permission(theirs):
    # given: a member of the staff who may view every model the admin shows
    user = get_user_model().objects.create_user("vic", password="pw-vic-123", is_staff=True)
    user = grant(user, *(f"{m._meta.app_label}.view_{m._meta.model_name}"
                         for m in admin.site._registry))
    request = RequestFactory().get("/admin/")
    request.user = user
    # when
    offered = {m._meta.label_lower: sorted(model_admin.get_actions(request))
               for m, model_admin in admin.site._registry.items()}
    rotated = Client()
    rotated.force_login(user)
    answer = rotated.post("/admin/routing/apikey/", {"action": "rotate",
                                                     "_selected_action": [theirs["key"].pk]})
    # then: only reading actions (an export needs the content permission as well), and
    # deleting one's own memories
    assert {label: names for label, names in offered.items() if names} == \
        {"chat.conversation": ["export_sessions"], "chat.memoryitem": ["delete_selected"]}
    assert answer.status_code in (200, 302)  # the admin's "no such action" message
    assert not ApiKey.objects.filter(rotated_from=theirs["key"]).exists()
