"""``openclaw keys create|list|rotate|revoke``: API keys from the command line.

``create`` and ``rotate`` print the secret alone on the last line of standard
output (or JSON with ``--json``); it is not stored and cannot be shown again.
``rotate-data`` re-encrypts data at rest sealed with an older encryption key.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, time, timedelta

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime
from django.utils.translation import gettext as _

from core.crypto import active_key_id
from core.rotation import rotate_data
from routing.key_models import ApiKey, BudgetPeriod
from routing.keys import KeyRefused, create_key, revoke_key, rotate_key

RELATIVE_RE = re.compile(r"^(\d+)([dh])$")


def parse_expiry(text: str) -> datetime:
    """``2027-01-01``, ``2027-01-01T12:00:00+00:00``, ``30d`` or ``12h`` → an aware datetime."""
    match = RELATIVE_RE.match(text.strip())
    if match:
        amount, unit = int(match[1]), match[2]
        return timezone.now() + timedelta(**{"days" if unit == "d" else "hours": amount})
    try:
        moment = parse_datetime(text)
        if moment is None:
            day = parse_date(text)
            moment = datetime.combine(day, time.min) if day else None
    except ValueError:
        moment = None
    if moment is None:
        raise CommandError(_("--expires %(text)r is not a date: use 2027-01-01, "
                             "2027-01-01T12:00:00+00:00, 30d or 12h") % {"text": text})
    if timezone.is_naive(moment):
        moment = timezone.make_aware(moment, timezone.get_default_timezone())
    if moment <= timezone.now():
        raise CommandError(_("--expires %(text)r is in the past") % {"text": text})
    return moment


def split_list(values: list[str] | None) -> list[str]:
    return [v.strip() for value in values or [] for v in value.split(",") if v.strip()]


def key_row(key: ApiKey) -> dict:
    """Everything about a key except its secret (which is not stored)."""
    return {
        "prefix": key.prefix, "name": key.name,
        "owner": key.owner.get_username() if key.owner else None,
        "models": key.allowed_models, "cidrs": key.allowed_cidrs,
        "rpm": key.rpm_limit, "tpm": key.tpm_limit, "budget": key.token_budget,
        "budget_period": key.budget_period,
        "expires_at": key.expires_at.isoformat() if key.expires_at else None,
        "rotation_hours": key.rotation_hours,
        "rotated_from": key.rotated_from.prefix if key.rotated_from else None,
        "grace_until": key.grace_until.isoformat() if key.grace_until else None,
        "revoked": key.revoked_at is not None,
        "created_at": key.created_at.isoformat(),
    }


class Command(BaseCommand):
    help = "Create, list, rotate and revoke API keys."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        create = sub.add_parser("create", help="issue a key; prints its secret once")
        create.add_argument("--name", required=True)
        create.add_argument("--models", action="append",
                            help="allowed models, comma-separated (default: all)")
        create.add_argument("--cidr", action="append",
                            help="allowed client network, repeatable (IPv4 or IPv6)")
        create.add_argument("--rpm", type=int, help="requests per minute")
        create.add_argument("--tpm", type=int, help="tokens per minute")
        create.add_argument("--budget", type=int, help="tokens per budget period")
        create.add_argument("--budget-period", choices=BudgetPeriod.values,
                            default=BudgetPeriod.MONTH)
        create.add_argument("--expires", help="2027-01-01, an ISO datetime, 30d or 12h")
        create.add_argument("--rotation-hours", type=int, default=72,
                            help="rotate automatically every H hours (0: never)")
        create.add_argument("--owner", help="username of the key's owner")
        create.add_argument("--json", action="store_true")
        listing = sub.add_parser("list", help="all keys (never their secrets)")
        listing.add_argument("--json", action="store_true")
        rotate = sub.add_parser("rotate", help="issue a successor; prints its secret once")
        rotate.add_argument("prefix")
        rotate.add_argument("--grace-hours", type=float,
                            help="how long the old key keeps working "
                                 "(default OPENCLAW_KEY_ROTATION_GRACE_HOURS)")
        rotate.add_argument("--json", action="store_true")
        revoke = sub.add_parser("revoke", help="refuse a key from now on")
        revoke.add_argument("prefix")
        sub.add_parser("rotate-data", help="re-encrypt data at rest with the current "
                       "encryption key (the first of OPENCLAW_ENCRYPTION_KEYS)")

    def handle(self, *args, action, **options):
        getattr(self, f"_{action.replace('-', '_')}")(**options)

    def _create(self, name, models, cidr, rpm, tpm, budget, budget_period, expires,
                rotation_hours, owner, json, **_options):
        fields = {
            "allowed_models": split_list(models), "allowed_cidrs": split_list(cidr),
            "rpm_limit": rpm, "tpm_limit": tpm, "token_budget": budget,
            "budget_period": budget_period, "rotation_hours": rotation_hours,
            "expires_at": parse_expiry(expires) if expires else None,
            "owner": self._user(owner) if owner else None,
        }
        try:
            key, secret = create_key(name, **fields)
        except ValidationError as exc:
            raise CommandError(self._explain(exc)) from None
        self._print_secret(key, secret, json)

    def _list(self, json, **_options):
        rows = [key_row(k) for k in ApiKey.objects.select_related("owner", "rotated_from")]
        if json:
            self.stdout.write(_json(rows))
            return
        if not rows:
            self.stdout.write(_("no API keys (openclaw keys create --name NAME issues one)"))
            return
        for row in rows:
            state = ("revoked" if row["revoked"] else
                     f"rotated, works until {row['grace_until']}" if row["grace_until"] else
                     "active")
            self.stdout.write(f"{row['prefix']}  {row['name']}  owner={row['owner'] or '-'}  "
                              f"models={','.join(row['models']) or 'all'}  "
                              f"expires={row['expires_at'] or 'never'}  {state}")

    def _rotate(self, prefix, grace_hours, json, **_options):
        try:
            new, secret = rotate_key(self._key(prefix), grace_hours)
        except KeyRefused as exc:
            raise CommandError(exc.message) from None
        self._print_secret(new, secret, json)

    def _revoke(self, prefix, **_options):
        key = self._key(prefix)
        revoke_key(key)
        self.stdout.write(_("revoked %(prefix)s (%(name)s)") % {"prefix": key.prefix,
                                                                 "name": key.name})

    def _rotate_data(self, **_options):
        report = rotate_data()
        for label, count in sorted(report.rotated.items()):
            self.stdout.write(_("%(label)s: %(count)d re-encrypted") % {"label": label,
                                                                         "count": count})
        for label, count in sorted(report.failed.items()):
            self.stderr.write(_("%(label)s: %(count)d not decryptable with any configured key")
                              % {"label": label, "count": count})
        self.stdout.write(_("%(total)d value(s) re-encrypted with key %(key)s")
                          % {"total": report.total, "key": active_key_id()})
        if report.failed:
            raise CommandError(_("some values could not be decrypted: add their key to "
                                 "OPENCLAW_ENCRYPTION_KEYS (after the current one) and run "
                                 "again"))

    def _print_secret(self, key: ApiKey, secret: str, as_json: bool) -> None:
        if as_json:
            self.stdout.write(_json({**key_row(key), "secret": secret}))
            return
        self.stderr.write(_("key %(prefix)s (%(name)s): the secret below is shown only once; "
                            "store it now") % {"prefix": key.prefix, "name": key.name})
        self.stdout.write(secret)

    def _key(self, prefix: str) -> ApiKey:
        key = ApiKey.objects.filter(prefix=prefix.split(".", 1)[0]).first()
        if key is None:
            raise CommandError(_("no API key with prefix %(prefix)r (openclaw keys list)")
                               % {"prefix": prefix})
        return key

    def _user(self, username: str):
        user_model = get_user_model()
        try:
            return user_model.objects.get(**{user_model.USERNAME_FIELD: username})
        except user_model.DoesNotExist:
            raise CommandError(_("--owner: no user named %(name)r") % {"name": username}
                               ) from None

    @staticmethod
    def _explain(exc: ValidationError) -> str:
        options = {"allowed_models": "--models", "allowed_cidrs": "--cidr", "rpm_limit": "--rpm",
                   "tpm_limit": "--tpm", "token_budget": "--budget", "name": "--name"}
        if not hasattr(exc, "error_dict"):
            return "; ".join(exc.messages)
        return "; ".join(f"{options.get(field, field)}: {' '.join(msgs)}"
                         for field, msgs in exc.message_dict.items())


def _json(value) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False)
