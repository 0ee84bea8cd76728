"""``GET /metrics``: Litestar's Prometheus plugin (request rate and latency by route and status) and VMS's
own metrics (app/metrics.py), in Prometheus' text format, for an administrador's token or the scrape
token (``VMS_METRICS_TOKEN``); never anonymously.
"""

from __future__ import annotations

import time
from typing import Any, cast

from litestar.enums import ScopeType
from litestar.plugins.prometheus import PrometheusConfig, PrometheusController, PrometheusMiddleware
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR
from litestar.types import ASGIApp, Guard, HTTPScope, Message, Receive, Scope, Scopes, Send

from app.metrics import PREFIX
from app.security.refusals import SCRAPE_TOKEN

METRICS_PATH = "/metrics"
LABELS = ("method", "path", "status_code", "app_name")
"""The plugin's labels, in its order (its metrics are created with them)."""


class RouteMetricsMiddleware(PrometheusMiddleware):
    """The plugin's request metrics (same names and labels), recorded with label children bound once per
    (method, route, status) instead of looked up per request.

    The plugin's own ``__call__`` builds a ``Request`` and resolves four labelled children on every
    request (a lock each): that was 12% of a cached ``GET /vms/{id}``'s time. Routes are templates, so
    the bound children stay as few as the routes times their statuses.
    """

    def __init__(self, app: ASGIApp, config: PrometheusConfig) -> None:
        super().__init__(app, config)
        labels: dict[str, str | int | float] = dict.fromkeys(LABELS, "")
        self._count = self.request_count(labels)
        self._time = self.request_time(labels)
        self._errors = self.requests_error_count(labels)
        self._progress = self.requests_in_progress(labels)
        self._finished: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self._running: dict[tuple[str, str], Any] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method, path = cast("HTTPScope", scope)["method"], scope.get("path_template") or scope["path"]
        status = 500
        started = time.perf_counter()

        async def send_noting_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        running = self._running.get((method, path))
        if running is None:
            running = self._running[(method, path)] = self._progress.labels(method, path, 200, PREFIX)
        running.inc()
        try:
            await self.app(scope, receive, send_noting_status)
        finally:
            running.dec()
            finished = self._finished.get((method, path, status))
            if finished is None:
                labels = (method, path, status, PREFIX)
                finished = (self._count.labels(*labels), self._time.labels(*labels))
                self._finished[(method, path, status)] = finished
            finished[0].inc()
            finished[1].observe(time.perf_counter() - started)
            if status >= HTTP_500_INTERNAL_SERVER_ERROR:
                self._errors.labels(method, path, status, PREFIX).inc()


def create_prometheus_config() -> PrometheusConfig:
    """Request metrics by route template (``/vms/{vm_id}``, not one series per id), HTTP only: a WebSocket
    lasts hours and has its own gauge (``vms_websockets_open``)."""
    scopes: Scopes = {ScopeType.HTTP}
    return PrometheusConfig(
        app_name=PREFIX,
        prefix=PREFIX,
        group_path=True,
        scopes=scopes,
        exclude=[f"^{METRICS_PATH}$"],
        middleware_class=RouteMetricsMiddleware,
    )


def create_metrics_controller(guard: Guard, scrape_token: str | None) -> type[PrometheusController]:
    opt: dict[str, Any] = {SCRAPE_TOKEN: scrape_token} if scrape_token else {}

    class MetricsController(PrometheusController):
        path = METRICS_PATH
        guards = [guard]  # noqa: RUF012
        include_in_schema = False

    MetricsController.opt = opt
    return MetricsController
