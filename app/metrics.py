"""VMS's own Prometheus metrics, beside the request rate and latency of Litestar's Prometheus plugin.

They live in prometheus_client's default registry, which ``/metrics`` (app/http/metrics.py) exposes. Each
is a process-wide counter or gauge: with several workers each process answers for itself, so each is
scraped on a port of its own (README, "Watching the service"). prometheus_client's multiprocess mode is
not supported: see :func:`multiprocess_warning`.

Counters are incremented where the thing happens, through a child bound once to its labels: an increment
is then one lock and one addition. Gauges that describe a state (open sockets, pooled connections) are
read only when scraped, by functions the composition root sets (:func:`read_gauge`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from prometheus_client import Counter, Gauge, Histogram

PREFIX = "vms"

WEBSOCKETS_OPEN = Gauge(f"{PREFIX}_websockets_open", "WebSocket listeners open, by channel", ["channel"])
EVENTS_PUBLISHED = Counter(
    f"{PREFIX}_events_published_total",
    "Change events handed to this process's listeners, by channel",
    ["channel"],
)
EVENTS_DELIVERED = Counter(
    f"{PREFIX}_events_delivered_total", "Change events written to a WebSocket, by channel", ["channel"]
)
EVENTS_DROPPED = Counter(
    f"{PREFIX}_events_dropped_total",
    "Change events not delivered because their listener had fallen too far behind and was cut off",
)
LISTENERS_CUT_OFF = Counter(
    f"{PREFIX}_listeners_cut_off_total", "WebSocket listeners closed (1013) for falling too far behind"
)
LOGIN_FAILURES = Counter(f"{PREFIX}_login_failures_total", "Logins refused for a wrong email or password")
LOGIN_THROTTLED = Counter(
    f"{PREFIX}_login_throttled_total", "Logins refused with 429, by limit (address or account)", ["limit"]
)
TOKENS_REFUSED = Counter(f"{PREFIX}_tokens_refused_total", "Bearer tokens refused, by reason", ["reason"])
FORBIDDEN = Counter(f"{PREFIX}_forbidden_total", "Requests refused with 403 (signed in, but not allowed)")
DB_POOL_IN_USE = Gauge(f"{PREFIX}_db_pool_connections_in_use", "Database connections checked out of the pool")
CACHE_LOOKUPS = Counter(
    f"{PREFIX}_cache_lookups_total",
    "Read-cache lookups, by cache and result (hit or miss)",
    ["cache", "result"],
)
CHANGE_LOG_LAG = Histogram(
    f"{PREFIX}_change_log_lag_seconds",
    "Time from a change's commit to its delivery to this process's listeners",
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
CHANGE_LOG_LAST_SEQ = Gauge(f"{PREFIX}_change_log_last_seq", "The last change-log seq this process delivered")


def read_gauge(gauge: Gauge, read: Callable[[], float], *labels: str) -> None:
    """Have ``gauge`` (with ``labels``) report ``read()`` whenever it is scraped."""
    (gauge.labels(*labels) if labels else gauge).set_function(read)


MULTIPROCESS_VARIABLES = ("PROMETHEUS_MULTIPROC_DIR", "prometheus_multiproc_dir")


def multiprocess_warning(environ: Mapping[str, str]) -> str | None:
    """What is wrong with setting prometheus_client's multiprocess directory for VMS, if it is set.

    Litestar's ``/metrics`` then answers from the directory's files instead of the registry. Counters and
    histograms survive that, but the gauges read at scrape time (:func:`read_gauge`: pooled connections,
    the change log's last seq) never write to those files, so they read 0 (prometheus_client 0.26), and the
    files of a worker that stopped keep its series until someone deletes them."""
    name = next((name for name in MULTIPROCESS_VARIABLES if name in environ), None)
    if name is None:
        return None
    return (
        f"{name} is set: VMS does not support prometheus_client's multiprocess mode (its database-pool "
        "and change-log gauges would read 0). Unset it and scrape each worker on a port of its own "
        "(README, 'Watching the service')."
    )
