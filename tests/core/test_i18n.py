"""English and Simplified Chinese: how a request's language is chosen (``?lang=``,
remembered, saved, ``Accept-Language``, English), the admin and the studio rendered
in each, and translated registry texts shown in the reader's language."""

import json
import re

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.utils import translation

from chat.models import UserPreference
from core.i18n import (
    SESSION_KEY,
    choose,
    compile_catalogue,
    language_for_scope,
    language_from_environment,
)
from routing.models import ModelEndpoint

ADMIN = "/admin/"
STUDIO = "/studio/"


@pytest.fixture(autouse=True)
def english_after():
    """The test client answers in this thread: leave it in English for the next test."""
    yield
    translation.activate(settings.LANGUAGE_CODE)


# --- the order ------------------------------------------------------------------------


def test_asked_language_wins_over_everything_else():
    assert choose(asked="en", session="zh-hans", cookie="zh-hans",
                  accept="zh-CN,zh;q=0.9") == "en"


def test_remembered_language_comes_before_accept_language():
    assert choose(session="zh-hans", accept="en-US") == "zh-hans"
    assert choose(cookie="zh-hans", accept="en-US") == "zh-hans"


def test_the_cookie_is_the_latest_choice_when_it_and_the_session_disagree():
    # Django's /i18n/setlang/ form sets only the cookie
    assert choose(cookie="en", session="zh-hans") == "en"


def test_accept_language_maps_mainland_chinese_to_simplified():
    assert choose(accept="zh-CN,zh;q=0.9,en;q=0.8") == "zh-hans"
    assert choose(accept="fr-FR, zh;q=0.5") == "zh-hans"


def test_unknown_or_missing_language_falls_back_to_english():
    assert choose(asked="fr", cookie="klingon", accept="fr-FR,de;q=0.8") == "en"
    assert choose() == "en"


# --- admin ----------------------------------------------------------------------------


@pytest.mark.django_db
def test_admin_renders_in_chinese_with_lang_and_switches_back(admin_client):
    # when
    asked = admin_client.get(ADMIN, {"lang": "zh-hans"})
    page = admin_client.get(ADMIN)

    # then: remembered (session and cookie), the address cleaned of ?lang=
    assert asked.status_code == 302 and asked["Location"] == ADMIN
    assert asked.cookies[settings.LANGUAGE_COOKIE_NAME].value == "zh-hans"
    assert admin_client.session[SESSION_KEY] == "zh-hans"
    html = page.content.decode()
    assert page["Content-Language"] == "zh-hans"
    assert "路由与 API 密钥" in html and "模型端点" in html  # ours
    assert "站点管理" in html  # Django's own

    # when: back to English
    page = admin_client.get(ADMIN, {"lang": "en"}, follow=True)
    html = page.content.decode()
    assert "Routing and API keys" in html and "路由与 API 密钥" not in html


@pytest.mark.django_db
def test_admin_list_with_lang_is_not_taken_for_a_filter(admin_client):
    response = admin_client.get("/admin/routing/modelendpoint/", {"lang": "zh-hans",
                                                                   "engine": "echo"})
    assert response.status_code == 302
    assert response["Location"] == "/admin/routing/modelendpoint/?engine=echo"
    assert "模型端点" in admin_client.get(response["Location"]).content.decode()


@pytest.mark.django_db
def test_accept_language_chooses_chinese_without_lang(admin_client):
    html = admin_client.get(ADMIN, HTTP_ACCEPT_LANGUAGE="zh-CN,zh;q=0.9").content.decode()
    assert "路由与 API 密钥" in html

    html = admin_client.get(ADMIN, HTTP_ACCEPT_LANGUAGE="en-GB").content.decode()
    assert "Routing and API keys" in html


