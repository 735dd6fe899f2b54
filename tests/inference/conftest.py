"""Fixtures for the inference tests: the loopback OpenAI-compatible server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.openai_server import OpenAIServer


@pytest.fixture(scope="session")
def openai_server_session() -> Iterator[OpenAIServer]:
    """One loopback server for the whole run (it runs in a thread of its own)."""
    with OpenAIServer() as server:
        yield server


@pytest.fixture
def openai_server(openai_server_session: OpenAIServer) -> OpenAIServer:
    """The session's server, with the requests and flaky counters of earlier tests forgotten."""
    openai_server_session.reset()
    return openai_server_session
