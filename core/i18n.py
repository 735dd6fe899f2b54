"""Which language a request is answered in: English or Simplified Chinese.

The seed's order, first match wins:

1. ``?lang=en`` / ``?lang=zh-hans`` on this request — remembered in the session and
   in Django's language cookie, and saved as the signed-in user's preference;
2. what was remembered that way: the cookie (which Django's ``/i18n/setlang/`` also
   sets), then the session;
3. the signed-in user's saved preference (``chat.UserPreference``);
4. the browser's ``Accept-Language``;
5. English (``LANGUAGE_CODE``).

``LanguageMiddleware`` takes the place of Django's ``LocaleMiddleware`` (it keeps
its ``Content-Language`` and ``Vary`` handling). The studio's websocket has no
middleware: its consumer activates ``language_for_scope`` when it connects. The
``/v1`` API follows ``Accept-Language`` only (chat/v1_asgi.py); the ``openclaw``
command, ``language_from_environment``.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, cast
from urllib.parse import urlencode

from django.apps import apps
from django.conf import settings
from django.contrib import auth
from django.http import HttpRequest, HttpResponse, HttpResponseBase, HttpResponseRedirect
from django.middleware.locale import LocaleMiddleware
from django.utils import translation
from django.utils.cache import patch_vary_headers
from django.utils.translation.trans_real import parse_accept_lang_header

QUERY_PARAMETER = "lang"
SESSION_KEY = "openclaw_language"

_SameSite = Literal["Lax", "Strict", "None", False] | None  # what set_cookie accepts


def supported(code: Any) -> str | None:
    """``code`` as one of ``LANGUAGES`` (``zh-Hans``, ``zh_hans`` → ``zh-hans``), or None."""
    if not isinstance(code, str) or not code.strip():
        return None
    code = code.strip().replace("_", "-").lower()
    if code in dict(settings.LANGUAGES):
        return code
    try:
        return translation.get_supported_language_variant(code)
    except LookupError:
        return None


def accepted(header: str) -> str | None:
    """The first supported language an ``Accept-Language`` header asks for."""
    for tag, _quality in parse_accept_lang_header(header or ""):
        if tag != "*" and (code := supported(tag)):
            return code
    return None


def saved_language(user: Any) -> str | None:
    """The language the user chose last time (their ``UserPreference``), or None."""
    if user is None or not getattr(user, "is_authenticated", False):
        return None
    preference = getattr(user, "preference", None)  # none saved (or no such model yet)
    return supported(getattr(preference, "language", None))


def save_language(user: Any, language: str) -> None:
    """Keep ``language`` as the signed-in user's preference (when the model exists)."""
    if user is None or not getattr(user, "is_authenticated", False):
        return
    try:
        model = apps.get_model("chat", "UserPreference")
    except LookupError:
        return
    model.objects.update_or_create(user=user, defaults={"language": language})


def choose(*, asked: Any = None, session: Any = None, cookie: Any = None,
           user: Any = None, accept: str = "") -> str:
    """The seed's order: asked, remembered (cookie, session), saved, Accept-Language."""
    return (supported(asked) or supported(cookie) or supported(session)
            or saved_language(user) or accepted(accept) or settings.LANGUAGE_CODE)


SHELL_VARIABLES = ("OPENCLAW_LANGUAGE", "LANGUAGE", "LC_ALL", "LC_MESSAGES", "LANG")


def shell_locales(environ: Mapping[str, str] | None = None) -> list[str]:
    """The locales the shell asks for, in order: the parts of the first of
    ``SHELL_VARIABLES`` that is set, as gettext reads it (``zh_CN.UTF-8`` → ``zh_CN``;
    ``LANGUAGE`` may list several: ``zh_CN:en``); [] when none is. Reads no settings."""
    environ = os.environ if environ is None else environ
    for name in SHELL_VARIABLES:
        value = environ.get(name, "").strip()
        if value:
            return [part.split(".")[0].split("@")[0] for part in value.split(":")]
    return []


