"""VMS: the Litestar application, assembled in one readable place."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import anyio
import structlog
from advanced_alchemy.extensions.litestar import SQLAlchemyPlugin
from litestar import Litestar, Request, Router
from litestar.config.cors import CORSConfig
from litestar.datastructures import State
from litestar.middleware.rate_limit import RateLimitConfig
from litestar.static_files import create_static_files_router

from app.backends import create_stores
from app.bootstrap import bootstrap_admin
from app.cli import UsersCLIPlugin
from app.command_line import requested_workers, serving_url
from app.config import (
    ConfigError,
    Settings,
    check_deployment,
    get_settings,
)
from app.db.engine import run_migrations
from app.domain.auth.controller import AuthController, SessionController
from app.domain.auth.guards import requires_admin_or_scraper
from app.domain.changes.controller import ChangeController
from app.domain.realtime.asyncapi import create_asyncapi_route
from app.domain.realtime.connections import ConnectionRegistry
from app.domain.realtime.controller import user_events, vm_events
from app.domain.users.controller import UserController
from app.domain.vms.controller import VMController
from app.health import CHANNELS_PING_STATE_KEY, health
from app.http.access_log import with_request_frame
from app.http.deadline import database_deadline
from app.http.errors import exception_handlers
from app.http.headers import add_security_headers, complete_allow_header
from app.http.metrics import FinishedRequests, create_metrics_controller, create_prometheus_config
from app.http.openapi import (
    SCALAR_ASSETS_DIR,
    SCALAR_ASSETS_PATH,
    WriteBodySchemaPlugin,
    create_openapi_config,
)
from app.http.slow_clients import BoundedRunPlugin
from app.http.ws_close import accept_before_close
from app.interpreter import restore_after_serving, tune_for_serving
from app.logs import configure_server_loggers, create_logging_plugin
from app.metrics import CHANGE_LOG_LAST_SEQ, DB_POOL_IN_USE, multiprocess_warning, read_gauge
from app.security.events import LoggedRateLimitMiddleware
from app.state import collaborators
from app.wiring import Wiring

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
    if metrics_warning := multiprocess_warning(os.environ):
        log.warning(metrics_warning)
    wiring = Wiring(settings, exclude_from_auth=PUBLIC_PATHS)
    connections = ConnectionRegistry(
        wiring.channels, wiring.alchemy.get_session, faults=wiring.database_faults
    )

    async def on_startup(app: Litestar) -> None:
        await anyio.to_thread.run_sync(run_migrations, wiring.alchemy)
        await wiring.start_serving()  # first: the start-up administrador's creation is published
        await bootstrap_admin(wiring)
        await connections.start()
        url = serving_url(sys.argv, dict(os.environ))
        log.info(f"VMS {__version__} serving the API at {url} and its docs at {url}/docs", url=url)
        tune_for_serving()  # last: everything built so far lives as long as the app

    async def on_shutdown(app: Litestar) -> None:
        restore_after_serving()
        await wiring.stop_serving()
        await connections.stop()
        await wiring.close()

    login_rate_limit = RateLimitConfig(
        rate_limit=("minute", settings.login_rate_limit),
        check_throttle_handler=is_login_request,
        identifier_for_request=wiring.client_address,
        store="rate_limit",
        middleware_class=LoggedRateLimitMiddleware,
    )
    prometheus = create_prometheus_config()
    read_gauge(DB_POOL_IN_USE, wiring.pool_in_use)
    read_gauge(CHANGE_LOG_LAST_SEQ, lambda: wiring.feed.last_seq)
    configure_server_loggers(uvicorn_access_log=not settings.access_log)
    logging = create_logging_plugin(
        debug=settings.debug, level=settings.log_level, log_format=settings.log_format
    )
    docs_assets = create_static_files_router(
        path=SCALAR_ASSETS_PATH,
        directories=[Path(SCALAR_ASSETS_DIR)],
        opt={"exclude_from_auth": True},
        include_in_schema=False,
    )
    app = Litestar(
        route_handlers=[
            # The per-address login limit wraps only the sign-in routes: on every other route Litestar's
            # rate-limit middleware built a Request to find it had nothing to limit (2-3% of a cached read).
            Router(path="/", route_handlers=[AuthController], middleware=[login_rate_limit.middleware]),
            SessionController,
            UserController,
            VMController,
            ChangeController,
            vm_events,
            user_events,
            health,
            docs_assets,
            create_asyncapi_route(__version__),
            create_metrics_controller(requires_admin_or_scraper, settings.metrics_token),
        ],
        state=State(
            {
                **collaborators(*wiring.collaborators()),
                "ws_connections": connections,
                CHANNELS_PING_STATE_KEY: wiring.channels_ping,
            }
        ),
        plugins=[
            SQLAlchemyPlugin(config=wiring.alchemy),
            wiring.channels,
            logging,
            UsersCLIPlugin(),
            BoundedRunPlugin(),
            WriteBodySchemaPlugin(),
        ],
        middleware=[
            prometheus.middleware,
            database_deadline(settings.db_timeout_seconds),
            wiring.jwt_auth.middleware,
        ],
        before_send=[add_security_headers, complete_allow_header],
        stores=create_stores(settings, wiring.redis_outage),
        openapi_config=create_openapi_config(
            use_cdn=settings.docs_cdn, version=__version__, components=[wiring.jwt_auth.openapi_components]
        ),
        security=[wiring.jwt_auth.security_requirement],
        exception_handlers=exception_handlers,
        cors_config=CORSConfig(allow_origins=settings.cors_origins) if settings.cors_origins else None,
        request_max_body_size=settings.max_body_bytes,
        on_startup=[on_startup],
        on_shutdown=[on_shutdown],
        debug=settings.debug,
    )
    handler = accept_before_close(app.asgi_handler)
    app.asgi_handler = with_request_frame(
        handler, metrics=FinishedRequests(prometheus), access_line=settings.access_log
    )
    return app


__all__ = ["create_app"]
