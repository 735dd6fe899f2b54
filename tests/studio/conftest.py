"""Fixtures for the studio's browser tests: the live web server (tests/chat's) and
Debian's Chromium driven by Playwright (installed by tests/run.sh from
tests/debian-packages.txt; never `playwright install`)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

from tests.chat.conftest import live_server_url  # noqa: F401  (the fixture, shared)

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--disable-quic"]


@pytest.fixture(scope="module")
def quiet_server_env() -> Iterator[None]:
    """Settings for the live server this module starts: no long-term recall (the
    embedding model's load would dominate every turn)."""
    saved = os.environ.get("OPENCLAW_MEMORY_TOP_K")
    os.environ["OPENCLAW_MEMORY_TOP_K"] = "0"
    yield
    if saved is None:
        os.environ.pop("OPENCLAW_MEMORY_TOP_K", None)
    else:
        os.environ["OPENCLAW_MEMORY_TOP_K"] = saved


@pytest.fixture(scope="module")
def browser(live_server_url) -> Iterator:  # noqa: F811  (the server starts first)
    """Chromium for the module. Playwright's sync API runs an event loop in this
    thread, so Django's sync-only guard (the test's database set-up and flush) is
    lifted in this process for the browser's lifetime; the server, already started,
    keeps it."""
    if not shutil.which(CHROMIUM):
        pytest.fail("Chromium is missing: tests/run.sh installs Debian's `chromium`")
    from playwright.sync_api import sync_playwright

    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            yield browser
            browser.close()
    finally:
        os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)


def sign_in(page, studio_url: str, username: str, password: str) -> None:
    """Open the studio at ``studio_url`` (its sign-in page first) and wait until it is
    ready (``body[data-ready]``)."""
    page.goto(studio_url)
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("button[type=submit]")
    page.wait_for_selector("body[data-ready]")


def page_in(browser, base_url: str, language: str, contexts: list, *, width: int = 1440,
            height: int = 900):
    """A new page of its own context in ``language`` (Django's language cookie and the
    browser's locale), light scheme; its uncaught errors gathered in ``page.errors``.
    The context joins ``contexts`` for the fixture to close."""
    context = browser.new_context(viewport={"width": width, "height": height},
                                  locale="zh-CN" if language == "zh-hans" else "en-US",
                                  color_scheme="light")
    context.add_cookies([{"name": "django_language", "value": language, "url": base_url}])
    contexts.append(context)
    page = context.new_page()
    page.errors = []
    page.on("pageerror", lambda exc: page.errors.append(str(exc)))
    return page
