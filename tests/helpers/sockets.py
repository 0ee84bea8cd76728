"""Real WebSocket clients (``websockets``) against the app on a live server.

Every wait is bounded (``asyncio.wait_for``), so a missing event or a socket that is never closed fails the
test within seconds instead of hanging it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import msgspec
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.helpers.accounts import admin_account, bearer, create_account, create_vm
from tests.helpers.servers import LiveServer

EVENT_TIMEOUT = 5.0
"""Seconds to wait for an event that should arrive (generous: the Redis backend adds a hop)."""
QUIET_PERIOD = 0.5
"""Seconds of silence taken as "nothing was published"."""


def decode(message: str | bytes) -> dict[str, Any]:
    result: dict[str, Any] = msgspec.json.decode(message)
    return result


def ws_connect(server: LiveServer, path: str, token: str | None = None, *, header: bool = False) -> Any:
    """``websockets.connect`` to ``path``, the token in ``?token=`` or (``header=True``) in Authorization.

    ``path`` may carry a query of its own (``/ws/vms?since=7``): the token is then added with ``&``."""
    url = f"{server.ws_url}{path}"
    headers: dict[str, str] = {}
    if token is not None:
        if header:
            headers = bearer(token)
        else:
            url = f"{url}{'&' if '?' in path else '?'}token={token}"
    return connect(url, additional_headers=headers, open_timeout=EVENT_TIMEOUT, close_timeout=2)


async def receive_event(socket: ClientConnection, seconds: float = EVENT_TIMEOUT) -> dict[str, Any]:
    """The next message, which must be one JSON text frame holding an object."""
    message = await asyncio.wait_for(socket.recv(), seconds)
    assert isinstance(message, str), f"expected a text frame, got {type(message).__name__}"
    event = decode(message)
    assert isinstance(event, dict)
    return event


async def receive_events(socket: ClientConnection, count: int, seconds: float = EVENT_TIMEOUT) -> list[Any]:
    return [await receive_event(socket, seconds) for _ in range(count)]


async def assert_silent(socket: ClientConnection, seconds: float = QUIET_PERIOD) -> None:
    """Nothing arrives for ``seconds``."""
    try:
        message = await asyncio.wait_for(socket.recv(), seconds)
    except TimeoutError:
        return
    raise AssertionError(f"unexpected message: {message!r}")


async def wait_closed_with(
    socket: ClientConnection, codes: Sequence[int], seconds: float = EVENT_TIMEOUT
) -> int:
    """Wait until the server closes ``socket``, receiving no event meanwhile; return the close code."""
    try:
        message = await asyncio.wait_for(socket.recv(), seconds)
    except ConnectionClosed as closed:
        frame = closed.rcvd
    else:
        raise AssertionError(f"expected the socket to be closed, got a message: {message!r}")
    code = frame.code if frame is not None else None
    assert code is not None, f"closed without a close frame, expected one of {list(codes)}"
    assert code in codes, f"closed with {code} ({frame}), expected one of {list(codes)}"
    return code


async def expect_refused(server: LiveServer, path: str, token: str | None, *, header: bool = False) -> str:
    """Connecting with ``token`` yields no event: the handshake is refused, or the socket is closed with 1008
    or a 4xxx code before any event arrives (a VM and a user are created meanwhile). Returns what happened."""
    where = f"{path} with the token {'in the header' if header else 'in the query'}"
    try:
        async with ws_connect(server, path, token, header=header) as socket:
            admin = await admin_account(server)
            await create_vm(server.http, admin, name="while-refused")
            await create_account(server.http, admin)
            try:
                code = await wait_closed_with(socket, [1008, *range(4000, 5000)])
            except (AssertionError, TimeoutError) as exc:
                raise AssertionError(f"{where}: {exc!r}") from exc
            return f"closed {code}"
    except InvalidStatus as refused:
        status = refused.response.status_code
        assert status in {401, 403}, f"{where}: handshake refused with {status}"
        return f"refused {status}"


async def ws_events(
    url: str, *, headers: dict[str, str] | None = None, trigger: Any = None, seconds: float = 2.0
) -> str | list[dict[str, Any]]:
    """Connect, run ``trigger`` (an awaitable factory), and say what the socket got.

    Returns ``"refused <status>"`` when the handshake is refused, ``"closed <code>"`` when the server
    closes the socket before any event, or the list of events received within ``seconds``.
    """
    received: list[dict[str, Any]] = []
    try:
        async with connect(url, additional_headers=headers or {}, open_timeout=10, close_timeout=2) as socket:
            if trigger is not None:
                await trigger()
            deadline = asyncio.get_running_loop().time() + seconds
            while (left := deadline - asyncio.get_running_loop().time()) > 0:
                try:
                    message = await asyncio.wait_for(socket.recv(), timeout=left)
                except TimeoutError:
                    break
                received.append(decode(message))
    except InvalidStatus as refused:
        return f"refused {refused.response.status_code}"
    except ConnectionClosed as closed:
        if received:
            return received
        frame = closed.rcvd
        return f"closed {frame.code if frame else 'without a frame'}"
    return received
