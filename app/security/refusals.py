"""The answers a caller gets when it is not let in: RFC 6750's 401, a 403, or their WebSocket close codes."""

from __future__ import annotations

from typing import Any, NoReturn

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException, WebSocketException

from app.security import events

AUTH_OPTIONAL = "auth_optional"
"""Route option: the route also serves anonymous callers (``connection.user`` is then None)."""
SCRAPE_TOKEN = "scrape_token"  # noqa: S105  (the name of a route option, not a secret)
"""Route option: a static bearer token this route also accepts (a metrics scraper's)."""
SCRAPER = "scraper"
"""``connection.auth`` of a caller let in by the route's scrape token."""

# Messages, not secrets (S105 mistakes the names for passwords).
TOKEN_MISSING = "Not authenticated: send 'Authorization: Bearer <token>'"  # noqa: S105
TOKEN_MALFORMED = "Invalid token: malformed, or not signed by this service"  # noqa: S105
TOKEN_EXPIRED = "Token expired: sign in again"  # noqa: S105
TOKEN_REVOKED = "Token revoked: signed out, password or role changed, or account deleted"  # noqa: S105
WS_UNAUTHORIZED = 4401
"""WebSocket close code for a missing, invalid, expired or revoked token (4000 + HTTP 401)."""
WS_FORBIDDEN = 4403
"""WebSocket close code for a signed-in caller not allowed on this channel (4000 + HTTP 403)."""
# The reason a presented token was refused, as the security event and its metric name it.
_REASONS = {TOKEN_MALFORMED: "malformed", TOKEN_EXPIRED: "expired", TOKEN_REVOKED: "revoked"}


def refuse_unauthenticated(
    connection: ASGIConnection[Any, Any, Any, Any], detail: str, *, presented: bool
) -> NoReturn:
    """Raise the 401 of RFC 6750, or its WebSocket close code.

    ``presented``: a token was sent and failed, so ``WWW-Authenticate`` says ``error="invalid_token"``;
    without one it only names the scheme.
    """
    if presented:
        events.token_refused(connection, _REASONS.get(detail, "malformed"))
    if connection.scope["type"] == "websocket":
        raise WebSocketException(detail=detail, code=WS_UNAUTHORIZED)
    challenge = 'Bearer error="invalid_token"' if presented else "Bearer"
    raise NotAuthorizedException(detail, headers={"WWW-Authenticate": challenge})


def refuse_forbidden(connection: ASGIConnection[Any, Any, Any, Any], detail: str) -> NoReturn:
    events.forbidden(connection)
    if connection.scope["type"] == "websocket":
        raise WebSocketException(detail=detail, code=WS_FORBIDDEN)
    raise PermissionDeniedException(detail)
