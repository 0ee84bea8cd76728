"""Litestar's Redis pub/sub channels backend, with every channel name under ``VMS_REDIS_NAMESPACE``.

Pub/sub channels are global to a Redis server (the database number does not separate them), and
``RedisChannelsPubSubBackend`` subscribes to the names it is given as they are: its ``key_prefix`` is only
used by the stream backend. Without a prefix, two deployments on one server received each other's events,
and a ``user_deleted`` or revocation from one closed the other's sockets of the same user id. The app keeps
its short channel names; only the wire names carry the namespace.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Iterable
from typing import TYPE_CHECKING, Any

from litestar.channels.backends.redis import RedisChannelsPubSubBackend

if TYPE_CHECKING:
    from redis.asyncio import Redis


class NamespacedRedisPubSubBackend(RedisChannelsPubSubBackend):
    def __init__(self, *, redis: Redis, namespace: str) -> None:
        super().__init__(redis=redis, key_prefix=f"{namespace}:channels")
        self._channel_prefix = f"{namespace}:"

    def _wire(self, channels: Iterable[str]) -> list[str]:
        return [f"{self._channel_prefix}{channel}" for channel in channels]

    async def subscribe(self, channels: Iterable[str]) -> None:
        await super().subscribe(self._wire(channels))

    async def unsubscribe(self, channels: Iterable[str]) -> None:
        await super().unsubscribe(self._wire(channels))

    async def publish(self, data: bytes, channels: Iterable[str]) -> None:
        await super().publish(data, self._wire(channels))

    async def stream_events(self) -> AsyncGenerator[tuple[str, Any], None]:
        # The parent only yields channels this backend subscribed to, all of them under the prefix.
        async for channel, data in super().stream_events():
            if channel.startswith(self._channel_prefix):
                yield channel[len(self._channel_prefix) :], data
