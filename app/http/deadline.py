"""Every HTTP request's database work ends within ``VMS_DB_TIMEOUT_SECONDS``: one deadline
(app/db/deadline.py) from its first wait on the database, answered with the same 503 as any other database
timeout.

A Litestar middleware inside the request metrics (which count the 503) and outside authentication (a token
check on a cache miss reads the database too) and the sign-in routes' rate limit.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from litestar import Request
from litestar.types import ASGIApp, Receive, Scope, Send
from litestar.utils.scope.state import ScopeState

from app.db.deadline import Deadline
from app.http.errors import database_fault_response

OWN_DEADLINE = "own_database_deadline"
"""A route handler's ``opt`` key: the handler bounds its database waits itself (``/health``, which answers
with its own body), so the request's deadline is not armed for it."""


def database_deadline(seconds: float) -> Callable[..., ASGIApp]:
    """The middleware, for ``Litestar(middleware=[...])`` (which calls it with ``app=``)."""

    def wrap(app: ASGIApp) -> ASGIApp:
        async def handle(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http" or scope["route_handler"].opt.get(OWN_DEADLINE):
                await app(scope, receive, send)
                return
            try:
                with Deadline(seconds):
                    await app(scope, receive, send)
            except TimeoutError as exc:
                # Only the deadline's own gets here: Litestar's handlers answer every other one inside.
                if ScopeState.from_scope(scope).response_started:
                    raise
                request: Request[Any, Any, Any] = Request(scope, receive)
                response = database_fault_response(request, exc)
                if response is None:  # a timeout is always a database fault; this keeps mypy honest
                    raise
                await response.to_asgi_response(app=None, request=request)(scope, receive, send)

        return handle

    return wrap
