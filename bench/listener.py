"""A minimal WebSocket listener for benchmarks, and the process that runs many of them.

The listener is an asyncio protocol that parses the server's frames itself (handshake, text frames,
permessage-deflate if negotiated, ping, close): a few microseconds per message, so that on a small machine
the clients do not take the CPU the server is being measured with. It only ever listens to ``/ws/vms``
events whose VM name is ``<prefix><index>``, and notes when each index arrived (``time.monotonic``, the
same clock in every process on the machine).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import math
import resource
import secrets
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any, cast

import msgspec

CONNECT_CONCURRENCY = 64
"""Handshakes in flight per listener process."""


def raise_fd_limit() -> int:
    """Raise this process's open-file limit to the hard limit; return the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def run_loop(coroutine: Any) -> Any:
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        return asyncio.run(coroutine)
    return uvloop.run(coroutine)


class _VM(msgspec.Struct):
    name: str


class _Event(msgspec.Struct):
    vm: _VM


_decode_event = msgspec.json.Decoder(_Event).decode


class Listener(asyncio.Protocol):
    """A WebSocket client that only listens. ``on_finished`` runs once: every event arrived, or it closed."""

    def __init__(
        self,
        path: str,
        host: str,
        *,
        prefix: str,
        expected: int,
        compression: bool,
        on_finished: Callable[[], None] = lambda: None,
    ) -> None:
        loop = asyncio.get_running_loop()
        self.path, self.host, self.prefix, self.compression = path, host, prefix, compression
        self.on_finished = on_finished
        self.opened: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[int | None] = loop.create_future()
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.handshaken = False
        self.inflater: Any = None
        self.fragments: list[bytes] = []
        self.received_at = [math.nan] * expected
        self.count = 0
        self.in_order = True
        self.duplicates = 0
        self.last_index = -1
        self.close_code: int | None = None
        self.finished = False

    def finish(self) -> None:
        if not self.finished:
            self.finished = True
            self.on_finished()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not its subclasses
        key = base64.b64encode(secrets.token_bytes(16)).decode()
        extensions = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
        request = (
            f"GET {self.path} HTTP/1.1\r\nHost: {self.host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"{extensions if self.compression else ''}\r\n"
        )
        self.transport.write(request.encode())

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(ConnectionError(f"closed during the handshake: {exc}"))
        if not self.closed.done():
            self.closed.set_result(self.close_code)
        self.finish()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        buffer = self.buffer
        buffer += data
        if not self.handshaken:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buffer[:end]).decode("latin-1")
            del buffer[: end + 4]
            if not head.startswith("HTTP/1.1 101"):
                self.opened.set_exception(ConnectionError(head.splitlines()[0]))
                self.close()
                return
            if "permessage-deflate" in head.lower():
                self.inflater = zlib.decompressobj(-zlib.MAX_WBITS)
            self.handshaken = True
            self.opened.set_result(None)
        while len(buffer) >= 2:
            first, length, start = buffer[0], buffer[1] & 0x7F, 2
            if length == 126:
                length, start = int.from_bytes(buffer[2:4], "big"), 4
            elif length == 127:
                length, start = int.from_bytes(buffer[2:10], "big"), 10
            if len(buffer) < start + length:
                return
            payload = bytes(buffer[start : start + length])
            del buffer[: start + length]
            self._frame(first, payload, now)

    def _frame(self, first: int, payload: bytes, now: float) -> None:
        opcode = first & 0x0F
        if opcode in (0x1, 0x0):  # text, continuation
            if first & 0x40 and self.inflater is not None:  # RSV1: compressed
                payload = self.inflater.decompress(payload + b"\x00\x00\xff\xff")
            self.fragments.append(payload)
            if first & 0x80:  # FIN
                message = b"".join(self.fragments)
                self.fragments.clear()
                self._message(message, now)
        elif opcode == 0x9:  # ping
            self._send(0xA, payload)
        elif opcode == 0x8:  # close
            self.close_code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
            self._send(0x8, payload[:2])
            self.close()

    def _message(self, message: bytes, now: float) -> None:
        name = _decode_event(message).vm.name
        if not name.startswith(self.prefix):
            return
        index = int(name[len(self.prefix) :])
        if not math.isnan(self.received_at[index]):
            self.duplicates += 1
            return
        self.received_at[index] = now
        self.count += 1
        if index <= self.last_index:
            self.in_order = False
        self.last_index = index
        if self.count == len(self.received_at):
            self.finish()

    def _send(self, opcode: int, payload: bytes) -> None:
        # Client frames are masked; control frames are short.
        mask = secrets.token_bytes(4)
        masked = bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))
        assert self.transport is not None
        self.transport.write(bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + masked)


@dataclass
class ListenerReport:
    """What one listener process saw: per listener, when each write's event arrived (NaN: never)."""

    received_at: list[list[float]] = field(default_factory=list)
    in_order: int = 0
    duplicates: int = 0
    close_codes: dict[int | None, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)


@dataclass
class ListenOptions:
    host: str
    port: int
    path: str
    count: int
    prefix: str
    expected: int
    compression: bool


async def _listen(pipe: Connection, options: ListenOptions) -> None:
    loop = asyncio.get_running_loop()
    semaphore = asyncio.Semaphore(CONNECT_CONCURRENCY)
    listeners: list[Listener] = []
    report = ListenerReport()
    unfinished = options.count
    all_finished = asyncio.Event()

    def finished() -> None:
        nonlocal unfinished
        unfinished -= 1
        if unfinished == 0:
            all_finished.set()

    async def open_one() -> None:
        async with semaphore:
            listener = Listener(
                options.path,
                f"{options.host}:{options.port}",
                prefix=options.prefix,
                expected=options.expected,
                compression=options.compression,
                on_finished=finished,
            )
            try:
                await loop.create_connection(lambda: listener, options.host, options.port)
                await asyncio.wait_for(listener.opened, 30)
            except (OSError, ConnectionError, TimeoutError) as exc:
                report.failures.append(repr(exc))
                listener.close()
                listener.finish()
                return
            listeners.append(listener)

    await asyncio.gather(*(open_one() for _ in range(options.count)))
    pipe.send(("ready", len(listeners), report.failures[:3]))
    wait_seconds = await loop.run_in_executor(None, pipe.recv)  # sent once the writes are done
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(all_finished.wait(), wait_seconds)
    for listener in listeners:
        report.received_at.append(listener.received_at)
        report.in_order += listener.in_order
        report.duplicates += listener.duplicates
        code = listener.close_code if listener.closed.done() else None
        report.close_codes[code] = report.close_codes.get(code, 0) + 1
        listener.close()
    pipe.send(("done", report))


def listener_process(pipe: Connection, options: ListenOptions) -> None:
    """Entry point of a listener process: connect, report ready, wait for the go, report what arrived."""
    raise_fd_limit()
    run_loop(_listen(pipe, options))
