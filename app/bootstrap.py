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
from app.domain.realtime.subscribers import CutOffSubscriber
from app.domain.users.principals import PrincipalCache
from app.domain.vms.reads import VMReadCache
from app.events import REVOCATIONS_CHANNEL, USERS_CHANNEL, VMS_CHANNEL, EventPublisher
from app.runtime import Runtime
from app.security import PasswordHasher, TokenService, VMSJWTAuth, create_jwt_auth

log = structlog.get_logger("vms.bootstrap")


def run_migrations(alchemy: SQLAlchemyAsyncConfig) -> None:
    """Bring the schema to head (blocking: call it from a thread)."""
    AlembicCommands(sqlalchemy_config=alchemy).upgrade("head")


def create_channels(settings: Settings) -> ChannelsPlugin:
    backend: Any
    if settings.redis_url:
        # Imported only when configured: the Redis client adds 13 MB to every process that loads it.
        from redis.asyncio import Redis

        from app.redis_channels import NamespacedRedisPubSubBackend

        backend = NamespacedRedisPubSubBackend(
            redis=Redis.from_url(settings.redis_url), namespace=settings.redis_namespace
        )
    else:
        backend = MemoryChannelsBackend()
    return ChannelsPlugin(
        backend=backend,
        channels=[VMS_CHANNEL, USERS_CHANNEL, REVOCATIONS_CHANNEL],
        subscriber_class=CutOffSubscriber,
        subscriber_max_backlog=settings.ws_backlog,
        subscriber_backlog_strategy="backoff",
    )


def create_stores(settings: Settings) -> dict[str, Store]:
    """Revoked tokens and rate-limit counters: in memory, or shared by all workers through Redis."""
    if settings.redis_url:
        from litestar.stores.redis import RedisStore
        from redis.asyncio import Redis

        # "<namespace>:revoked", not RedisStore.with_namespace's "<namespace>_revoked": every key VMS
        # writes starts with "<namespace>:", so a deployment's keys are one SCAN pattern.
        client = Redis.from_url(settings.redis_url)
        namespace = settings.redis_namespace
        return {
            name: RedisStore(client, namespace=f"{namespace}:{part}", handle_client_shutdown=True)
            for name, part in (("revoked_tokens", "revoked"), ("rate_limit", "ratelimit"))
        }
    return {"revoked_tokens": MemoryStore(), "rate_limit": MemoryStore()}


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
    principals = PrincipalCache(enabled=single_process)
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
    channels = create_channels(settings)
    runtime, _ = create_runtime(settings, engine, channels, session_maker, exclude=[])
    try:
        async with channels:
            yield runtime, session_maker
    finally:
        runtime.hasher.close()
        await engine.dispose()
