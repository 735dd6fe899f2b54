"""A newcomer's first minutes on a fresh ``openclaw up``, in Chromium at 1366×768 on the
demo registry (fixtures/10_models.json: echo; 30_embedding.json: all-MiniLM-L6-v2): the
studio starts on a model that can chat (echo, labelled as the wiring check, until a real
chat model is configured, which then wins), never offers the embedding model, shows
model names whole, lists conversations as plain, full-width, clickable rows, fades only
the answer a regenerate replaces; ``/`` and the admin's "View site" lead to the studio,
the model list fits the admin's page and ``/favicon.ico`` answers."""

from __future__ import annotations

import httpx
import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command

from chat.models import Conversation, Message
from chat.studio import available_models, default_model
from inference.kinds import NON_CHAT_ENGINES, EngineKind
from jobs.models import BatchFile, BatchJob, BatchStatus, Dataset, FineTuneJob
from routing.models import ModelEndpoint
from tests.studio.conftest import sign_in

pytestmark = [pytest.mark.django_db(transaction=True),
              pytest.mark.usefixtures("quiet_server_env")]
PASSWORD = "first-run-pass-1"
EMBEDDING = "all-minilm-l6-v2"
WIDE = {"width": 1366, "height": 768}
# A select shows its whole chosen option when it is at least as wide as it would be
# with no width limit at all (its natural width: the widest option's text).
CLIPPED = """(id) => {
  const select = document.getElementById(id);
  const shown = select.getBoundingClientRect().width;
  const copy = select.cloneNode(true);
  copy.style.cssText = "position: absolute; width: auto; max-width: none; min-width: 0";
  select.parentNode.appendChild(copy);
  const natural = copy.getBoundingClientRect().width;
  copy.remove();
  return {shown, natural};
}"""


@pytest.fixture
def newcomer():
    """The demo registry as ``openclaw up`` loads it, and the operator's account."""
    call_command("loaddata", "fixtures/10_models.json", "fixtures/30_embedding.json",
                 verbosity=0)
    return get_user_model().objects.create_superuser("newcomer", password=PASSWORD)


@pytest.fixture
def open_studio(browser, live_server_url, newcomer):
    """Sign in and open the studio at 1366×768 (a fresh browser each call)."""
    contexts = []

    def open_() -> object:
        context = browser.new_context(viewport=WIDE, locale="en-US", color_scheme="light")
        contexts.append(context)
        page = context.new_page()
        page.errors = []
        page.on("pageerror", lambda exc: page.errors.append(str(exc)))
        sign_in(page, f"{live_server_url}/studio/", "newcomer", PASSWORD)
        return page

    yield open_
    for context in contexts:
        context.close()


def options(page, select: str) -> list[str]:
    return page.eval_on_selector_all(f"{select} option", "all => all.map(o => o.value)")


def send(page, text: str) -> None:
    count = page.locator("#pane-a .msg.assistant .actions").count()
    page.fill("#prompt", text)
    page.keyboard.press("Enter")
    page.wait_for_function("n => document.querySelectorAll('#pane-a .msg.assistant .actions')"
                           ".length > n", arg=count, timeout=15000)


# --- the registry's chat models (no browser) ---------------------------------------------


@pytest.mark.parametrize("kind", sorted(NON_CHAT_ENGINES))
def test_a_model_that_cannot_chat_is_never_offered_to_a_conversation(kind):
    ModelEndpoint.objects.create(name="aaa-cannot-chat", engine=kind)
    ModelEndpoint.objects.create(name="echo", engine=EngineKind.ECHO)

    models = available_models()

    assert [m["name"] for m in models] == ["echo"]
    assert models[0]["label"] == "echo (wiring check)"  # no display name: said so
    assert default_model(models) == "echo"


def test_a_real_chat_model_is_the_default_over_echo_and_a_disabled_one_is_not():
    ModelEndpoint.objects.create(name="echo", engine=EngineKind.ECHO)
    ModelEndpoint.objects.create(name="aaa-off", engine=EngineKind.OPENAI, enabled=False,
                                 endpoint_url="http://127.0.0.1:9/v1")
    assert default_model(available_models()) == "echo"

    ModelEndpoint.objects.create(name="zz-cloud", engine=EngineKind.OPENAI,
                                 endpoint_url="http://127.0.0.1:9/v1")
    assert default_model(available_models()) == "zz-cloud"
    assert default_model([]) == ""


# --- the studio in Chromium ----------------------------------------------------------------


