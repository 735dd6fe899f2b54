"""The client's address behind trusted reverse proxies (``OPENCLAW_TRUSTED_PROXIES``).

One rule for every surface — ``/v1``, the studio websocket, the admin's sign-in
throttling, ``/metrics`` — so a proxy's address is never taken for its client's.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any

from django.conf import settings


def client_ip(remote_addr: str, x_forwarded_for: str | None = None,
              trusted_proxies: Iterable[str] | None = None) -> str:
    """The client's address: ``X-Forwarded-For`` counts only when the peer is a
    trusted proxy, and then the right-most address that is not one."""
    if trusted_proxies is None:
        trusted_proxies = settings.OPENCLAW_TRUSTED_PROXIES
    networks = [ipaddress.ip_network(n, strict=False) for n in trusted_proxies]

    def trusted(addr: str) -> bool:
        try:
            ip = ipaddress.ip_address(addr)
        except ValueError:
            return False
        return any(ip in net for net in networks)

    if not x_forwarded_for or not trusted(remote_addr):
        return remote_addr
    current = remote_addr
    for hop in reversed([h.strip() for h in x_forwarded_for.split(",") if h.strip()]):
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            return current  # garbage before a trusted hop: trust nothing further left
        current = hop
        if not trusted(hop):
            return hop
    return current


def request_client_ip(request: Any) -> str:
    """``client_ip`` of a Django request (or anything with ``META`` and ``headers``)."""
    return client_ip(request.META.get("REMOTE_ADDR", ""), request.headers.get("X-Forwarded-For"))
