"""Realtime tests: real WebSocket clients (``websockets``) against the app on a live uvicorn server.

Shared helpers live here. Every wait is bounded (``asyncio.wait_for``), so a missing event or a socket that
is never closed fails the test within seconds instead of hanging it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from litestar.security.jwt import Token
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from app.config import Settings, jwt_secret
from app.security.jwt import JWT_ALGORITHM
from app.state import collaborator
from tests.conftest import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    Account,
    LiveServer,
    bearer,
    create_account,
    create_vm,
    decode,
    login,
)

EVENT_TIMEOUT = 5.0
"""Seconds to wait for an event that should arrive (generous: the Redis backend adds a hop)."""
QUIET_PERIOD = 0.5
"""Seconds of silence taken as "nothing was published"."""


async def admin_account(server: LiveServer) -> Account:
    token = await login(server.http, ADMIN_EMAIL, ADMIN_PASSWORD)
    me = await server.http.get("/users/me", headers=bearer(token))
    assert me.status_code == 200, me.text
    return Account(id=me.json()["id"], email=ADMIN_EMAIL, password=ADMIN_PASSWORD, token=token)


def ws_connect(server: LiveServer, path: str, token: str | None = None, *, header: bool = False) -> Any:
    """``websockets.connect`` to ``path``, the token in ``?token=`` or (``header=True``) in Authorization."""
    url = f"{server.ws_url}{path}"
    headers: dict[str, str] = {}
    if token is not None:
        if header:
            headers["Authorization"] = f"Bearer {token}"
        else:
            url = f"{url}?token={token}"
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


def settings_of(server: LiveServer) -> Any:
    return collaborator(server.app.state, Settings)


def forge_token(
    server: LiveServer, valid_token: str, *, expires_in: timedelta, secret: str | None = None
) -> str:
    """A copy of ``valid_token`` (same user, token version, issuer, audience) with another expiry and id.

    ``expires_in`` may be negative: ``Token`` refuses a past ``exp`` when constructed, so it is set after.
    """
    settings = settings_of(server)
    real_secret = jwt_secret(settings)
    decoded = Token.decode(
        valid_token,
        secret=real_secret,
        algorithm=JWT_ALGORITHM,
        audience=settings.jwt_audience,
        issuer=[settings.jwt_issuer],
    )
    now = datetime.now(UTC)
    forged = dataclasses.replace(
        decoded, exp=now + timedelta(minutes=5), iat=now - timedelta(seconds=1), jti=uuid.uuid4().hex
    )
    forged.exp = now + expires_in
    return forged.encode(secret or real_secret, JWT_ALGORITHM)


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