def test_the_studio_starts_on_echo_as_the_wiring_check_and_never_offers_embeddings(
        open_studio, tmp_path):
    # when: the first visit on the demo data
    page = open_studio()

    # then: echo is picked, labelled as the wiring check, shown whole; no embedding model
    assert page.input_value("#model") == "echo"
    assert page.eval_on_selector("#model", "s => s.selectedOptions[0].text") == \
        "Echo (wiring check)"
    size = page.evaluate(CLIPPED, "model")
    assert size["shown"] >= size["natural"] - 0.5, size
    assert EMBEDDING not in options(page, "#model")
    page.click("#compare")
    assert EMBEDDING not in options(page, "#model-b")
    assert options(page, "#model-b") == ["echo"]
    page.click("#compare")

    # when: the first "hello"
    send(page, "hello")

    # then: an answer, not an error
    answer = page.locator("#pane-a .msg.assistant").last
    assert answer.locator(".body").inner_text() == "hello"
    assert page.locator(".msg.error").count() == 0
    page.screenshot(path=str(tmp_path / "studio-first-run.png"))
    assert page.errors == []


def test_a_configured_chat_model_is_the_default_and_echo_the_second(open_studio,
                                                                    openai_server):
    # given: a remote chat model registered next to the demo data
    ModelEndpoint.objects.create(name="loopback", display_name="Loopback (OpenAI-compatible)",
                                 engine="openai", upstream_model="tokens-3",
                                 endpoint_url=openai_server.url)

    # when
    page = open_studio()

    # then: it is the default; side by side sets echo against it; no embedding model
    assert page.input_value("#model") == "loopback"
    assert page.input_value("#model-b") == "echo"
    assert sorted(options(page, "#model")) == ["echo", "loopback"]
    size = page.evaluate(CLIPPED, "model")
    assert size["shown"] >= size["natural"] - 0.5, size
    send(page, "a real question")
    assert page.locator("#pane-a .msg.assistant .body").last.inner_text().startswith("echo:")
    assert page.errors == []


def test_conversation_rows_are_plain_full_width_and_open_from_anywhere(open_studio,
                                                                       newcomer, tmp_path):
    # given: two conversations, one with Markdown and a long title
    long = Conversation.objects.create(
        user="newcomer", owner=newcomer, model="echo",
        title="What does **bold** mean in `markdown` when a title is far too long to fit")
    Message.objects.create(conversation=long, turn=1, role="user", content="the long one")
    short = Conversation.objects.create(user="newcomer", owner=newcomer, model="echo",
                                        title="*Short* one")
    Message.objects.create(conversation=short, turn=1, role="user", content="the short one")

    # when
    page = open_studio()
    page.locator("#conversations li a.open").nth(1).wait_for()

    # then: plain text, over the row's whole width, cut with an ellipsis at its end
    row = page.locator(f'#conversations li[data-id="{long.pk}"]')
    title = row.locator("a.open")
    assert title.inner_text().startswith("What does bold mean in markdown when")
    assert page.locator(f'#conversations li[data-id="{short.pk}"] a.open').inner_text() == \
        "Short one"
    widths = row.evaluate("""li => {
      const a = li.querySelector("a.open"), s = getComputedStyle(li);
      return {row: li.clientWidth - parseFloat(s.paddingLeft) - parseFloat(s.paddingRight),
              title: a.clientWidth, text: a.scrollWidth,
              overflow: getComputedStyle(a).textOverflow};
    }""")
    assert widths["title"] >= widths["row"] - 1, widths
    assert widths["text"] > widths["title"] and widths["overflow"] == "ellipsis", widths
    page.screenshot(path=str(tmp_path / "studio-sidebar.png"))

    # when: a click on the row's empty area (right of its time, below the title)
    box = row.bounding_box()
    page.mouse.click(box["x"] + box["width"] - 12, box["y"] + box["height"] - 6)

    # then: that conversation opens
    page.wait_for_function("id => location.hash === '#' + id", arg=str(long.pk))
    page.locator("#pane-a .msg.user").filter(has_text="the long one").wait_for()

    # when: the other row from the keyboard
    page.focus(f'#conversations li[data-id="{short.pk}"] a.open')
    page.keyboard.press("Enter")

    # then
    page.wait_for_function("id => location.hash === '#' + id", arg=str(short.pk))
    page.locator("#pane-a .msg.user").filter(has_text="the short one").wait_for()
    assert page.errors == []


