"""The chain: pre hooks in row order, post and stream hooks in reverse order, a
raising plugin isolated (or refusing, when fail-closed), rows that cannot load
reported, and the per-process copy rebuilt when any process changes a row."""

from __future__ import annotations

import pytest

from plugins.base import PluginBlocked, PluginRequest, PluginResponse
from plugins.chain import aget_chain, build_chain, bump_version, get_chain
from plugins.models import Plugin
from routing.keys import create_key, rotate_key

pytestmark = pytest.mark.django_db


def request(text: str = "hello") -> PluginRequest:
    return PluginRequest(messages=[{"role": "user", "content": text}], model="echo",
                         user="alice", conversation_id="c1", surface="studio")


def tagger(tag: str, order: int, **fields) -> Plugin:
    return Plugin.objects.create(name="dummy_tagger", order=order, config={"tag": tag},
                                 **fields)


def test_pre_hooks_run_in_order_post_and_stream_hooks_in_reverse(installed_dummy):
    # given: rows created out of order
    tagger("b", order=20)
    tagger("a", order=10)
    tagger("c", order=30)
    chain = build_chain()

    # when
    req = chain.pre_process(request())
    resp = chain.post_process(PluginResponse(content="answer", model="echo", request=req))
    stream = chain.stream_filter(req)

    # then
    assert req.metadata["trail"] == ["a", "b", "c"]
    assert resp.content == "answer<c><b><a>"
    assert stream.feed("x") == "x<c><b><a>"
    assert stream.flush() == ""


def test_disabled_rows_do_not_run(installed_dummy):
    tagger("on", order=1)
    tagger("off", order=2, enabled=False)

    req = build_chain().pre_process(request())

    assert req.metadata["trail"] == ["on"]


def test_a_raising_plugin_is_skipped_and_audited(installed_dummy, audit_events):
    tagger("a", order=1)
    Plugin.objects.create(name="dummy_raising", order=2)
    tagger("c", order=3)
    chain = build_chain()

    req = chain.pre_process(request())
    resp = chain.post_process(PluginResponse(content="answer", model="echo", request=req))
    stream = chain.stream_filter(req)
    streamed = stream.feed("x") + stream.feed("y") + stream.flush()

    assert req.metadata["trail"] == ["a", "c"]
    assert resp.content == "answer<c><a>"
    assert streamed == "x<c><a>y<c><a>"
    assert [a["action"] for a in req.metadata["plugin_actions"]] == ["skipped"]
    assert [(action, kw["target"], kw["detail"]["hook"]) for action, kw in audit_events] == [
        ("plugin.error", "dummy_raising", "pre_process"),
        ("plugin.error", "dummy_raising", "post_process"),
        ("plugin.error", "dummy_raising", "stream_delta"),  # once: skipped for the stream
    ]


def test_a_fail_closed_plugin_that_raises_refuses_the_request(installed_dummy, audit_events):
    tagger("a", order=1)
    Plugin.objects.create(name="dummy_raising", order=2, fail_closed=True)
    chain = build_chain()

    with pytest.raises(PluginBlocked) as refused:
        chain.pre_process(request())

    assert refused.value.plugin == "dummy_raising"
    assert "“dummy_raising” plugin, which must check every request, is not working" in \
        refused.value.message
    assert audit_events[0][1]["detail"]["fail_closed"] is True
    with pytest.raises(PluginBlocked):
        chain.stream_filter(request()).feed("x")


def test_a_hook_returning_the_wrong_type_is_skipped(installed_dummy, monkeypatch,
                                                    audit_events):
    from tests.plugins.dummy_plugin import TaggerPlugin

    monkeypatch.setattr(TaggerPlugin, "pre_process", lambda self, req: None)
    tagger("a", order=1)

    req = request()
    assert build_chain().pre_process(req) is req
    assert "returned NoneType, not PluginRequest" in audit_events[0][1]["detail"]["error"]


