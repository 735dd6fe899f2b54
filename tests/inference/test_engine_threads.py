"""``inference.engines.base.in_thread``: an engine's blocking work runs in a thread
under the caller's language, so an error built there (a model that will not load, a
template that refuses the messages) reads in the language the request was made in."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.utils import translation

from inference.engines.base import in_thread


async def test_in_thread_runs_under_the_callers_language():
    with ThreadPoolExecutor(max_workers=1) as executor:
        with translation.override("zh-hans"):
            # asyncio.to_thread does not carry Django's language into the thread
            plain = await asyncio.to_thread(translation.get_language)
            default_pool = await in_thread(translation.get_language)
            own_pool = await in_thread(translation.get_language, executor=executor)
        with translation.override("en"):
            english = await in_thread(translation.get_language, executor=executor)

    assert plain == "en"
    assert (default_pool, own_pool, english) == ("zh-hans", "zh-hans", "en")


async def test_in_thread_returns_the_result_and_raises_the_error():
    assert await in_thread(sum, [1, 2, 3]) == 6

    with pytest.raises(ValueError, match="not a number"):
        await in_thread(int, "not a number")
