"""One structured access line per request: method, route, status, duration, user id (and the request id
every line carries, see app/logs.py). It replaces uvicorn's access line, which has no request id, no
duration and no user, and prints the query string (where browsers put ``?token=``).

HTTP: ``event="request"``, written when the response is complete. WebSocket: ``event="websocket"``,
written when the connection ends, with the close code instead of a status. ``path`` is the route's
template (``/vms/{vm_id:int}``), so lines group by route and carry no ids; a request no route matched
logs its path cut to 200 characters. Never a query string, a body or a header.

It also gives the request its id (app/http/request_id.py), in the same wrapper of ``send``: one layer
less per response message. A plain ASGI wrapper rather than Litestar's ``LoggingMiddleware``: that one
writes two lines per request (request, then response) with neither the duration nor the route template,
and builds a ``Request`` to do it; this one reads the ASGI scope the router and the authentication
middleware have filled in.
"""

from __future__ import annotations

import time
from typing import Any, cast

from litestar.types import ASGIApp, HTTPScope, Message, Receive, Scope, Send

from app.context import request_id
from app.http.request_id import id_for, with_id_header
from app.logs import InfoLine

log = InfoLine("vms.access")
MAX_PATH = 200


def route_of(scope: Scope) -> str:
    """The route's template, or for a request no route matched its path, cut to ``MAX_PATH``."""
    template = scope.get("path_template")
    return template if template is not None else scope["path"][:MAX_PATH]


def user_id_of(scope: Scope) -> Any:
    """The id of the signed-in caller, or None (anonymous, or not authenticated yet)."""
    return getattr(scope.get("user"), "id", None)


def with_access_log(app: ASGIApp) -> ASGIApp:
    async def handle(scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await _http(app, scope, receive, send)
        elif kind == "websocket":
            await _websocket(app, scope, receive, send)
        else:
            await app(scope, receive, send)

    return handle


async def _http(app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
    started = time.perf_counter()
    rid = id_for(scope)
    token = request_id.set(rid.decode())
    status = 500  # what the server answers if the app fails before it starts a response

    async def send_noting_status(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
            with_id_header(message, rid)
        await send(message)

    try:
        await app(scope, receive, send_noting_status)
    finally:
        log(
            "request",
            {
                "method": cast("HTTPScope", scope)["method"],
                "path": route_of(scope),
                "status": status,
                "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                "user_id": user_id_of(scope),
            },
        )
        request_id.reset(token)


async def _websocket(app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
    started = time.perf_counter()
    rid = id_for(scope)
    token = request_id.set(rid.decode())
    close_code: int | None = None

    async def send_noting_close(message: Message) -> None:
        nonlocal close_code
        if message["type"] == "websocket.accept":
            with_id_header(message, rid)
        elif message["type"] == "websocket.close" and close_code is None:
            close_code = message.get("code", 1000)
        await send(message)

    async def receive_noting_disconnect() -> Any:
        nonlocal close_code
        message = await receive()
        if message["type"] == "websocket.disconnect" and close_code is None:
            close_code = message.get("code", 1005)
        return message

    try:
        await app(scope, receive_noting_disconnect, send_noting_close)
    finally:
        log(
            "websocket",
            {
                "path": route_of(scope),
                "close_code": close_code,
                "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                "user_id": user_id_of(scope),
            },
        )
        request_id.reset(token)
