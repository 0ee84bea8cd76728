"""Refused WebSockets are accepted, then closed with a code a browser can read.

Litestar refuses a WebSocket (a bad token, a guard) by sending ``websocket.close`` before the handshake
is accepted, which the server turns into a bare HTTP 403: a browser's ``WebSocket`` sees only a network
error, whatever the reason. Accepting first lets the close frame carry the code (4401, 4403) and reason.
This wraps the application's ASGI handler, outside Litestar's exception handling, because that is what
sends the early close.
"""

from __future__ import annotations

from litestar.types import ASGIApp, Message, Receive, Scope, Send


def accept_before_close(app: ASGIApp) -> ASGIApp:
    async def handle(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            await app(scope, receive, send)
            return
        accepted = False

        async def send_accepting_first(message: Message) -> None:
            nonlocal accepted
            if message["type"] == "websocket.accept":
                accepted = True
            elif message["type"] == "websocket.close" and not accepted:
                accepted = True
                await send({"type": "websocket.accept", "subprotocol": None, "headers": []})
            await send(message)

        await app(scope, receive, send_accepting_first)

    return handle
