"""``GET /metrics``: Litestar's Prometheus plugin (request rate and latency by route and status) and VMS's
own metrics (app/metrics.py), in Prometheus' text format, for an administrador's token or the scrape
token (``VMS_METRICS_TOKEN``); never anonymously.
"""

from __future__ import annotations

import re
from typing import Any, cast

from litestar.enums import ScopeType
from litestar.plugins.prometheus import PrometheusConfig, PrometheusController, PrometheusMiddleware
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR
from litestar.types import ASGIApp, Guard, HTTPScope, Receive, Scope, Scopes, Send

from app.metrics import PREFIX
from app.security.refusals import SCRAPE_TOKEN

METRICS_PATH = "/metrics"
LABELS = ("method", "path", "status_code", "app_name")
"""The plugin's labels, in its order (its metrics are created with them)."""


class FinishedRequests:
    """The plugin's request metrics (its names, labels, buckets and help texts), recorded once the response
    has gone out, by the wrapper that sees the status actually sent (app/http/access_log.py).

    The plugin's middleware records them inside Litestar's middleware stack, where a refusal raised by a
    middleware inside it (the authentication's 401) passes through as an exception before the outer
    handler turns it into a response: it counted those as 200 (the plugin) or 500 (this project's first
    version, also counted as an error). Label children are bound once per (method, route, status), not
    looked up per request: the plugin resolved four per request (a lock each), 12% of a cached read.
    """

    def __init__(self, config: PrometheusConfig) -> None:
        plugin = PrometheusMiddleware(app=_no_app, config=config)  # the plugin's metric definitions
        labels: dict[str, str | int | float] = dict.fromkeys(LABELS, "")
        self._count = plugin.request_count(labels)
        self._time = plugin.request_time(labels)
        self._errors = plugin.requests_error_count(labels)
        self._excluded = [re.compile(pattern) for pattern in _as_list(config.exclude)]
        # (method, route, status) -> its bound children, or None for a route the config excludes (/metrics)
        self._children: dict[tuple[str, str, int], tuple[Any, Any] | None] = {}

    def record(self, method: str, route: str, status: int, seconds: float) -> None:
        """One finished request to ``route`` (a route's template: a bounded set of label values)."""
        key = (method, route, status)
        children = self._children.get(key, _UNSEEN)
        if children is _UNSEEN:
            children = self._children[key] = self._bind(method, route, status)
        if children is None:
            return
        children[0].inc()
        children[1].observe(seconds)
        if status >= HTTP_500_INTERNAL_SERVER_ERROR:
            self._errors.labels(method, route, status, PREFIX).inc()

    def _bind(self, method: str, route: str, status: int) -> tuple[Any, Any] | None:
        if any(pattern.search(route) for pattern in self._excluded):
            return None
        labels = (method, route, status, PREFIX)
        return (self._count.labels(*labels), self._time.labels(*labels))


class InProgressMiddleware(PrometheusMiddleware):
    """The plugin's ``requests_in_progress`` gauge, by route: inside the routing (the route's template is
    known there), where the plugin's middleware ran. The rest of the plugin's metrics are recorded by
    :class:`FinishedRequests`, outside, where the status sent is known."""

    def __init__(self, app: ASGIApp, config: PrometheusConfig) -> None:
        super().__init__(app, config)
        self._progress = self.requests_in_progress(dict.fromkeys(LABELS, ""))
        self._running: dict[tuple[str, str], Any] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method, path = cast("HTTPScope", scope)["method"], scope.get("path_template") or scope["path"]
        running = self._running.get((method, path))
        if running is None:
            running = self._running[(method, path)] = self._progress.labels(method, path, 200, PREFIX)
        running.inc()
        try:
            await self.app(scope, receive, send)
        finally:
            running.dec()


_UNSEEN: Any = object()


async def _no_app(scope: Scope, receive: Receive, send: Send) -> None:
    """The app of the plugin middleware built only for its metric definitions; never called."""


def _as_list(exclude: str | list[str] | None) -> list[str]:
    if exclude is None:
        return []
    return [exclude] if isinstance(exclude, str) else list(exclude)


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
        middleware_class=InProgressMiddleware,
    )


def create_metrics_controller(guard: Guard, scrape_token: str | None) -> type[PrometheusController]:
    opt: dict[str, Any] = {SCRAPE_TOKEN: scrape_token} if scrape_token else {}

    class MetricsController(PrometheusController):
        path = METRICS_PATH
        guards = [guard]  # noqa: RUF012
        include_in_schema = False

    MetricsController.opt = opt
    return MetricsController
