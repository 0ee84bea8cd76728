"""A listener that stops reading is cut off (1013), its resources released at once, and slows nobody else.

Filling the kernel's socket buffers (several MB on loopback) with ordinary VM events would take thousands
of writes, so the bulk of the stream is published straight into the app's fan-out (its ChannelsPlugin, which
every event goes through) with oversized VM names; ordinary HTTP writes go before and after.
"""

from __future__ import annotations

import asyncio
import secrets
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest
from litestar.channels import ChannelsPlugin
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from app import create_app
from app.domain.vms.schemas import VMRead
from tests.helpers import (
    EVENT_TIMEOUT,
    LiveServer,
    admin_account,
    create_vm,
    decode,
    make_settings,
    run_server,
    ws_connect,
)
from tests.helpers.metrics import scrape_metrics, value

BACKLOG = 20
BIG = 64 * 1024
"""Bytes of VM name per bulk event (random, so that compression cannot shrink them)."""
MAX_BULK_EVENTS = 400
"""About 25 MB: far more than the kernel buffers between the server and a client that reads nothing."""


@pytest.fixture
async def small_backlog_server(tmp_path: Any, channels_backend: str) -> AsyncIterator[LiveServer]:
    app = create_app(make_settings(tmp_path, channels=channels_backend, ws_backlog=BACKLOG))
    async with run_server(app) as server:
        yield server


async def stalled_listener(server: LiveServer, token: str) -> ClientConnection:
    """A client with a tiny receive window that reads nothing after the handshake."""
    raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.setblocking(False)
    host, port = server.ws_url.removeprefix("ws://").rsplit(":", 1)
    await asyncio.wait_for(asyncio.get_running_loop().sock_connect(raw, (host, int(port))), EVENT_TIMEOUT)
    # max_queue=1: the library stops reading the socket as soon as one message waits; no pings of its own,
    # since their answers would be stuck behind the data it is not reading; no compression, which would
    # shrink the stream it is meant to choke on.
    return await connect(
        f"{server.ws_url}/ws/vms?token={token}",
        sock=raw,
        max_queue=1,
        ping_interval=None,
        compression=None,
        max_size=2 * BIG,
        open_timeout=EVENT_TIMEOUT,
        close_timeout=2,
    )


class Reader:
    """Reads a socket in the background, keeping the VM names in arrival order."""

    def __init__(self, socket: ClientConnection) -> None:
        self.names: list[str] = []
        self._socket = socket
        self._progress = asyncio.Event()
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for message in self._socket:
            self.names.append(decode(message)["vm"]["name"])
            self._progress.set()

    async def wait_for(self, count: int) -> None:
        async with asyncio.timeout(EVENT_TIMEOUT):
            while len(self.names) < count:
                self._progress.clear()
                await self._progress.wait()


async def read_until_closed(socket: ClientConnection, names: list[str]) -> None:
    while True:
        message = await asyncio.wait_for(socket.recv(), EVENT_TIMEOUT)
        names.append(decode(message)["vm"]["name"])


async def test_a_stalled_listener_is_cut_off_and_slows_nobody(small_backlog_server: LiveServer) -> None:
    server = small_backlog_server
    registry = server.app.state.ws_connections
    channels = server.app.plugins.get(ChannelsPlugin)
    admin = await admin_account(server)
    template = msgspec.convert(await create_vm(server.http, admin), VMRead)
    written: list[str] = []

    before = await scrape_metrics(server.http, admin.headers)
    async with ws_connect(server, "/ws/vms", admin.token) as healthy_socket:
        healthy = Reader(healthy_socket)
        stalled = await stalled_listener(server, admin.token)
        try:
            assert len(registry) == 2
            first = await create_vm(server.http, admin, name="before-the-flood")
            written.append(first["name"])
            await healthy.wait_for(len(written))

            # Publish until the server gives up on the stalled client. Waiting for the healthy client after
            # each event keeps it within its backlog, so only the stalled one can fall behind.
            while len(registry) == 2 and len(written) < MAX_BULK_EVENTS:
                name = f"{len(written):05d}-{secrets.token_urlsafe(BIG)[:BIG]}"
                vm = msgspec.structs.replace(template, name=name, updated_at=datetime.now(UTC))
                event = {"event": "vm_updated", "vm": vm, "seq": len(written) + 10_000, "actor_id": admin.id}
                channels.publish(msgspec.json.encode(event), channels=["vms"])
                written.append(name)
                await healthy.wait_for(len(written))
            # Its subscription and registration are gone although it has not read a byte since.
            assert len(registry) == 1, f"the stalled listener was still connected after {len(written)} events"
            # /metrics counts it: one listener cut off, and the events it will never get.
            after = await scrape_metrics(server.http, admin.headers)
            cut_off = "vms_listeners_cut_off_total"
            assert value(after, cut_off) == value(before, cut_off) + 1
            assert value(after, "vms_events_dropped_total") > value(before, "vms_events_dropped_total")

            # The healthy listener keeps going, in order, with nothing missing.
            last = await create_vm(server.http, admin, name="after-the-flood")
            written.append(last["name"])
            await healthy.wait_for(len(written))
            assert healthy.names == written

            # The stalled one, reading at last, finds an unbroken prefix of the stream, then the 1013 close.
            received: list[str] = []
            with pytest.raises(ConnectionClosed) as closed:
                await read_until_closed(stalled, received)
            assert closed.value.rcvd is not None, f"no close frame: {closed.value!r}"
            assert closed.value.rcvd.code == 1013, closed.value
            assert received == written[: len(received)]
            assert len(received) < len(written) - 1
        finally:
            healthy.task.cancel()
            await stalled.close()
