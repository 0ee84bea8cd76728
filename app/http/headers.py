"""Security headers on every HTTP response, error responses included.

Litestar's ``response_headers`` only reach responses built from route handlers; 401s from the auth
middleware, 404s for unknown paths, 413s and 429s are produced elsewhere. Litestar's ``before_send``
hook sees every message the app sends, so the headers are added there.
"""

from __future__ import annotations

from litestar.datastructures import MutableScopeHeaders
from litestar.types import Message, Scope

# The docs page runs Scalar from /docs/assets; everything else is JSON, so nothing else needs more.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "font-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
SECURITY_HEADERS: list[tuple[bytes, bytes]] = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
]


async def add_security_headers(message: Message, scope: Scope) -> None:
    if message["type"] == "http.response.start":
        present = {name.lower() for name, _ in message.get("headers", [])}
        extra = [(name, value) for name, value in SECURITY_HEADERS if name not in present]
        message["headers"] = [*message.get("headers", []), *extra]


async def complete_allow_header(message: Message, scope: Scope) -> None:
    """Litestar 2 answers OPTIONS with the first-registered handler's methods only (litestar#4169)."""
    if message["type"] != "http.response.start" or scope.get("method") != "OPTIONS":
        return
    headers = MutableScopeHeaders.from_message(message)
    handler = scope.get("route_handler")
    if "allow" not in headers or handler is None:
        return
    routes = scope["litestar_app"].route_handler_method_map
    methods = {method for path in handler.paths for method in routes.get(path, {})}
    if methods:
        headers["Allow"] = ", ".join(sorted(methods))
