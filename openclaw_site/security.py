"""Web security that Django does not ship: a content security policy header and
login throttling for the admin (and any other sign-in form that uses Django's
``authenticate``)."""

from __future__ import annotations

import hashlib

from django.conf import settings
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth import get_user_model
from django.contrib.auth.backends import ModelBackend
from django.core.cache import cache
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpRequest, HttpResponse
from django.utils.deprecation import MiddlewareMixin
from django.utils.translation import gettext_lazy as _

from core.client_ip import client_ip

# --- content security policy ----------------------------------------------------------


class ContentSecurityPolicyMiddleware(MiddlewareMixin):
    """``Content-Security-Policy: settings.OPENCLAW_CSP`` on HTML pages (the studio, the
    admin) that do not set their own; an empty setting sends none."""

    def process_response(self, request: HttpRequest, response: HttpResponse) -> HttpResponse:
        policy = settings.OPENCLAW_CSP
        content_type = response.get("Content-Type", "")
        if policy and content_type.startswith("text/html") and (
                "Content-Security-Policy" not in response):
            response["Content-Security-Policy"] = policy
        return response


# --- login throttling ------------------------------------------------------------------


def _counter(kind: str, value: str) -> str:
    # Hashed: a username may be long or hold characters a cache key must not.
    return f"login-fail:{kind}:{hashlib.sha256(value.encode()).hexdigest()[:32]}"


def _subjects(request: HttpRequest | None, username: str | None) -> list[str]:
    """The counters a sign-in attempt is charged to: its client address and username."""
    subjects = []
    if request is not None:
        address = client_ip(request.META.get("REMOTE_ADDR", ""),
                            request.headers.get("X-Forwarded-For"))
        if address:
            subjects.append(_counter("ip", address))
    if username:
        subjects.append(_counter("user", username.strip().lower()))
    return subjects


def login_locked(request: HttpRequest | None, username: str | None) -> bool:
    """True while the client address or the username has had
    ``OPENCLAW_LOGIN_MAX_FAILURES`` failed sign-ins within ``OPENCLAW_LOGIN_WINDOW_S``."""
    counts = cache.get_many(_subjects(request, username))
    return any(int(count) >= settings.OPENCLAW_LOGIN_MAX_FAILURES for count in counts.values())


def record_login_failure(request: HttpRequest | None, username: str | None) -> None:
    """Count a failed sign-in; the first failure starts the window (its counter's TTL)."""
    for key in _subjects(request, username):
        cache.add(key, 0, timeout=settings.OPENCLAW_LOGIN_WINDOW_S)
        try:
            cache.incr(key)
        except ValueError:  # expired between add and incr: a new window
            cache.add(key, 1, timeout=settings.OPENCLAW_LOGIN_WINDOW_S)


def clear_login_failures(username: str | None) -> None:
    """A successful sign-in forgets the username's failures (not the address's)."""
    if username:
        cache.delete(_counter("user", username.strip().lower()))


def lockout_message() -> str:
    minutes = max(1, settings.OPENCLAW_LOGIN_WINDOW_S // 60)
    return _("Too many failed sign-in attempts. Try again in %(minutes)d minutes.") % {
        "minutes": minutes}


class ThrottledModelBackend(ModelBackend):
    """Django's username/password backend, refusing (``PermissionDenied``, which stops
    every backend) while the address or username is locked out, and counting failures."""

    def authenticate(self, request, username=None, password=None, **kwargs):
        if username is None:
            username = kwargs.get(get_user_model().USERNAME_FIELD)
        if login_locked(request, username):
            raise PermissionDenied(lockout_message())
        user = super().authenticate(request, username=username, password=password, **kwargs)
        if user is None:
            record_login_failure(request, username)
        else:
            clear_login_failures(username)
        return user


class ThrottledAdminAuthenticationForm(AdminAuthenticationForm):
    """The admin's login form, saying plainly that the sign-in is locked out (rather than
    "wrong password") while it is."""

    def clean(self):
        if login_locked(self.request, self.cleaned_data.get("username")):
            raise ValidationError(lockout_message(), code="throttled")
        return super().clean()
