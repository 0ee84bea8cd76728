"""Litestar's Redis pub/sub channels backend, with every channel name under ``VMS_REDIS_NAMESPACE``, and a
subscription that outlives a Redis outage.

Pub/sub channels are global to a Redis server (the database number does not separate them), and
``RedisChannelsPubSubBackend`` subscribes to the names it is given as they are: its ``key_prefix`` is only
used by the stream backend. Without a prefix, two deployments on one server received each other's events,
and a ``user_deleted`` or revocation from one closed the other's sockets of the same user id. The app keeps
its short channel names; only the wire names carry the namespace.

Litestar's backend raises out of ``stream_events`` and ``publish`` on the first connection error, and
``ChannelsPlugin`` runs each in one task that nothing restarts: after a Redis restart of one second, the
process never heard from the bus again, and a publish queued behind the failure hung shutdown. Here
``stream_events`` reconnects and subscribes again, waiting ``FIRST_RETRY_SECONDS`` doubling to
``MAX_RETRY_SECONDS`` between attempts, and ``publish`` never raises. What the bus carries are hints ("the
log has reached seq N", "session S ended"): every process also reads the change log every
``ChangeFeed.POLL_SECONDS``, and at once when the subscription is back (``on_reconnect``), so a hint lost
meanwhile delays events by that much and loses none.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Callable, Iterable
from typing import TYPE_CHECKING, Any

from litestar.channels.backends.redis import RedisChannelsPubSubBackend

from app.faults import REDIS_LOST, Outage

if TYPE_CHECKING:
    from redis.asyncio import Redis

FIRST_RETRY_SECONDS = 0.1
MAX_RETRY_SECONDS = 2.0
READ_SECONDS = 1.0
"""How long one read of the subscription waits for a message before it is read again."""


class NamespacedRedisPubSubBackend(RedisChannelsPubSubBackend):
    def __init__(
        self,
        *,
        redis: Redis,
        namespace: str,
        outage: Outage,
        on_reconnect: Callable[[], None] | None = None,
    ) -> None:
        """``outage``: the process's Redis outage (shared with the login limits); ``on_reconnect`` is called
        each time the subscription is back after an outage (not at start)."""
        super().__init__(redis=redis, key_prefix=f"{namespace}:channels")
        self._channel_prefix = f"{namespace}:"
        self._on_reconnect = on_reconnect
        self._wanted: set[str] = set()
        self._broken = False  # the subscription must be made again before it is read
        self.outage = outage

    def _wire(self, channels: Iterable[str]) -> list[str]:
        return [f"{self._channel_prefix}{channel}" for channel in channels]

    async def ping(self) -> Any:
        """For ``/health``: Redis answers (within the client's socket timeouts) and the bus is subscribed,
        so "ok" after an outage means this process hears the others again, not only that Redis is up."""
        answer = await self._redis.ping()
        if self._broken:
            raise ConnectionError("Redis answers, but the bus is not subscribed again yet")
        return answer

    async def subscribe(self, channels: Iterable[str]) -> None:
        wire = self._wire(channels)
        self._wanted.update(wire)
        try:
            await super().subscribe(wire)
        except Exception as exc:  # Redis is away: stream_events subscribes to all of them when it is back
            self._lost(exc)

    async def unsubscribe(self, channels: Iterable[str]) -> None:
        wire = self._wire(channels)
        self._wanted.difference_update(wire)
        try:
            await super().unsubscribe(wire)
        except Exception as exc:  # the next subscription is made from ``_wanted``, without them
            self._lost(exc)

    async def publish(self, data: bytes, channels: Iterable[str]) -> None:
        """Publish, or drop the hint if Redis fails: never raises, so the plugin's publisher task lives on.

        A dropped hint is safe: the change log is the truth, and the other processes read it at their next
        poll. While the subscription is known to be down the hint is dropped without trying."""
        if self._broken:
            return
        try:
            await super().publish(data, self._wire(channels))
        except Exception as exc:
            self._lost(exc)

    async def stream_events(self) -> AsyncGenerator[tuple[str, Any], None]:
        """The parent's loop, but a failure of Redis is waited out instead of ending the stream."""
        delay = FIRST_RETRY_SECONDS
        while True:
            if self._broken:
                if not await self._resubscribe():
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, MAX_RETRY_SECONDS)
                    continue
                delay = FIRST_RETRY_SECONDS
            await self._has_subscribed.wait()
            pubsub = self._pub_sub
            try:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=READ_SECONDS)
            except Exception as exc:
                self._lost(exc)
                continue
            if message is None:
                continue
            channel: str = message["channel"].decode()
            # As in the parent: an unsubscribe takes effect later, so a message may still arrive for it.
            if channel.encode() not in pubsub.channels.keys() - pubsub.pending_unsubscribe_channels:
                continue
            # Only channels this backend subscribed to arrive, all of them under the prefix.
            if channel.startswith(self._channel_prefix):
                yield channel[len(self._channel_prefix) :], message["data"]

    def _lost(self, exc: BaseException) -> None:
        self._broken = True
        self.outage.failed(REDIS_LOST, exc)

    async def _resubscribe(self) -> bool:
        """A new connection subscribed to every wanted channel; then catch up on what the bus missed."""
        with contextlib.suppress(Exception):  # the old connection is dead: only forget it
            await self._pub_sub.aclose()
        try:
            if self._wanted:
                await super().subscribe(list(self._wanted))
        except Exception as exc:
            self.outage.failed(REDIS_LOST, exc)
            return False
        self._broken = False
        self.outage.recovered()
        if self._on_reconnect is not None:
            self._on_reconnect()
        return True