def test_regenerate_fades_only_the_answer_it_replaces(open_studio):
    # given: two turns
    page = open_studio()
    send(page, "first question")
    send(page, "second question")

    # when
    page.locator("#pane-a .msg.assistant .regenerate").click()
    page.wait_for_function("() => document.querySelectorAll('#pane-a .msg.assistant .actions')"
                           ".length === 3")

    # then: the replaced answer alone is faded; the first turn and the question are not
    faded = page.locator("#pane-a .msg.superseded")
    assert faded.count() == 1
    assert "assistant" in faded.get_attribute("class")
    assert faded.locator(".body").inner_text() == "second question"
    assert page.locator("#pane-a .msg.user.superseded").count() == 0

    # when: the page is loaded again (the question was stored twice)
    page.reload()
    page.wait_for_function("() => document.querySelectorAll('#pane-a .msg.assistant .actions')"
                           ".length === 3")

    # then: it reads as it did
    assert page.locator("#pane-a .msg.user").count() == 2
    assert page.locator("#pane-a .msg.superseded").count() == 1
    assert page.locator("#pane-a .msg.superseded .body").inner_text() == "second question"
    assert page.errors == []


# --- the way in: /, the admin, the icon --------------------------------------------------


def test_root_and_view_site_lead_to_the_studio_and_the_icon_answers(live_server_url,
                                                                   open_studio):
    root = httpx.get(f"{live_server_url}/")
    assert root.status_code == 302 and root.headers["location"] == "/studio/"
    icon = httpx.get(f"{live_server_url}/favicon.ico", follow_redirects=True)
    assert icon.status_code == 200 and icon.content[:4] == b"\x00\x00\x01\x00"  # an ICO

    page = open_studio()
    linked = page.eval_on_selector_all("link[rel~=icon]", "all => all.map(l => l.href)")
    assert linked and all(httpx.get(href).status_code == 200 for href in linked)

    # when: the operator's admin, ModelEndpoint list with a long URL, at 1366 px
    ModelEndpoint.objects.create(
        name="a-remote-model-with-a-long-name", engine="openai",
        endpoint_url="https://inference.example-cloud-provider.internal:8443/v1/deployments"
                     "/production-chat", api_key="sk-first-run-0123456789")
    page.goto(f"{live_server_url}/admin/")
    assert page.get_attribute("#user-tools a[href='/studio/']", "href") == "/studio/"
    for language in ("en", "zh-hans"):
        page.goto(f"{live_server_url}/admin/routing/modelendpoint/?lang={language}")
        page.wait_for_selector("#result_list")

        # then: the list fits the page and its own box: no sideways scroll in either
        sizes = page.evaluate("""() => ({page: document.documentElement.scrollWidth,
          window: innerWidth, table: document.getElementById("result_list").scrollWidth,
          box: document.querySelector("#changelist .results").clientWidth})""")
        assert sizes["page"] <= sizes["window"] and sizes["table"] <= sizes["box"], \
            (language, sizes)
    assert page.errors == []


def test_job_statuses_and_units_are_in_the_page_language(open_studio, live_server_url,
                                                         newcomer):
    # given: a finished batch and a running fine-tuning job
    upload = BatchFile.objects.create(purpose="batch", filename="in.jsonl", content=b"")
    BatchJob.objects.create(input_file=upload, total=4, done=4,
                            status=BatchStatus.COMPLETED)
    base = ModelEndpoint.objects.create(name="tiny-base", engine="transformers",
                                        model_path="/models/tiny", enabled=False)
    dataset = Dataset.objects.create(name="support", content=b"{}", sha256="0" * 64,
                                     line_count=1)
    FineTuneJob.objects.create(base_endpoint=base, dataset=dataset, status="running",
                               step=2, total_steps=6, losses=[[1, 2.0], [2, 1.5]])
    # when: the jobs page in Chinese
    page = open_studio()
    page.goto(f"{live_server_url}/studio/jobs/?lang=zh-hans")
    page.locator("#tune-rows tr[data-id]").wait_for()
    page.locator("#batch-rows tr[data-id]").wait_for()

    # then: the statuses are the catalogue's words, not the stored codes
    batch_status = page.locator("#batch-rows tr[data-id] td").nth(2).inner_text()
    tune_status = page.locator("#tune-rows tr[data-id] td").nth(2).inner_text()
    assert (batch_status, tune_status) == ("已完成", "运行中")
    assert page.errors == []