def language_from_environment(environ: Mapping[str, str] | None = None) -> str:
    """The command line's language: ``OPENCLAW_LANGUAGE``, else the POSIX locale
    (``shell_locales``); English for ``C``, ``POSIX`` or a language we have no catalogue
    for."""
    for part in shell_locales(environ):
        if code := supported(part):
            return code
    return settings.LANGUAGE_CODE


def language_for_scope(scope: dict[str, Any]) -> str:
    """The language of a websocket connection (after ``AuthMiddlewareStack``); reads the
    database for a saved preference, so call it through ``database_sync_to_async``."""
    headers = {name.decode("latin-1").lower(): value.decode("latin-1")
               for name, value in scope.get("headers", [])}
    session = scope.get("session")
    return choose(session=session.get(SESSION_KEY) if session is not None else None,
                  cookie=scope.get("cookies", {}).get(settings.LANGUAGE_COOKIE_NAME),
                  user=scope.get("user"), accept=headers.get("accept-language", ""))


class LanguageMiddleware(LocaleMiddleware):
    """Activates the language ``choose`` picks; ``?lang=`` on a GET redirects to the
    same address without it (so an admin list does not take it for a filter)."""

    # Django's middleware may answer from process_request; the stubs type
    # LocaleMiddleware.process_request as returning None only.
    def process_request(  # type: ignore[override]  # stubs: LocaleMiddleware returns None
            self, request: HttpRequest) -> HttpResponse | None:
        asked = supported(request.GET.get(QUERY_PARAMETER))
        session = getattr(request, "session", None)
        remembered = session.get(SESSION_KEY) if session is not None else None
        cookie = request.COOKIES.get(settings.LANGUAGE_COOKIE_NAME)
        user = None
        if asked or not (supported(remembered) or supported(cookie)):
            user = _user(request)
        language = choose(asked=asked, session=remembered, cookie=cookie, user=user,
                          accept=request.headers.get("accept-language", ""))
        translation.activate(language)
        request.LANGUAGE_CODE = translation.get_language()
        if asked:
            if session is not None:
                session[SESSION_KEY] = asked
            save_language(user, asked)
            # Read back in process_response.
            request._openclaw_language_asked = asked  # type: ignore[attr-defined]  # own marker
            if request.method in ("GET", "HEAD"):
                return HttpResponseRedirect(_without_lang(request))
        return None

    def process_response(self, request: HttpRequest,
                         response: HttpResponseBase) -> HttpResponseBase:
        asked = getattr(request, "_openclaw_language_asked", None)
        if asked and settings.LANGUAGE_COOKIE_NAME not in response.cookies:
            response.set_cookie(
                settings.LANGUAGE_COOKIE_NAME, asked,
                max_age=settings.LANGUAGE_COOKIE_AGE,
                path=settings.LANGUAGE_COOKIE_PATH, domain=settings.LANGUAGE_COOKIE_DOMAIN,
                secure=settings.LANGUAGE_COOKIE_SECURE or settings.SESSION_COOKIE_SECURE,
                httponly=settings.LANGUAGE_COOKIE_HTTPONLY,
                # The settings module assigns a plain "Lax", typed str.
                samesite=cast(_SameSite, settings.LANGUAGE_COOKIE_SAMESITE))
        patch_vary_headers(response, ("Cookie",))
        return super().process_response(request, response)


def _user(request: HttpRequest) -> Any:
    """The signed-in user, loaded once: AuthenticationMiddleware (later in the chain)
    reuses what is cached here."""
    if not hasattr(request, "session"):
        return None
    # _cached_user: AuthenticationMiddleware's private cache, not in the stubs.
    if not hasattr(request, "_cached_user"):
        request._cached_user = auth.get_user(request)  # type: ignore[attr-defined]  # private
    return request._cached_user  # type: ignore[attr-defined]  # Django's private cache


