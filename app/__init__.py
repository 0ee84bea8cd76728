"""VMS: the Litestar application, assembled in one readable place."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import anyio
import structlog
from advanced_alchemy.extensions.litestar import SQLAlchemyPlugin
from litestar import Litestar, Request
from litestar.config.cors import CORSConfig
from litestar.datastructures import State
from litestar.di import Provide
from litestar.middleware.rate_limit import RateLimitConfig
from litestar.static_files import create_static_files_router
from sqlalchemy.ext.asyncio import async_sessionmaker

from app.bootstrap import (
    create_channels,
    create_runtime,
    create_stores,
    ensure_configured_admin,
    run_migrations,
)
from app.cli import UsersCLIPlugin
from app.config import ConfigError, Settings, check_deployment, get_settings, requested_workers
from app.db import create_alchemy_config, create_engine
from app.domain.auth.controller import AuthController
from app.domain.realtime.connections import ConnectionRegistry
from app.domain.realtime.controller import user_events, vm_events
from app.domain.users.controller import UserController
from app.domain.vms.controller import VMController
from app.errors import exception_handlers
from app.headers import add_security_headers, complete_allow_header
from app.health import CHANNELS_PING_STATE_KEY, health
from app.interpreter import restore_after_serving, tune_for_serving
from app.logs import create_logging_plugin, install_redaction
from app.openapi import SCALAR_ASSETS_DIR, SCALAR_ASSETS_PATH, WriteBodySchemaPlugin, create_openapi_config
from app.runtime import RUNTIME_STATE_KEY, provide_runtime
from app.security import client_address
from app.ws_close import accept_before_close

__version__ = "0.1.0"
log = structlog.get_logger("vms")

PUBLIC_PATHS = ["^/login$", "^/health$", "^/docs"]


async def is_login_request(request: Request[Any, Any, Any]) -> bool:
    # A coroutine on purpose: Litestar would run a plain function in a worker thread on every request.
    return request.scope["path"] == "/login"


def create_app(settings: Settings | None = None) -> Litestar:
    """The app for these settings, or for the environment's (``litestar run``, ``uvicorn --factory``).

    Built from the environment, a configuration error ends the process with one line naming the variable:
    the traceback said nothing more and buried it. With explicit settings the ConfigError propagates.
    """
    if settings is not None:
        return _build_app(settings)
    try:
        return _build_app(get_settings())
    except ConfigError as exc:
        raise SystemExit(f"vms: configuration error: {exc}") from None


def _build_app(settings: Settings) -> Litestar:
    for warning in check_deployment(settings, requested_workers(sys.argv, dict(os.environ))):
        log.warning(warning)
    engine = create_engine(settings)
    alchemy = create_alchemy_config(settings, engine)
    session_maker = async_sessionmaker(engine, expire_on_commit=False)
    channels, channels_ping = create_channels(settings)
    runtime, jwt_auth = create_runtime(settings, engine, channels, session_maker, exclude=PUBLIC_PATHS)
    connections = ConnectionRegistry(channels, session_maker)

    async def on_startup(app: Litestar) -> None:
        await anyio.to_thread.run_sync(run_migrations, alchemy)
        await ensure_configured_admin(runtime, session_maker)
        await connections.start()
        tune_for_serving()  # last: everything built so far lives as long as the app

    async def on_shutdown(app: Litestar) -> None:
        restore_after_serving()
        await connections.stop()
        runtime.hasher.close()
        await runtime.login_failures.close()
        await engine.dispose()

    login_rate_limit = RateLimitConfig(
        rate_limit=("minute", settings.login_rate_limit),
        check_throttle_handler=is_login_request,
        identifier_for_request=client_address,
        store="rate_limit",
    )
    install_redaction()
    logging = create_logging_plugin(debug=settings.debug, level=settings.log_level)
    docs_assets = create_static_files_router(
        path=SCALAR_ASSETS_PATH,
        directories=[Path(SCALAR_ASSETS_DIR)],
        opt={"exclude_from_auth": True},
        include_in_schema=False,
    )
    app = Litestar(
        route_handlers=[
            AuthController,
            UserController,
            VMController,
            vm_events,
            user_events,
            health,
            docs_assets,
        ],
        dependencies={"runtime": Provide(provide_runtime, sync_to_thread=False)},
        state=State(
            {
                RUNTIME_STATE_KEY: runtime,
                "ws_connections": connections,
                CHANNELS_PING_STATE_KEY: channels_ping,
            }
        ),
        plugins=[
            SQLAlchemyPlugin(config=alchemy),
            channels,
            logging,
            UsersCLIPlugin(),
            WriteBodySchemaPlugin(),
        ],
        middleware=[login_rate_limit.middleware, jwt_auth.middleware],
        before_send=[add_security_headers, complete_allow_header],
        stores=create_stores(settings),
        openapi_config=create_openapi_config(
            use_cdn=settings.docs_cdn, version=__version__, components=[jwt_auth.openapi_components]
        ),
        security=[jwt_auth.security_requirement],
        exception_handlers=exception_handlers,
        cors_config=CORSConfig(allow_origins=settings.cors_origins) if settings.cors_origins else None,
        request_max_body_size=settings.max_body_bytes,
        on_startup=[on_startup],
        on_shutdown=[on_shutdown],
        debug=settings.debug,
    )
    app.asgi_handler = accept_before_close(app.asgi_handler)
    return app


__all__ = ["create_app"]
