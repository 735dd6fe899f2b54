"""The Celery tasks of the inference app are thin: ``generate`` hands the caller's
language to the service only when it is one the site offers."""

from __future__ import annotations

from inference import tasks


def test_generate_passes_on_the_callers_language_only_when_it_is_offered(monkeypatch):
    seen = []
    monkeypatch.setattr(tasks.services, "run_generation",
                        lambda config, request, reply, language: seen.append(language))

    for language in ("zh-hans", "en", "xx", ""):
        tasks.generate({}, {}, "reply", language)
    tasks.generate({}, {}, "reply")  # queued by a caller from before the language was sent

    assert seen == ["zh-hans", "en", None, None, None]
