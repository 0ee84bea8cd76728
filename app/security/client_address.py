"""The caller's address, for rate limits and the session record, behind the proxies the operator trusts."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import Any

from litestar.connection import Request

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class ClientAddress:
    """The caller's address: the socket peer, unless that peer is a trusted proxy.

    ``X-Forwarded-For`` is believed only when it comes from a configured proxy (``VMS_TRUSTED_PROXIES``), and
    then the right-most address that is not itself a trusted proxy is used: anything further left is
    client-supplied and could be forged.
    """

    def __init__(self, trusted_proxies: Sequence[str]) -> None:
        self._trusted: tuple[Network, ...] = tuple(
            ipaddress.ip_network(entry, strict=False) for entry in trusted_proxies
        )

    def __call__(self, request: Request[Any, Any, Any]) -> str:
        peer = request.client.host if request.client else "unknown"
        if not self._trusted or not self._is_trusted(peer):
            return peer
        hops = [hop.strip() for hop in request.headers.get("x-forwarded-for", "").split(",") if hop.strip()]
        for hop in reversed(hops):
            if not self._is_trusted(hop):
                return hop
        return peer

    def _is_trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self._trusted)