def _without_lang(request: HttpRequest) -> str:
    """This page's address without ``lang``; always on this site (``//host/…`` or
    ``/\\host/…`` as a path would send the browser elsewhere)."""
    query = [(key, value) for key, values in request.GET.lists() if key != QUERY_PARAMETER
             for value in values]
    return "/" + request.path.lstrip("/\\") + (f"?{urlencode(query)}" if query else "")


# --- catalogues: .po → .mo without GNU gettext (``openclaw up`` on a fresh checkout) ---


def compile_catalogue(po_path: Path, mo_path: Path) -> int:
    """Write ``mo_path`` from ``po_path``: translated, non-fuzzy entries only (what
    ``msgfmt`` keeps); returns how many. ``tests/run.sh`` uses Django's
    ``compilemessages`` (msgfmt, with its format checks) instead."""
    catalogue = {}
    for entry in _po_entries(po_path.read_text(encoding="utf-8")):
        if entry["fuzzy"] and entry["msgid"]:
            continue
        forms = [entry["msgstr"][i] for i in sorted(entry["msgstr"])]
        if entry["msgid"] and not all(forms):
            continue
        key = entry["msgid"] + ("\0" + entry["msgid_plural"] if entry["msgid_plural"] else "")
        if entry["msgctxt"] is not None:
            key = entry["msgctxt"] + "\x04" + key
        catalogue[key] = "\0".join(forms)
    mo_path.write_bytes(_mo_bytes(catalogue))
    return len(catalogue) - ("" in catalogue)


def _po_entries(text: str) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    entry: dict[str, Any] | None = None
    field: str | None = None
    for raw in text.splitlines() + [""]:
        line = raw.strip()
        if not line or line.startswith("#~"):
            if entry is not None and line == "":
                entries.append(entry)
                entry = None
            continue
        if entry is None:
            entry = {"msgctxt": None, "msgid": "", "msgid_plural": "", "msgstr": {},
                     "fuzzy": False}
        if line.startswith("#"):
            entry["fuzzy"] |= line.startswith("#,") and "fuzzy" in line
            continue
        keyword, _space, rest = line.partition(" ")
        if line.startswith('"'):
            # A continuation string always follows a keyword in a well-formed catalogue.
            assert field is not None
            keyword, rest = field, line
        else:
            field = keyword
        value = _unquote(rest)
        if keyword.startswith("msgstr"):
            index = int(keyword[7:-1]) if "[" in keyword else 0
            entry["msgstr"][index] = entry["msgstr"].get(index, "") + value
        else:
            entry[keyword] = (entry[keyword] or "") + value
    return entries


def _unquote(quoted: str) -> str:
    escapes = {"n": "\n", "t": "\t", '"': '"', "\\": "\\", "r": "\r"}
    body, out, index = quoted.strip()[1:-1], [], 0
    while index < len(body):
        if body[index] == "\\" and index + 1 < len(body):
            out.append(escapes.get(body[index + 1], body[index + 1]))
            index += 2
        else:
            out.append(body[index])
            index += 1
    return "".join(out)


def _mo_bytes(catalogue: dict[str, str]) -> bytes:
    """GNU .mo layout (as CPython's Tools/i18n/msgfmt.py writes it), no hash table."""
    keys = sorted(catalogue)
    ids = strs = b""
    offsets = []
    for key in keys:
        key_bytes, value_bytes = key.encode(), catalogue[key].encode()
        offsets.append((len(ids), len(key_bytes), len(strs), len(value_bytes)))
        ids += key_bytes + b"\0"
        strs += value_bytes + b"\0"
    ids_start = 7 * 4 + len(keys) * 16
    strs_start = ids_start + len(ids)
    table = [n for id_offset, id_length, _o, _l in offsets
             for n in (id_length, ids_start + id_offset)]
    table += [n for _o, _l, str_offset, str_length in offsets
              for n in (str_length, strs_start + str_offset)]
    header = struct.pack("Iiiiiii", 0x950412DE, 0, len(keys), 7 * 4,
                         7 * 4 + len(keys) * 8, 0, 0)
    return header + struct.pack(f"{len(table)}i", *table) + ids + strs
