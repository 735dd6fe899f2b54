"""``sync_builtin_rows`` on the real PostgreSQL: a row per registered built-in with its
description in each language, its schema, timeout and approval flag; run again, nothing
changes; what an operator edited is kept, only the schema follows the code; a name
another tool took is left alone."""

from __future__ import annotations

import pytest
from django.apps import apps as django_apps
from django.utils import translation

import chat.tools.builtins  # noqa: F401  (registers the built-ins: ready() will)
from chat.models import Tool, ToolKind, Workflow
from chat.tools import registry
from chat.tools.registry import BuiltinTool, builtin_tools
from chat.tools.sync import sync_after_migrate, sync_builtin_rows

pytestmark = pytest.mark.django_db

ASKS = "Approve this answer?"  # a text the zh-hans catalogue translates
SCHEMA = {"type": "object", "properties": {"id": {"type": "integer"}}}


@pytest.fixture
def builtins(monkeypatch):
    """The registered built-ins plus ``approver`` (test-only), and no built-in rows yet
    (a ``post_migrate`` receiver may have made them)."""
    monkeypatch.setattr(registry, "_registry", dict(registry._registry))

    async def approve(arguments, context):
        return "ok"

    registry.add(BuiltinTool("approver", ASKS, SCHEMA, approve, timeout_s=7,
                             requires_approval=True))
    Tool.objects.filter(kind=ToolKind.BUILTIN).delete()
    return builtin_tools()


def test_each_built_in_gets_its_row_in_every_language(builtins):
    made = sync_builtin_rows()

    assert sorted(row.name for row in made) == sorted(builtins)
    assert {"current_time", "calculator", "http_request", "memory_search"} <= set(builtins)
    row = Tool.objects.get(name="approver")
    with translation.override("zh-hans"):
        chinese = translation.gettext(ASKS)  # "批准这个回答吗？" once the .mo is built
    assert (row.kind, row.builtin, row.parameters, row.timeout_s, row.requires_approval) == (
        ToolKind.BUILTIN, "approver", SCHEMA, 7, True)
    assert (row.description_en, row.description_zh_hans) == (ASKS, chinese)
    calculator = Tool.objects.get(name="calculator")
    assert calculator.description_en == builtins["calculator"].description
    assert calculator.parameters == builtins["calculator"].parameters
    assert calculator.enabled and not calculator.public


def test_a_second_sync_changes_nothing(builtins):
    sync_builtin_rows()
    before = list(Tool.objects.order_by("name").values())

    assert sync_builtin_rows() == []
    assert list(Tool.objects.order_by("name").values()) == before


def test_operator_edits_are_kept_and_only_the_schema_follows_the_code(builtins):
    sync_builtin_rows()
    Tool.objects.filter(name="approver").update(
        name="approve_it", description_en="Ask first.", timeout_s=2, enabled=False,
        requires_approval=False, parameters={"type": "object"})

    assert sync_builtin_rows() == []

    row = Tool.objects.get(builtin="approver")
    assert (row.name, row.description_en, row.timeout_s, row.enabled,
            row.requires_approval) == ("approve_it", "Ask first.", 2, False, False)
    assert row.parameters == SCHEMA  # the code's schema again
    assert not Tool.objects.filter(name="approver").exists()  # no second row


def test_a_built_in_whose_name_is_taken_is_left_out(builtins):
    flow = Workflow.objects.create(slug="calc", name="calc", definition={})
    Tool.objects.create(name="calculator", kind=ToolKind.WORKFLOW, workflow=flow)

    made = sync_builtin_rows()

    assert "calculator" not in {row.name for row in made}
    assert Tool.objects.get(name="calculator").kind == ToolKind.WORKFLOW


def test_post_migrate_receiver_syncs_only_for_the_chat_app(builtins):
    sync_after_migrate(django_apps.get_app_config("routing"), using="default")
    assert not Tool.objects.filter(kind=ToolKind.BUILTIN).exists()

    sync_after_migrate(django_apps.get_app_config("chat"), using="default", apps=django_apps)

    assert set(Tool.objects.filter(kind=ToolKind.BUILTIN).values_list("name", flat=True)) \
        == set(builtins)
