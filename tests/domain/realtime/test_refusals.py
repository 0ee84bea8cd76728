"""A refused WebSocket is accepted, then closed with a code a browser can read (4401, 4403) and a reason.

Failed before: every refusal was a bare HTTP 403 on the handshake, which a browser's ``WebSocket`` cannot
tell from a network error.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from websockets.exceptions import ConnectionClosed

from tests.helpers import LiveServer, admin_account, create_account, forge_token, ws_connect

UNAUTHORIZED, FORBIDDEN = 4401, 4403


async def _close_of(
    server: LiveServer, path: str, token: str | None, *, header: bool = False
) -> tuple[int, str]:
    """Connect (the handshake must succeed) and return the close code and reason the server sends."""
    async with ws_connect(server, path, token, header=header) as socket:
        with pytest.raises(ConnectionClosed) as closed:
            await socket.recv()
    frame = closed.value.rcvd
    assert frame is not None, "closed without a close frame"
    return frame.code, frame.reason


@pytest.mark.parametrize("path", ["/ws/vms", "/ws/users"])
async def test_bad_tokens_close_with_4401(live_server: LiveServer, path: str) -> None:
    admin = await admin_account(live_server)
    expired = forge_token(live_server, admin.token, expires_in=timedelta(minutes=-1))
    cases = {
        "missing": (None, "not authenticated"),
        "malformed": ("not-a-jwt", "malformed"),
        "expired": (expired, "expired"),
    }
    for name, (token, reason) in cases.items():
        code, text = await _close_of(live_server, path, token)
        assert code == UNAUTHORIZED, (name, code, text)
        assert reason in text.lower(), (name, text)
    await live_server.http.post("/logout", headers=admin.headers)
    for header in (False, True):
        code, text = await _close_of(live_server, path, admin.token, header=header)
        assert (code, "revoked" in text.lower()) == (UNAUTHORIZED, True), text


async def test_a_cliente_on_the_users_channel_gets_4403(live_server: LiveServer) -> None:
    admin = await admin_account(live_server)
    cliente = await create_account(live_server.http, admin)
    code, text = await _close_of(live_server, "/ws/users", cliente.token)
    assert code == FORBIDDEN, (code, text)
    assert "administrador" in text, text
