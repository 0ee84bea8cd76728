"""``/ws/vms`` (any signed-in user) and ``/ws/users`` (administradores): change events as JSON text frames.

The token comes from the ``Authorization`` header or, for browsers, ``?token=``; the authentication
middleware and the guards run before the handshake is accepted, so a bad token gets nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime
from typing import Any

from litestar import WebSocket, websocket
from litestar.channels import ChannelsPlugin
from litestar.di import NamedDependency
from litestar.exceptions import WebSocketDisconnect
from litestar.security.jwt import Token
from litestar.status_codes import WS_1008_POLICY_VIOLATION

from app.domain.realtime.connections import ConnectionRegistry
from app.events import USERS_CHANNEL, VMS_CHANNEL
from app.security import requires_admin, requires_user

WS_1013_TRY_AGAIN_LATER = 1013


async def _stream(
    socket: WebSocket[Any, Token, Any],
    channels: NamedDependency[ChannelsPlugin],
    channel: str,
    *,
    admin_only: bool,
) -> None:
    registry: ConnectionRegistry = socket.app.state.ws_connections
    await socket.accept()
    subscriber = await channels.subscribe([channel])
    registration = registry.add(socket, admin_only=admin_only)
    send_failed = asyncio.Event()

    async def forward(payload: bytes) -> None:
        try:
            await socket.send_text(payload.decode())
        except Exception:  # the peer vanished mid-send; the wait below ends the connection
            send_failed.set()

    async def read_until_closed() -> None:
        with contextlib.suppress(WebSocketDisconnect):
            while True:
                await socket.receive_data(mode="text")

    seconds_left = (socket.auth.exp - datetime.now(UTC)).total_seconds()
    waits = {
        asyncio.ensure_future(read_until_closed()): None,
        asyncio.ensure_future(send_failed.wait()): None,
        asyncio.ensure_future(subscriber.overflowed.wait()): (WS_1013_TRY_AGAIN_LATER, "too far behind"),  # type: ignore[attr-defined]
        asyncio.ensure_future(asyncio.sleep(max(seconds_left, 0))): (
            WS_1008_POLICY_VIOLATION,
            "token expired",
        ),
        asyncio.ensure_future(registration.revoked.wait()): (WS_1008_POLICY_VIOLATION, "token revoked"),
    }
    try:
        async with subscriber.run_in_background(forward, join=False):
            done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        reason = waits[next(iter(done))]
        if reason is not None:
            with contextlib.suppress(Exception):
                await socket.close(code=reason[0], reason=reason[1])
    finally:
        for task in waits:
            task.cancel()
        registry.remove(registration)
        await channels.unsubscribe(subscriber)


@websocket("/ws/vms", guards=[requires_user])
async def vm_events(socket: WebSocket[Any, Token, Any], channels: NamedDependency[ChannelsPlugin]) -> None:
    """VM changes: ``vm_created``, ``vm_updated``, ``vm_deleted``."""
    await _stream(socket, channels, VMS_CHANNEL, admin_only=False)


@websocket("/ws/users", guards=[requires_admin])
async def user_events(socket: WebSocket[Any, Token, Any], channels: NamedDependency[ChannelsPlugin]) -> None:
    """User changes: ``user_created``, ``user_updated``, ``user_deleted`` (administradores only)."""
    await _stream(socket, channels, USERS_CHANNEL, admin_only=True)
