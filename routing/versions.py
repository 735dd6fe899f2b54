"""Version tokens: how a per-process copy (the routing rules and endpoints, the API
keys, the plugin chain) learns that another process changed what it copied.

A token is a random value under a name in the Django cache (Redis, shared by every web
replica and worker). A change replaces it once its transaction commits; a copy
remembers the token it was built under and is rebuilt when the current one differs.
A token that is missing (first use, or evicted) is created fresh, which invalidates
every copy as well.
"""

from __future__ import annotations

import uuid
from typing import Any

from django.core.cache import cache
from django.db import transaction


class VersionToken:
    def __init__(self, name: str):
        self.name = name

    def current(self) -> str:
        version = cache.get(self.name)
        if version is None:
            cache.add(self.name, uuid.uuid4().hex, timeout=None)
            version = cache.get(self.name)
        return version

    def bump(self) -> None:
        """Invalidate every process's copy now."""
        cache.set(self.name, uuid.uuid4().hex, timeout=None)

    def changed(self, sender: type | None = None, **kwargs: Any) -> None:
        """Invalidate every copy once the current transaction commits (a post_save /
        post_delete receiver; call it after a bulk ``.update()`` too, which sends none)."""
        transaction.on_commit(self.bump)