@pytest.mark.django_db
def test_saved_preference_follows_the_user_to_a_new_browser(client):
    # given: the user picked Chinese once, signed in
    user = get_user_model().objects.create_superuser("lin", password="pw-lin-123")
    client.force_login(user)
    client.get(ADMIN, {"lang": "zh-hans"})
    assert UserPreference.objects.get(user=user).language == "zh-hans"

    # when: another browser (no cookie, new session), which asks for English
    other = type(client)()
    other.force_login(user)
    html = other.get(ADMIN, HTTP_ACCEPT_LANGUAGE="en-US").content.decode()

    # then: the saved preference comes before Accept-Language
    assert "路由与 API 密钥" in html


@pytest.mark.django_db
def test_lang_on_a_post_applies_without_a_redirect(admin_client):
    response = admin_client.post("/admin/routing/modelendpoint/add/?lang=zh-hans", {})

    assert response.status_code == 200  # the form, with its errors, in Chinese
    assert response["Content-Language"] == "zh-hans"
    assert "这个字段是必填项。" in response.content.decode()


# --- translated registry texts ----------------------------------------------------------


@pytest.fixture
def described_model(db):
    return ModelEndpoint.objects.create(
        name="local-7b", engine="echo",
        display_name_en="Local 7B", display_name_zh_hans="本地 7B",
        description_en="Runs on this machine.", description_zh_hans="在本机运行。")


def test_admin_edits_both_languages_of_a_model(admin_client, described_model):
    html = admin_client.get(f"/admin/routing/modelendpoint/{described_model.pk}/change/"
                            ).content.decode()
    assert 'name="description_en"' in html and 'name="description_zh_hans"' in html
    assert "Runs on this machine." in html and "在本机运行。" in html


def studio(client, language: str) -> tuple[str, dict]:
    """The studio page in ``language``: its HTML and its models (from the page's config)."""
    html = client.get(STUDIO, {"lang": language}, follow=True).content.decode()
    config = re.search(r'<script id="studio-config" type="application/json">(.*?)</script>',
                       html, re.S)
    return html, {m["name"]: m for m in json.loads(config.group(1))["models"]}


def test_studio_shows_the_model_description_in_each_language(admin_client, described_model):
    # when
    chinese, chinese_models = studio(admin_client, "zh-hans")
    english, english_models = studio(admin_client, "en")

    # then: the studio's own text and the registry's, each in the reader's language
    assert "新对话" in chinese and "New chat" in english
    assert chinese_models["local-7b"]["label"] == "本地 7B"
    assert chinese_models["local-7b"]["description"] == "在本机运行。"
    assert english_models["local-7b"]["label"] == "Local 7B"
    assert english_models["local-7b"]["description"] == "Runs on this machine."


def test_an_untranslated_description_falls_back_to_english(admin_client, db):
    ModelEndpoint.objects.create(name="cloud-32k", engine="echo",
                                 description_en="A large context window.")
    _html, models = studio(admin_client, "zh-hans")
    assert models["cloud-32k"]["description"] == "A large context window."


@pytest.mark.django_db
def test_studio_scripts_get_the_chinese_catalogue(client):
    client.get(STUDIO, {"lang": "zh-hans"})
    catalogue = client.get("/jsi18n/").content.decode()
    assert json.dumps("重新生成")[1:-1] in catalogue  # JSON, with \u escapes


# --- the catalogues without GNU gettext (openclaw up) ------------------------------------


def test_python_compiled_catalogue_translates_like_msgfmt(tmp_path):
    import gettext

    po = settings.BASE_DIR / "locale" / "zh_Hans" / "LC_MESSAGES" / "django.po"
    mo = tmp_path / "django.mo"
    count = compile_catalogue(po, mo)
    with open(mo, "rb") as handle:
        catalogue = gettext.GNUTranslations(handle)

    assert count > 500
    assert catalogue.gettext("Routing and API keys") == "路由与 API 密钥"
    assert catalogue.ngettext("%(count)d key revoked.", "%(count)d keys revoked.", 3) \
        == "已吊销 %(count)d 个密钥。"


