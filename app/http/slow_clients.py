"""A bound on slow clients: a request's head and body must arrive within ``VMS_CLIENT_TIMEOUT_SECONDS``.

uvicorn waits for a request's headers and body as long as the client keeps the connection open (its
keep-alive timeout only covers the quiet time between requests), so each client that sends half a
request holds a socket and a file descriptor for good; v1 went from 17 to 717 descriptors with 500 of
them. The application cannot see such a request (it is called once the headers are in), so the bound
lives in uvicorn's HTTP protocol: use this class with

    uvicorn --factory app:create_app --http app.http.slow_clients:BoundedHttpToolsProtocol ...

``litestar run`` uses it without a flag (:class:`BoundedRunPlugin`), whether it runs uvicorn in its own
process (one worker) or in a child process (``-W N``, ``--reload``).

A timer starts when a connection opens and when each request's first byte arrives, and stops when that
request's last body byte has arrived; if it fires first, the connection is closed. A request being
answered slowly by the application is not affected, nor is an upgraded WebSocket. Behind a reverse proxy
the proxy's own limits apply on the client side (nginx: ``client_header_timeout``, ``client_body_timeout``).
"""

from __future__ import annotations

import asyncio
import copy
import functools
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import click
import uvicorn
from litestar.plugins import CLIPluginProtocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from app.config import get_settings

BOUNDED_HTTP = "app.http.slow_clients:BoundedHttpToolsProtocol"
"""uvicorn's ``--http`` value for :class:`BoundedHttpToolsProtocol`."""
UVICORN_HTTP = "UVICORN_HTTP"
"""The environment variable uvicorn's command line reads for ``--http`` (its options' prefix is UVICORN_)."""


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    _timeout_seconds: float | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if BoundedHttpToolsProtocol._timeout_seconds is None:
            BoundedHttpToolsProtocol._timeout_seconds = get_settings().client_timeout_seconds
        self._request_timer: asyncio.TimerHandle | None = None

    def _arm(self) -> None:
        self._disarm()
        self._request_timer = self.loop.call_later(self._timeout_seconds or 10.0, self._too_slow)

    def _disarm(self) -> None:
        if self._request_timer is not None:
            self._request_timer.cancel()
            self._request_timer = None

    def _too_slow(self) -> None:
        self._request_timer = None
        if not self.transport.is_closing():
            self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm()

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()

    def on_response_complete(self) -> None:
        # Between requests, uvicorn's keep-alive timeout applies instead.
        self._disarm()
        super().on_response_complete()

    def handle_websocket_upgrade(self) -> None:
        self._disarm()
        super().handle_websocket_upgrade()


class BoundedRunPlugin(CLIPluginProtocol):
    """``litestar run`` serves with :class:`BoundedHttpToolsProtocol`, so the README's quick start and its
    scale-out command (``-W N``) bound slow clients as the production command does.

    Litestar's ``run`` has no option for uvicorn's protocol: with several workers (or ``--reload``) it
    starts uvicorn's command line in a child process, which reads ``UVICORN_HTTP`` from the environment it
    inherits; with one it calls ``uvicorn.run`` in this process with arguments of its own, so for that
    call alone ``uvicorn.run`` is given ``http=`` too. An ``UVICORN_HTTP`` set by the operator is kept, in
    both cases."""

    def on_cli_init(self, cli: click.Group) -> None:
        run = cli.commands.get("run")
        if run is not None and run.callback is not None and not getattr(run.callback, "bounded", False):
            cli.add_command(bounded_run(run), "run")


def bounded_run(run: click.Command) -> click.Command:
    """A copy of Litestar's ``run`` command that serves with :data:`BOUNDED_HTTP` (see the plugin)."""
    serve = run.callback
    assert serve is not None

    @functools.wraps(serve)
    def serve_bounded(*args: Any, **kwargs: Any) -> Any:
        chosen = os.environ.get(UVICORN_HTTP)
        protocol = chosen or BOUNDED_HTTP
        try:
            os.environ[UVICORN_HTTP] = protocol  # for the uvicorn child process of -W N or --reload
            with _uvicorn_run_with(http=protocol):
                return serve(*args, **kwargs)
        finally:  # the command's own: nothing started after it (a test's next command) inherits it
            if chosen is None:
                os.environ.pop(UVICORN_HTTP, None)

    serve_bounded.bounded = True  # type: ignore[attr-defined]
    command = copy.copy(run)
    command.callback = serve_bounded
    return command


@contextmanager
def _uvicorn_run_with(**options: Any) -> Iterator[None]:
    original: Callable[..., None] = uvicorn.run
    uvicorn.run = functools.partial(original, **options)
    try:
        yield
    finally:
        uvicorn.run = original