def test_rows_that_cannot_load_are_problems_and_skipped(installed_dummy, plugin_folder):
    tagger("a", order=1)
    Plugin.objects.create(name="folder_bad_defaults", order=2)
    Plugin.objects.create(name="no_such_plugin", order=3)
    Plugin.objects.create(name="dummy_tagger", order=4, config={"tag": 7})
    Plugin.objects.create(name="folder_shout", order=5)

    chain = build_chain()
    req = chain.pre_process(request("hi"))

    assert chain.names == ["dummy_tagger", "folder_shout"]
    assert req.metadata["trail"] == ["a"] and req.messages[0]["content"] == "HI"
    problems = {p.name: p.message for p in chain.problems if p.source.startswith("row")}
    assert "defaults do not fit its schema" in problems["folder_bad_defaults"]
    assert "no plugin is named “no_such_plugin”" in problems["no_such_plugin"]
    assert "invalid configuration: tag: Must be of type string" in problems["dummy_tagger"]
    assert any(p.name == "broken_import" for p in chain.problems)  # discovery's, too


def test_a_fail_closed_row_that_cannot_load_refuses_requests():
    Plugin.objects.create(name="no_such_plugin", fail_closed=True)

    with pytest.raises(PluginBlocked) as refused:
        build_chain().pre_process(request())

    assert refused.value.plugin == "no_such_plugin"


def test_a_plugin_blocking_a_request_names_itself():
    Plugin.objects.create(name="sensitive_words", config={"words": ["forbidden"],
                                                          "mode": "block"})

    with pytest.raises(PluginBlocked) as blocked:
        build_chain().pre_process(request("this is Forbidden"))

    assert blocked.value.plugin == "sensitive_words"


def test_the_chain_is_cached_until_a_row_changes(installed_dummy, django_assert_num_queries,
                                                 django_capture_on_commit_callbacks):
    # given
    row = tagger("a", order=1)
    first = get_chain()

    # then: no database query while nothing changed
    with django_assert_num_queries(0):
        assert get_chain() is first

    # when: a row is saved (the version is bumped once the transaction commits)
    with django_capture_on_commit_callbacks(execute=True):
        row.config = {"tag": "b"}
        row.save()

    # then
    second = get_chain()
    assert second is not first
    assert second.pre_process(request()).metadata["trail"] == ["b"]

    # when: a row is deleted
    with django_capture_on_commit_callbacks(execute=True):
        row.delete()

    assert get_chain().names == []


def test_a_change_in_another_process_is_seen_through_the_shared_version(installed_dummy):
    tagger("a", order=1)
    first = get_chain()
    # another process changed a row: its commit replaced the version in the shared cache
    Plugin.objects.update(config={"tag": "z"})
    bump_version()

    assert get_chain().pre_process(request()).metadata["trail"] == ["z"]
    assert get_chain() is not first


@pytest.mark.django_db(transaction=True)
async def test_aget_chain_reads_the_database_only_when_the_version_changed(installed_dummy):
    from asgiref.sync import sync_to_async

    await sync_to_async(tagger)("a", order=1)
    first = await aget_chain()

    assert await aget_chain() is first  # no thread hop, no query: same object
    assert first.pre_process(request()).metadata["trail"] == ["a"]

    await sync_to_async(tagger)("b", order=2)  # committed: the signal bumped the version
    second = await aget_chain()

    assert second is not first
    assert second.pre_process(request()).metadata["trail"] == ["a", "b"]


def scoped(**fields) -> Plugin:
    return Plugin.objects.create(name="dummy_tagger", config={"tag": "t"}, in_studio=False,
                                 **fields)


def api_request(**fields) -> PluginRequest:
    return PluginRequest(messages=[{"role": "user", "content": "hello"}],
                         **{"model": "echo", "api_key": "oc_none", **fields})


def tagged(request: PluginRequest) -> bool:
    return build_chain().pre_process(request).metadata.get("trail") == ["t"]


def test_a_row_runs_only_where_it_is_scoped(installed_dummy):
    scoped(for_models="gpt-*, local-7b")
    scoped(for_workflows="triage")

    assert tagged(api_request(model="gpt-4o")) and tagged(api_request(model="local-7b"))
    assert not tagged(api_request(model="claude"))
    assert tagged(api_request(workflow="triage", model="x"))
    assert not tagged(api_request(workflow="other", model="x"))
    assert not tagged(api_request(surface="studio", model="x"))


def test_a_key_scope_follows_the_key_through_rotation(installed_dummy):
    old_key, _secret = create_key("scoped")
    scoped().api_keys.add(old_key)
    successor, _ = rotate_key(old_key, grace_hours=1)
    stranger, _ = create_key("other")

    assert tagged(api_request(api_key=old_key.prefix))
    assert tagged(api_request(api_key=successor.prefix))
    assert not tagged(api_request(api_key=stranger.prefix))