# --- the API, the websocket and the command line -----------------------------------------


@pytest.mark.django_db
def test_api_error_message_follows_accept_language_and_its_code_stays_english(client):
    response = client.post("/v1/chat/completions", data="{}", content_type="application/json",
                           HTTP_ACCEPT_LANGUAGE="zh-CN")

    error = response.json()["error"]
    assert response.status_code == 401
    assert "API 密钥" in error["message"]
    assert error["code"].isascii()


def test_websocket_language_comes_from_its_session_cookie_or_headers():
    scope = {"headers": [(b"accept-language", b"zh-CN,zh;q=0.9")], "cookies": {},
             "session": {}}
    assert language_for_scope(scope) == "zh-hans"
    scope["session"] = {SESSION_KEY: "en"}
    assert language_for_scope(scope) == "en"
    scope["cookies"] = {settings.LANGUAGE_COOKIE_NAME: "zh-hans"}
    assert language_for_scope(scope) == "zh-hans"


def test_command_line_language_follows_the_shell():
    assert language_from_environment({"LANG": "zh_CN.UTF-8"}) == "zh-hans"
    assert language_from_environment({"LANGUAGE": "fr:zh_CN", "LANG": "en_US.UTF-8"}) \
        == "zh-hans"
    assert language_from_environment({"OPENCLAW_LANGUAGE": "zh-hans", "LANG": "C"}) \
        == "zh-hans"
    assert language_from_environment({"LANG": "C.UTF-8"}) == "en"
    assert language_from_environment({}) == "en"


@pytest.mark.django_db
def test_a_command_answers_in_chinese(capsys):
    from django.core.management import call_command

    with translation.override("zh-hans"):
        call_command("models", "list")

    assert "还没有注册任何模型" in capsys.readouterr().out


@pytest.mark.django_db(transaction=True)
async def test_websocket_frames_speak_the_pages_language():
    from channels.routing import URLRouter
    from channels.testing import WebsocketCommunicator

    from chat.websocket_urls import websocket_urlpatterns

    communicator = WebsocketCommunicator(
        URLRouter(websocket_urlpatterns), "/ws/chat/new/",
        headers=[(b"origin", b"http://127.0.0.1"), (b"accept-language", b"zh-CN")])
    connected, _subprotocol = await communicator.connect()
    frame = await communicator.receive_json_from(timeout=10)
    await communicator.disconnect()

    assert connected and frame["type"] == "error" and frame["code"] == "unauthorized"
    assert frame["message"].startswith("请先登录")


def test_up_compiles_a_catalogue_only_when_its_mo_is_missing_or_older(tmp_path):
    import os
    import shutil

    from openclaw_site.bootstrap import compile_catalogues

    # given: a checkout's catalogue, never compiled
    folder = tmp_path / "zh_Hans" / "LC_MESSAGES"
    folder.mkdir(parents=True)
    po = folder / "django.po"
    shutil.copy(settings.BASE_DIR / "locale" / "zh_Hans" / "LC_MESSAGES" / "django.po", po)
    said: list[str] = []

    # when / then: built once, then left alone until the .po changes
    assert compile_catalogues(tmp_path, said.append) == [po.with_suffix(".mo")]
    assert compile_catalogues(tmp_path, said.append) == []
    later = po.with_suffix(".mo").stat().st_mtime + 10
    os.utime(po, (later, later))
    assert compile_catalogues(tmp_path, said.append) == [po.with_suffix(".mo")]
    assert said == []


def test_the_lang_redirect_never_leaves_the_site(rf):
    from core.i18n import _without_lang

    request = rf.get("/admin/", {"lang": "en", "q": "x"})
    assert _without_lang(request) == "/admin/?q=x"
    for path in ("//evil.example/", "/\\evil.example/"):
        request.path = path
        assert _without_lang(request).startswith("/evil.example/")
