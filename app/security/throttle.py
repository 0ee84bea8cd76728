"""Counters for login limits: shared by every worker through Redis, per process otherwise or meanwhile.

``FailureCounters`` counts events per key in a fixed window (the per-account login throttle);
``FallbackStore`` keeps a Litestar store (the per-address rate limit) answering while Redis is down. Both
fall back to memory when Redis fails, because a limit that turns every login into a 500 is worse than a
limit that is only per process for a while; they try Redis again every ``RETRY_SECONDS``. The outage is
the process's one Redis :class:`~app.faults.Outage`, shared with the bus: one line when Redis is lost and
one when it is back, whoever notices.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from litestar.stores.base import Store

from app.faults import REDIS_LOST, Outage

if TYPE_CHECKING:
    from redis.asyncio import Redis

RETRY_SECONDS = 5.0
"""While Redis is failing, how long to answer from memory before trying it again."""
MAX_MEMORY_KEYS = 100_000
"""Per-process counters kept at most (oldest windows dropped first), so unique emails cannot fill memory."""


class RedisRetry:
    """When one user of Redis tries it again after a failure (``RETRY_SECONDS`` later); whether Redis is
    out, and the log lines saying so, is the process's shared ``outage``."""

    def __init__(self, outage: Outage) -> None:
        self._outage = outage
        self._retry_at = 0.0

    def should_try(self) -> bool:
        return time.monotonic() >= self._retry_at

    def failed(self, exc: BaseException) -> None:
        self._retry_at = time.monotonic() + RETRY_SECONDS
        self._outage.failed(REDIS_LOST, exc)

    def succeeded(self) -> None:
        self._outage.recovered()


class MemoryCounters:
    """Fixed-window counters of this process. Every window has the same length, so insertion order is
    expiry order and expired entries are dropped from the front."""

    def __init__(self, max_keys: int = MAX_MEMORY_KEYS) -> None:
        self.max_keys = max_keys
        self._counts: OrderedDict[str, tuple[int, float]] = OrderedDict()

    def hit(self, key: str, window_seconds: int) -> tuple[int, int]:
        now = time.monotonic()
        while self._counts:
            oldest, (_, expires_at) = next(iter(self._counts.items()))
            if expires_at > now:
                break
            del self._counts[oldest]
        count, expires_at = self._counts.pop(key, (0, now + window_seconds))
        self._counts[key] = (count + 1, expires_at)
        if len(self._counts) > self.max_keys:
            self._counts.popitem(last=False)
        return count + 1, max(math.ceil(expires_at - now), 1)

    def clear(self, key: str) -> None:
        self._counts.pop(key, None)


class FailureCounters:
    """``hit`` counts one more event for a key in its window and says how many and how long the window
    has left; ``clear`` forgets the key. Keys live in Redis under ``<prefix>:`` when a client is given;
    ``outage`` is the process's Redis outage."""

    def __init__(self, redis: Redis | None, prefix: str, outage: Outage) -> None:
        self._redis = redis
        self._prefix = prefix
        self._memory = MemoryCounters()
        self._outage = RedisRetry(outage)

    async def hit(self, key: str, window_seconds: int) -> tuple[int, int]:
        if self._redis is not None and self._outage.should_try():
            name = f"{self._prefix}:{key}"
            try:
                # One MULTI: two workers counting at once both see their increment, and the window starts
                # at the first event only (EXPIRE NX, Redis >= 7), whatever happens between the commands.
                async with self._redis.pipeline(transaction=True) as pipe:
                    pipe.incr(name)
                    pipe.expire(name, window_seconds, nx=True)
                    pipe.ttl(name)
                    count, _, ttl = await pipe.execute()
            except Exception as exc:  # any Redis failure: count here rather than fail the login
                self._outage.failed(exc)
            else:
                self._outage.succeeded()
                return int(count), int(ttl) if ttl > 0 else window_seconds
        return self._memory.hit(key, window_seconds)

    async def clear(self, key: str) -> None:
        self._memory.clear(key)
        if self._redis is not None and self._outage.should_try():
            try:
                await self._redis.delete(f"{self._prefix}:{key}")
            except Exception as exc:
                self._outage.failed(exc)
            else:
                self._outage.succeeded()

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()


class FallbackStore(Store):
    """A store that answers from ``fallback`` (in memory) while ``primary`` (Redis) fails; ``outage`` is the
    process's Redis outage."""

    def __init__(self, primary: Store, fallback: Store, outage: Outage) -> None:
        self._primary = primary
        self._fallback = fallback
        self._outage = RedisRetry(outage)

    async def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        if self._outage.should_try():
            try:
                result = await getattr(self._primary, method)(*args, **kwargs)
            except Exception as exc:
                self._outage.failed(exc)
            else:
                self._outage.succeeded()
                return result
        return await getattr(self._fallback, method)(*args, **kwargs)

    async def set(self, key: str, value: str | bytes, expires_in: int | timedelta | None = None) -> None:
        await self._call("set", key, value, expires_in=expires_in)

    async def get(self, key: str, renew_for: int | timedelta | None = None) -> bytes | None:
        result: bytes | None = await self._call("get", key, renew_for=renew_for)
        return result

    async def delete(self, key: str) -> None:
        await self._call("delete", key)

    async def delete_all(self) -> None:
        await self._call("delete_all")

    async def exists(self, key: str) -> bool:
        return bool(await self._call("exists", key))

    async def expires_in(self, key: str) -> int | None:
        result: int | None = await self._call("expires_in", key)
        return result

    async def __aexit__(self, *args: Any) -> None:
        await self._primary.__aexit__(*args)
