"""``GET /metrics``: Litestar's Prometheus plugin (request rate and latency by route and status) and VMS's
own metrics (app/metrics.py), in Prometheus' text format, for an administrador's token or the scrape
token (``VMS_METRICS_TOKEN``); never anonymously.
"""

from __future__ import annotations

from typing import Any

from litestar.enums import ScopeType
from litestar.plugins.prometheus import PrometheusConfig, PrometheusController
from litestar.types import Guard, Scopes

from app.metrics import PREFIX
from app.security.refusals import SCRAPE_TOKEN

METRICS_PATH = "/metrics"


def create_prometheus_config() -> PrometheusConfig:
    """Request metrics by route template (``/vms/{vm_id}``, not one series per id), HTTP only: a WebSocket
    lasts hours and has its own gauge (``vms_websockets_open``)."""
    scopes: Scopes = {ScopeType.HTTP}
    return PrometheusConfig(
        app_name=PREFIX, prefix=PREFIX, group_path=True, scopes=scopes, exclude=[f"^{METRICS_PATH}$"]
    )


def create_metrics_controller(guard: Guard, scrape_token: str | None) -> type[PrometheusController]:
    opt: dict[str, Any] = {SCRAPE_TOKEN: scrape_token} if scrape_token else {}

    class MetricsController(PrometheusController):
        path = METRICS_PATH
        guards = [guard]  # noqa: RUF012
        include_in_schema = False

    MetricsController.opt = opt
    return MetricsController
