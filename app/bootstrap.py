"""Start-up work shared by the web app and the CLI: migrations, stores, channels, runtime objects."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import anyio
import structlog
from advanced_alchemy.alembic.commands import AlembicCommands
from advanced_alchemy.extensions.litestar import SQLAlchemyAsyncConfig
from litestar.channels import ChannelsPlugin
from litestar.channels.backends.memory import MemoryChannelsBackend
from litestar.stores.base import Store
from litestar.stores.memory import MemoryStore
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.config import Settings, jwt_secret
from app.db import WriteGate, create_alchemy_config, create_engine
from app.domain.auth.principals import PrincipalCache, Principals, SessionCache
from app.domain.realtime.subscribers import CutOffSubscriber
from app.domain.vms.reads import VMReadCache
from app.events import REVOCATIONS_CHANNEL, USERS_CHANNEL, VMS_CHANNEL, EventPublisher
from app.health import ChannelsPing
from app.passwords import PasswordHasher
from app.runtime import Runtime
from app.security import TokenService, VMSJWTAuth, create_jwt_auth
from app.throttle import FailureCounters, FallbackStore

log = structlog.get_logger("vms.bootstrap")


def run_migrations(alchemy: SQLAlchemyAsyncConfig) -> None:
    """Bring the schema to head (blocking: call it from a thread)."""
    AlembicCommands(sqlalchemy_config=alchemy).upgrade("head")


def create_channels(settings: Settings) -> tuple[ChannelsPlugin, ChannelsPing | None]:
    """The channels plugin, and how /health pings its backend's server (None for the in-memory one)."""
    backend: Any
    ping: ChannelsPing | None = None
    if settings.redis_url:
        # Imported only when configured: the Redis client adds 13 MB to every process that loads it.
        from redis.asyncio import Redis

        from app.redis_channels import NamespacedRedisPubSubBackend

        redis = Redis.from_url(settings.redis_url)
        backend = NamespacedRedisPubSubBackend(redis=redis, namespace=settings.redis_namespace)
        ping = redis.ping
    else:
        backend = MemoryChannelsBackend()
    plugin = ChannelsPlugin(
        backend=backend,
        channels=[VMS_CHANNEL, USERS_CHANNEL, REVOCATIONS_CHANNEL],
        subscriber_class=CutOffSubscriber,
        subscriber_max_backlog=settings.ws_backlog,
        subscriber_backlog_strategy="backoff",
    )
    return plugin, ping


def _redis_client(url: str) -> Any:
    """A client for the stores and counters: short timeouts and no retries, so a request waits about a
    second at most for an unreachable Redis before the counters fall back (app/throttle.py)."""
    from redis.asyncio import Redis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    return Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1, retry=Retry(NoBackoff(), 0))


def create_stores(settings: Settings) -> dict[str, Store]:
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
                what="the per-address login limit",
            ),
        }
    return {"rate_limit": MemoryStore()}


def create_login_failures(settings: Settings) -> FailureCounters:
    """The per-account failed-login counters: in Redis (under the namespace) when configured."""
    redis = _redis_client(settings.redis_url) if settings.redis_url else None
    return FailureCounters(
        redis, prefix=f"{settings.redis_namespace}:login-failures", what="the per-account login limit"
    )


def create_runtime(
    settings: Settings,
    engine: AsyncEngine,
    channels: ChannelsPlugin,
    session_maker: async_sessionmaker[AsyncSession],
    exclude: list[str],
) -> tuple[Runtime, VMSJWTAuth]:
    ttl = timedelta(minutes=settings.token_ttl_minutes)
    # The caches are exact only while this process makes every write: off when workers share Redis.
    single_process = not settings.redis_url
    principals = Principals(PrincipalCache(enabled=single_process), SessionCache(enabled=single_process))
    jwt_auth = create_jwt_auth(
        secret=jwt_secret(settings),
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        ttl=ttl,
        session_maker=session_maker,
        principals=principals,
        exclude=exclude,
    )
    runtime = Runtime(
        settings=settings,
        hasher=PasswordHasher(rounds=settings.bcrypt_rounds, threads=settings.bcrypt_threads),
        write_gate=WriteGate(serialize_transactions=settings.is_sqlite),
        events=EventPublisher(channels),
        tokens=TokenService(
            auth=jwt_auth, ttl=ttl, issuer=settings.jwt_issuer, audience=settings.jwt_audience
        ),
        principals=principals,
        vm_reads=VMReadCache(engine, enabled=single_process, max_entries=settings.vm_cache_entries),
        login_failures=create_login_failures(settings),
    )
    return runtime, jwt_auth


async def ensure_configured_admin(runtime: Runtime, session_maker: async_sessionmaker[AsyncSession]) -> None:
    settings = runtime.settings
    if not (settings.admin_email and settings.admin_password):
        return
    from litestar.exceptions import HTTPException

    from app.domain.users.services import UserService

    async with session_maker() as session:
        try:
            user = await UserService(session=session, runtime=runtime).ensure_admin(
                email=settings.admin_email, password=settings.admin_password, name=settings.admin_name
            )
        except HTTPException as exc:  # another worker created it first, or the email is taken
            log.warning("configured administrador not created", reason=exc.detail)
            return
    if user is not None:
        log.info("created the configured administrador", email=user.email, user_id=user.id)


@asynccontextmanager
async def open_runtime(settings: Settings) -> AsyncIterator[tuple[Runtime, async_sessionmaker[AsyncSession]]]:
    """Everything a command-line action needs, outside the web app."""
    engine = create_engine(settings)
    await anyio.to_thread.run_sync(run_migrations, create_alchemy_config(settings, engine))
    session_maker = async_sessionmaker(engine, expire_on_commit=False)
    channels, _ = create_channels(settings)
    runtime, _ = create_runtime(settings, engine, channels, session_maker, exclude=[])
    try:
        async with channels:
            yield runtime, session_maker
    finally:
        runtime.hasher.close()
        await runtime.login_failures.close()
        await engine.dispose()
