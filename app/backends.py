"""The backends shared by the processes of one deployment, through Redis when it is configured: the bus
between processes, the rate-limit store and the failed-login counters (per process otherwise).

Redis is imported only when configured: its client adds 13 MB to every process that loads it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from litestar.channels import ChannelsPlugin
from litestar.stores.base import Store
from litestar.stores.memory import MemoryStore

from app.channels.events import REVOCATIONS_CHANNEL
from app.channels.subscribers import CutOffSubscriber
from app.config import Settings
from app.faults import Outage
from app.health import ChannelsPing
from app.security.throttle import FailureCounters, FallbackStore

BUS_CHANGES = "changes"
"""The bus channel that says "the change log has reached seq N": a process behind it reads the log."""


def create_bus(
    settings: Settings, redis_outage: Outage, *, on_reconnect: Callable[[], None] | None = None
) -> tuple[ChannelsPlugin | None, ChannelsPing | None]:
    """Between processes, through Redis when configured (None otherwise), and how /health pings it.

    The client has the short timeouts of :func:`_redis_client`, so /health answers within about a second
    while Redis is away; the backend's own loop (app/channels/redis.py) waits the outage out, with
    backoff, and calls ``on_reconnect`` when its subscription is back."""
    if not settings.redis_url:
        return None, None
    # Imported only when configured: the Redis client adds 13 MB to every process that loads it.
    from app.channels.redis import NamespacedRedisPubSubBackend

    backend = NamespacedRedisPubSubBackend(
        redis=_redis_client(settings.redis_url),
        namespace=settings.redis_namespace,
        outage=redis_outage,
        on_reconnect=on_reconnect,
    )
    bus = ChannelsPlugin(
        backend=backend, channels=[BUS_CHANGES, REVOCATIONS_CHANNEL], subscriber_class=CutOffSubscriber
    )
    return bus, backend.ping


def _redis_client(url: str) -> Any:
    """A client for the stores, the counters and the bus: short timeouts, so a request waits about a second
    at most for an unreachable Redis before the counters fall back (app/security/throttle.py) and /health
    says so; the bus's subscription reads with timeouts of its own.

    One immediate retry, on a dropped connection only: a connection pooled before Redis restarted fails at
    its first use ("Connection closed by server"), and without the retry that first request after the
    restart fell back or dropped its hint. A timeout is not retried, so the wait stays about a second."""
    from redis.asyncio import Redis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff
    from redis.exceptions import ConnectionError as RedisConnectionError

    retry = Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,))
    return Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1, retry=retry)


def create_stores(settings: Settings, redis_outage: Outage) -> dict[str, Store]:
    """Rate-limit counters: in memory, or shared by all workers through Redis.

    Revocations are not here: they are durable state in the database (ended sessions, token versions).
    """
    if settings.redis_url:
        from litestar.stores.redis import RedisStore

        # "<namespace>:ratelimit", not RedisStore.with_namespace's "<namespace>_ratelimit": every key VMS
        # writes starts with "<namespace>:", so a deployment's keys are one SCAN pattern.
        client = _redis_client(settings.redis_url)
        namespace = settings.redis_namespace
        return {
            # A dead Redis must not turn every login into a 500: the per-address limit goes per process.
            "rate_limit": FallbackStore(
                RedisStore(client, namespace=f"{namespace}:ratelimit", handle_client_shutdown=True),
                MemoryStore(),
                redis_outage,
            ),
        }
    return {"rate_limit": MemoryStore()}


def create_login_failures(settings: Settings, redis_outage: Outage) -> FailureCounters:
    """The per-account failed-login counters: in Redis (under the namespace) when configured."""
    redis = _redis_client(settings.redis_url) if settings.redis_url else None
    return FailureCounters(redis, prefix=f"{settings.redis_namespace}:login-failures", outage=redis_outage)
