"""Security events: one named log line each (and a counter in /metrics), never a password, hash or token.

``login_failed``, ``login_throttled``, ``token_refused`` and ``forbidden`` are written where the refusal
is decided; ``session_ended``, ``role_changed`` and ``user_deleted`` after the commit of the change that
made them, from the change seam (app/wiring.py), so the API, the command line and every other writer are
covered alike. Every line also carries the request id (app/logs.py).

A failed login names the account by its user id when the email exists, not by the email typed: people
type their password into the email field often enough.
"""

from __future__ import annotations

from typing import Any

import structlog
from litestar.connection import ASGIConnection, Request
from litestar.exceptions import TooManyRequestsException
from litestar.middleware.rate_limit import RateLimitMiddleware
from litestar.types import Receive, Scope, Send

from app.http.scope import route_of, user_id_of
from app.metrics import FORBIDDEN, LOGIN_FAILURES, LOGIN_THROTTLED, TOKENS_REFUSED

log = structlog.get_logger("vms.security")
_throttled_by = {limit: LOGIN_THROTTLED.labels(limit) for limit in ("address", "account")}


def login_failed(*, user_id: int | None, client: str) -> None:
    LOGIN_FAILURES.inc()
    log.warning("login_failed", user_id=user_id, client=client)


def login_throttled(*, limit: str, client: str | None = None, retry_after: int | None = None) -> None:
    _throttled_by[limit].inc()
    log.warning("login_throttled", limit=limit, client=client, retry_after=retry_after)


def token_refused(connection: ASGIConnection[Any, Any, Any, Any], reason: str) -> None:
    TOKENS_REFUSED.labels(reason).inc()
    log.warning("token_refused", reason=reason, path=route_of(connection.scope))


def forbidden(connection: ASGIConnection[Any, Any, Any, Any]) -> None:
    FORBIDDEN.inc()
    log.warning("forbidden", user_id=user_id_of(connection.scope), path=route_of(connection.scope))


def session_ended(*, session_id: int, actor_id: int | None) -> None:
    log.info("session_ended", session_id=session_id, actor_id=actor_id)


def role_changed(*, user_id: int, before: str, after: str, actor_id: int | None) -> None:
    log.warning("role_changed", user_id=user_id, before=before, after=after, actor_id=actor_id)


def user_deleted(*, user_id: int, actor_id: int | None) -> None:
    log.warning("user_deleted", user_id=user_id, actor_id=actor_id)


class LoggedRateLimitMiddleware(RateLimitMiddleware):
    """Litestar's rate limit, plus a ``login_throttled`` event for each request it refuses."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        except TooManyRequestsException:
            # The address the limit counted (behind a trusted proxy, the one it forwarded), not the peer.
            login_throttled(limit="address", client=self.get_identifier_for_request(Request(scope)))
            raise
