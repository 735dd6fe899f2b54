"""Give a test user Django permissions by their ``app_label.codename`` names."""

from __future__ import annotations

from django.contrib.auth.models import Permission


def grant(user, *perms: str):
    """Add ``perms`` to ``user`` and return it afresh (Django caches permissions on the
    instance it checked)."""
    for name in perms:
        app_label, codename = name.split(".", 1)
        user.user_permissions.add(Permission.objects.get(content_type__app_label=app_label,
                                                         codename=codename))
    return type(user).objects.get(pk=user.pk)
