"""The engine's bounds (app/db/engine.py): on SQLite too, waiting for a pooled connection is bounded by
``VMS_DB_TIMEOUT_SECONDS``, not SQLAlchemy's 30 s default. A WebSocket's replay is outside any request's
deadline (app/db/deadline.py), so the pool's own timeout is the only bound it has."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from advanced_alchemy.extensions.litestar import SQLAlchemyPlugin
from sqlalchemy import text
from websockets.exceptions import ConnectionClosed

from tests.helpers import server_with, sign_in_admin, ws_connect

TIMEOUT = 1.0


async def test_a_websocket_waiting_for_an_exhausted_sqlite_pool_is_closed_within_the_timeout(
    tmp_path: Path,
) -> None:
    """A pool of two connections, both held: a WebSocket whose ``since`` replay needs one is closed with 1013
    after the timeout (it waited 30 s, past the client's handshake timeout); once they are back, a new
    one opens."""
    async with server_with(tmp_path, db_timeout_seconds=TIMEOUT, db_pool_size=2) as server:
        admin = await sign_in_admin(server.http)
        engine = server.app.plugins.get(SQLAlchemyPlugin).config[0].get_engine()
        async with engine.connect() as held, engine.connect() as also_held:
            for connection in (held, also_held):
                await connection.execute(text("SELECT 1"))
            started = time.monotonic()
            with pytest.raises(ConnectionClosed) as closed:
                async with (
                    asyncio.timeout(TIMEOUT + 10),
                    ws_connect(server, "/ws/vms?since=0", admin.token) as ws,
                ):
                    await ws.recv()
            waited = time.monotonic() - started
        assert closed.value.rcvd is not None, "closed without a close frame"
        assert closed.value.rcvd.code == 1013, closed.value.rcvd
        # The timeout, plus a margin for a slow machine that still tells it from SQLAlchemy's 30 s.
        assert TIMEOUT * 0.9 <= waited < TIMEOUT + 2.0, f"closed after {waited:.2f} s"
        async with ws_connect(server, "/ws/vms?since=0", admin.token) as ws:
            await ws.ping()
