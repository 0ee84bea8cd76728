"""One structured access line per request: method, route, status, duration, user id (and the request id
every line carries, see app/logs.py). It replaces uvicorn's access line, which has no request id, no
duration and no user, and prints the query string (where browsers put ``?token=``).

HTTP: ``event="request"``, written when the response is complete. WebSocket: ``event="websocket"``,
written when the connection ends, with the close code instead of a status. ``path`` is the route's
template (``/vms/{vm_id:int}``), so lines group by route and carry no ids; a request no route matched
logs its path cut to 200 characters. Never a query string, a body or a header.

The same wrapper of ``send`` gives the request its id (app/http/request_id.py) and records the request
metrics once it has finished (app/http/metrics.py ``FinishedRequests``): it is the one place that sees the
status actually sent, whatever raised inside, with one layer per response message for all three. A
plain ASGI wrapper rather than Litestar's ``LoggingMiddleware``: that one writes two lines per request
(request, then response) with neither the duration nor the route template, and builds a ``Request`` to
do it; this one reads the ASGI scope the router and the authentication middleware have filled in. With
the access line off (``VMS_ACCESS_LOG=false``) the wrapper still gives ids and records metrics.
"""

from __future__ import annotations

import time
from typing import Any, cast

from litestar.types import ASGIApp, HTTPScope, Message, Receive, Scope, Send

from app.context import request_id
from app.http.metrics import FinishedRequests
from app.http.request_id import id_for, with_id_header
from app.http.scope import route_of, user_id_of
from app.logs import InfoLine

log = InfoLine("vms.access")


def with_request_frame(app: ASGIApp, *, metrics: FinishedRequests, access_line: bool) -> ASGIApp:
    """``app`` with every request given its id, and its metrics and (``access_line``) its line once done."""

    async def handle(scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await _http(app, scope, receive, send, metrics, access_line)
        elif kind == "websocket":
            await _websocket(app, scope, receive, send, access_line)
        else:
            await app(scope, receive, send)

    return handle


async def _http(
    app: ASGIApp, scope: Scope, receive: Receive, send: Send, metrics: FinishedRequests, access_line: bool
) -> None:
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
        seconds = time.perf_counter() - started
        method = cast("HTTPScope", scope)["method"]
        template = scope.get("path_template")
        if template is not None:  # a request no route matched is not a series of its own (scanners)
            metrics.record(method, template, status, seconds)
        if access_line:
            log(
                "request",
                {
                    "method": method,
                    "path": route_of(scope),
                    "status": status,
                    "duration_ms": round(seconds * 1000, 2),
                    "user_id": user_id_of(scope),
                },
            )
        request_id.reset(token)


async def _websocket(app: ASGIApp, scope: Scope, receive: Receive, send: Send, access_line: bool) -> None:
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
        if access_line:
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
