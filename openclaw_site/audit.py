"""Audit trail entry point: ``audit(action, actor=..., target=..., detail=...)``.

Callable from anywhere (views, admin, signals, plugins, Celery tasks). It only
appends to an in-process buffer and returns: a background thread ships the events
to the ``routing.write_audit`` Celery task in batches (``routing.usage``), so an
audit call never waits on the database or the broker.
"""

from __future__ import annotations

import time


def audit(action: str, *, actor: str = "", target: str = "", detail: dict | None = None) -> None:
    """Record that ``actor`` did ``action`` to ``target``; never blocks, never raises.

    ``action`` is a short dotted name (``key.create``, ``admin.change``,
    ``plugin.block``, ``auth.login_failed``); ``detail`` must be JSON-serialisable.
    """
    from routing.usage import audit_buffer  # late: callable before the apps are loaded

    audit_buffer.add({
        "created_at": time.time(), "action": str(action)[:64],
        "actor": str(actor)[:150], "target": str(target)[:255], "detail": dict(detail or {}),
    })
