"""Which quota a signed-in user has (``Quota``'s rule: their own row, else the most
generous of their groups' rows limit by limit, else the row for everyone, else none),
and this process's copy of the quotas of the users it has seen (``QUOTAS``), which
every process drops when a quota, a user or a group membership changes — the next
turn counts by the new limits, without a restart."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.contrib.auth import get_user_model

from core.snapshot import VersionedSnapshot

from .limits import BUDGET, REQUESTS, TOKENS, Limit
from .quota_models import Quota, QuotaTarget


@dataclass(frozen=True)
class UserQuota:
    """A user as admission sees them: active or not, their limits and where they come
    from (``own``, ``group:<name>``…, ``everyone``; empty: no quota)."""

    user_id: int
    active: bool
    limits: tuple[Limit, ...]
    source: str = ""


def _limits_of(row: Quota, user_id: int) -> dict[str, Limit]:
    base = f"user:{user_id}"
    limits = {}
    if row.requests:
        limits[REQUESTS] = Limit(REQUESTS, row.requests, row.requests_period,
                                 f"{base}:requests-{row.requests_period}")
    if row.tokens:
        limits[TOKENS] = Limit(TOKENS, row.tokens, row.tokens_period,
                               f"{base}:tokens-{row.tokens_period}")
    if row.token_budget:
        limits[BUDGET] = Limit(BUDGET, row.token_budget, row.budget_period,
                               f"{base}:budget-{row.budget_period}")
    return limits


def most_generous(rows: list[Quota], user_id: int) -> tuple[Limit, ...]:
    """Limit by limit, the highest rate among ``rows``; none where any row sets none."""
    per_row = [_limits_of(row, user_id) for row in rows]
    chosen = []
    for kind in (REQUESTS, TOKENS, BUDGET):
        found = [limits.get(kind) for limits in per_row]
        if found and all(limit is not None for limit in found):
            chosen.append(max((f for f in found if f is not None), key=lambda f: f.rate))
    return tuple(chosen)


def effective_quota(user_id: int) -> UserQuota:
    """The quota of user ``user_id`` from the database (see the module's docstring)."""
    user = get_user_model().objects.filter(pk=user_id).only("is_active").first()
    if user is None:
        return UserQuota(user_id, False, ())
    own = Quota.objects.filter(target=QuotaTarget.USER, user_id=user_id).first()
    if own is not None:
        return UserQuota(user_id, user.is_active, tuple(_limits_of(own, user_id).values()),
                         "own")
    groups = list(Quota.objects.filter(target=QuotaTarget.GROUP, group__user=user_id)
                  .select_related("group").order_by("group__name"))
    if groups:
        return UserQuota(user_id, user.is_active, most_generous(groups, user_id),
                         "group:" + ",".join(row.group.name for row in groups if row.group))
    everyone = Quota.objects.filter(target=QuotaTarget.EVERYONE).first()
    if everyone is not None:
        return UserQuota(user_id, user.is_active,
                         tuple(_limits_of(everyone, user_id).values()), "everyone")
    return UserQuota(user_id, user.is_active, ())


# --- this process's copy ------------------------------------------------------------------

QUOTAS: VersionedSnapshot[dict[int, UserQuota]] = VersionedSnapshot(
    "routing:quotas:version", lambda version: {})
# Invalidate every process's copy once the current transaction commits (post_save /
# post_delete of quotas and users, m2m_changed of group memberships).
quotas_changed = QUOTAS.changed


def user_changed(sender: type | None = None, update_fields: Any = None,
                 **kwargs: Any) -> None:
    """A user saved: their quota may have changed (``is_active``), unless only their
    last sign-in time was written (every sign-in does that)."""
    if update_fields is not None and set(update_fields) <= {"last_login"}:
        return
    quotas_changed(sender, **kwargs)


def load_quota(user_id: int) -> UserQuota:
    """User ``user_id``'s quota from the database, kept in this process's copy (the
    version is read first, so a change racing with the read leaves the copy
    stale-marked, not stale)."""
    copies = QUOTAS.get()
    found = copies[user_id] = effective_quota(user_id)
    return found
