"""``/ws/vms`` (any signed-in user) and ``/ws/users`` (administradores): change events as JSON text frames.

The token comes from the ``Authorization`` header or, for browsers, ``?token=``; the authentication
middleware and the guards run before the handshake is accepted, so a bad token gets nothing. The socket is
subscribed before the handshake completes, so a client that has connected misses no later event.

A connection ends when the client goes away (no close frame needed), or with a close code: 1008 when its
token expires or its session ends (logout, password or role change, deleted user, an ended session), 1013
when the client has fallen ``ws_backlog`` events behind.

Access tokens are short; a socket outlives the one it was opened with when the client sends, before that
expires, a text frame ``{"token": "<a fresh access token of the same session>"}`` (got from
``POST /login/refresh``): the expiry moves to the new token's. A bad or foreign token closes it with 1008.
The socket so stays open as long as its session lives, with no reconnect.

Each connection costs two tasks (the sender and the reader) plus the handler itself: the other reasons to
end it are plain callbacks resolving one future, so an idle listener stays cheap.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime
from typing import Any

import msgspec
from litestar import WebSocket, websocket
from litestar.channels import ChannelsPlugin
from litestar.di import NamedDependency
from litestar.exceptions import WebSocketDisconnect, WebSocketException
from litestar.security.jwt import Token
from litestar.status_codes import WS_1008_POLICY_VIOLATION
from litestar.types.asgi_types import WebSocketSendEvent

from app.channels.events import USERS_CHANNEL, VMS_CHANNEL
from app.channels.subscribers import CutOffSubscriber
from app.domain.auth.guards import requires_admin, requires_user
from app.domain.changes.feed import ChangeFeed, ReplayOutrun
from app.domain.realtime.connections import ConnectionRegistry
from app.domain.realtime.messages import TokenRenewal
from app.domain.users.models import USER_ENTITY
from app.domain.vms.models import VM_ENTITY
from app.http.errors import websocket_fault_close
from app.metrics import EVENTS_DELIVERED, LISTENERS_CUT_OFF, WEBSOCKETS_OPEN
from app.security.jwt import TokenService, session_id_of
from app.state import collaborator

WS_1013_TRY_AGAIN_LATER = 1013
CLOSE_TIMEOUT = 10.0
"""Seconds to wait for a close frame to be written; a client that never reads never frees room for it."""

WS_4400_BAD_REQUEST = 4400
WS_4410_RESYNC = 4410
ENTITY_OF_CHANNEL = {VMS_CHANNEL: VM_ENTITY, USERS_CHANNEL: USER_ENTITY}
MAX_SEQ = 2**63 - 1

Ending = tuple[int, str] | None
"""How a connection ends: a close code and reason, or None when the client has already gone."""


class _Outcome:
    """The first reason to end a connection wins; later ones are ignored."""

    __slots__ = ("future",)

    def __init__(self) -> None:
        self.future: asyncio.Future[Ending] = asyncio.get_running_loop().create_future()

    def end(self, ending: Ending = None) -> None:
        if not self.future.done():
            self.future.set_result(ending)


class _SeqOnly(msgspec.Struct):
    seq: int = 0


_decode_seq = msgspec.json.Decoder(_SeqOnly).decode


_decode_renewal = msgspec.json.Decoder(TokenRenewal).decode


def _seconds_until(token: Token) -> float:
    return max((token.exp - datetime.now(UTC)).total_seconds(), 0.0)


def _seq_of(payload: bytes) -> int:
    return _decode_seq(payload).seq


def _since_of(socket: WebSocket[Any, Token, Any]) -> int | None:
    """``?since=<seq>``: None without it; refused (4400) unless a non-negative integer."""
    raw = socket.query_params.get("since")
    if raw is None:
        return None
    if not raw.isdigit() or not raw.isascii() or len(raw) > 19 or int(raw) > MAX_SEQ:
        raise WebSocketException(detail="since must be a non-negative integer", code=WS_4400_BAD_REQUEST)
    return int(raw)


async def _check_since(feed: ChangeFeed, since: int, head: int) -> int:
    """The seq to replay up to; refuses a ``since`` ahead of the log (4400) or older than it keeps (4410)."""
    if since > head:
        await feed.catch_up()  # the client may have seen a seq from another worker this one has not read yet
        head = feed.last_seq
        if since > head:
            raise WebSocketException(
                detail=f"since is ahead of the log (last seq {head})", code=WS_4400_BAD_REQUEST
            )
    _, pruned_through = await feed.window()
    if since < pruned_through:
        raise WebSocketException(detail="resync", code=WS_4410_RESYNC)
    return head


def _cut_off(outcome: _Outcome) -> None:
    LISTENERS_CUT_OFF.inc()
    outcome.end((WS_1013_TRY_AGAIN_LATER, "too far behind"))


async def forward_replayed(
    socket: WebSocket[Any, Token, Any], frame: bytes, outcome: _Outcome, delivered: Any
) -> None:
    try:
        await socket.send(WebSocketSendEvent(type="websocket.send", text=frame.decode(), bytes=None))
    except Exception:  # the peer vanished mid-send
        outcome.end()
    else:
        delivered.inc()


async def _stream(
    socket: WebSocket[Any, Token, Any],
    channels: NamedDependency[ChannelsPlugin],
    channel: str,
    *,
    admin_only: bool,
) -> None:
    registry: ConnectionRegistry = socket.app.state.ws_connections
    since = _since_of(socket)
    outcome = _Outcome()
    subscriber = await channels.subscribe([channel])
    # Subscribed first: every event delivered from now on is queued, so a replay up to ``head`` leaves no gap.
    feed = collaborator(socket.app.state, ChangeFeed)
    head = feed.last_seq
    registration = registry.add(
        socket,
        admin_only=admin_only,
        on_revoke=lambda: outcome.end((WS_1008_POLICY_VIOLATION, "token revoked")),
    )
    if isinstance(subscriber, CutOffSubscriber):
        subscriber.when_overflowed(lambda: _cut_off(outcome))
    delivered = EVENTS_DELIVERED.labels(channel)
    open_sockets = WEBSOCKETS_OPEN.labels(channel)
    tokens = collaborator(socket.app.state, TokenService)
    loop = asyncio.get_running_loop()

    def close_at_expiry(token: Token) -> asyncio.TimerHandle:
        return loop.call_later(
            _seconds_until(token), outcome.end, (WS_1008_POLICY_VIOLATION, "token expired")
        )

    expiry = close_at_expiry(socket.auth)

    replayed_through = head if since is not None else 0

    async def forward(payload: bytes) -> None:
        nonlocal replayed_through
        # Checked inline first: this runs once per event per listener, and is nearly always a no-op.
        if (registration.recheck is not None or registration.revoked) and not await registration.may_send():
            return
        if replayed_through:
            # Queued while the replay ran: already sent if it is at or below what the replay covered.
            if _seq_of(payload) <= replayed_through:
                return
            replayed_through = 0
        try:
            await socket.send(WebSocketSendEvent(type="websocket.send", text=payload.decode(), bytes=None))
        except Exception:  # the peer vanished mid-send
            outcome.end()
        else:
            delivered.inc()

    def renew(frame: str | None) -> None:
        """A ``{"token": "<access token>"}`` frame: a fresh token of this user's same session moves the
        expiry on; a bad or foreign one ends the connection. Other frames are ignored, as they always were."""
        nonlocal expiry
        if not frame or '"token"' not in frame:
            return
        try:
            token = tokens.verify(_decode_renewal(frame).token)
        except (msgspec.DecodeError, msgspec.ValidationError):
            token = None
        if (
            token is None
            or token.sub != socket.auth.sub
            or session_id_of(token) != registration.session_id
            or token.extras.get("ver") != registration.token_version
        ):
            outcome.end((WS_1008_POLICY_VIOLATION, "token refused"))
            return
        expiry.cancel()
        expiry = close_at_expiry(token)

    async def read_until_closed() -> None:
        # Reading is how the client's departure is noticed; the only frame it may send renews its token.
        try:
            while (message := await socket.receive())["type"] != "websocket.disconnect":
                text = message.get("text")
                renew(text if isinstance(text, str) else None)
        except WebSocketDisconnect:
            pass
        finally:
            outcome.end()

    reader: asyncio.Task[None] | None = None
    try:
        if since is not None:
            try:
                head = await _check_since(feed, since, head)
            except WebSocketException:
                raise
            except Exception as exc:
                closing = websocket_fault_close(socket, exc)
                if closing is None:
                    raise
                raise closing from None
            replayed_through = head
        await socket.accept()
        open_sockets.inc()
        reader = asyncio.create_task(read_until_closed())
        if since is not None:
            try:
                async for batch in feed.replay(ENTITY_OF_CHANNEL[channel], since, head):
                    for _, frame in batch:
                        # A revocation or a cut-off during a long replay stops it at once.
                        if registration.recheck is not None and not await registration.may_send():
                            break
                        if outcome.future.done():
                            break
                        await forward_replayed(socket, frame, outcome, delivered)
                    if outcome.future.done():
                        break
            except ReplayOutrun:
                outcome.end((WS_4410_RESYNC, "resync"))
            except Exception as exc:
                closing = websocket_fault_close(socket, exc)
                if closing is None:
                    raise
                outcome.end((closing.code, closing.detail))
        async with subscriber.run_in_background(forward, join=False):
            ending = await outcome.future
    finally:
        expiry.cancel()
        if reader is not None:
            reader.cancel()
            open_sockets.dec()
        registry.remove(registration)
        await channels.unsubscribe(subscriber)
    if ending is not None:
        # Resources are released already; a client that never reads only delays its close frame.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(socket.close(code=ending[0], reason=ending[1]), CLOSE_TIMEOUT)


@websocket("/ws/vms", guards=[requires_user])
async def vm_events(socket: WebSocket[Any, Token, Any], channels: NamedDependency[ChannelsPlugin]) -> None:
    """VM changes: ``vm_created``, ``vm_updated``, ``vm_deleted``."""
    await _stream(socket, channels, VMS_CHANNEL, admin_only=False)


@websocket("/ws/users", guards=[requires_admin])
async def user_events(socket: WebSocket[Any, Token, Any], channels: NamedDependency[ChannelsPlugin]) -> None:
    """User changes: ``user_created``, ``user_updated``, ``user_deleted`` (administradores only)."""
    await _stream(socket, channels, USERS_CHANNEL, admin_only=True)
