"""``/metrics``: who may read it, and that its figures move with what the test does (parsed with
prometheus_client's own text parser). The metrics are the process's, so each check compares before and
after the action, never an absolute value.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from app.config import ConfigError
from tests.helpers import (
    ADMIN_EMAIL,
    bearer,
    create_account,
    make_settings,
    receive_event,
    server_with,
    sign_in_admin,
    truncate_postgres,
)
from tests.helpers.metrics import Samples, scrape_metrics, value
from tests.helpers.processes import PROJECT_ROOT, server_process, sqlite_server_env
from tests.helpers.sockets import ws_connect

SCRAPE_TOKEN = "scrape-" + "s" * 24
VM = {"name": "m", "cores": 1, "ram": 512, "disk": 10, "os": "debian", "status": "running"}


async def scrape(http: Any) -> Samples:
    return await scrape_metrics(http, bearer(SCRAPE_TOKEN))


async def test_metrics_answer_only_an_administrador_or_the_scrape_token(tmp_path: Path) -> None:
    async with server_with(tmp_path, metrics_token=SCRAPE_TOKEN) as server:
        http = server.http
        admin = await sign_in_admin(http)
        cliente = await create_account(http, admin)
        assert (await http.get("/metrics")).status_code == 401
        assert (await http.get("/metrics", headers=bearer("scrape-" + "x" * 24))).status_code == 401
        assert (await http.get("/metrics", headers=bearer(cliente.token))).status_code == 403
        assert (await http.get("/metrics", headers=bearer(admin.token))).status_code == 200
        await scrape(http)
    async with server_with(tmp_path) as server:  # no scrape token configured: administradores only
        assert (await server.http.get("/metrics", headers=bearer(SCRAPE_TOKEN))).status_code == 401


def test_a_short_scrape_token_is_refused_at_start(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="VMS_METRICS_TOKEN: must be text of 16 to 256"):
        make_settings(tmp_path, metrics_token="short")


async def test_metrics_move_with_requests_logins_cache_and_events(tmp_path: Path) -> None:
    async with server_with(tmp_path, metrics_token=SCRAPE_TOKEN) as server:
        http = server.http
        admin = await sign_in_admin(http)
        vm = (await http.post("/vms", json=VM, headers=admin.headers)).json()
        # A change leaves the VM out of the read cache: the first read below misses, the next two hit.
        assert (
            await http.patch(f"/vms/{vm['id']}", json={"name": "n"}, headers=admin.headers)
        ).status_code == 200
        before = await scrape(http)

        for _ in range(3):
            assert (await http.get(f"/vms/{vm['id']}", headers=admin.headers)).status_code == 200
        assert (
            await http.post("/login", json={"email": ADMIN_EMAIL, "password": "wrong-password"})
        ).status_code == 401
        assert (await http.get("/vms", headers=bearer("not.a.token"))).status_code == 401

        async with ws_connect(server, "/ws/vms", admin.token) as socket:
            await asyncio.sleep(0.2)
            during = await scrape(http)
            assert (
                await http.patch(f"/vms/{vm['id']}", json={"cores": 2}, headers=admin.headers)
            ).status_code == 200
            assert (await receive_event(socket))["event"] == "vm_updated"
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.2)
        after = await scrape(http)

    route = {"path": "/vms/{vm_id}", "method": "GET", "status_code": "200"}
    assert value(after, "vms_requests_total", **route) - value(before, "vms_requests_total", **route) == 3
    assert value(after, "vms_request_duration_seconds_count", **route) >= 3
    assert value(after, "vms_login_failures_total") - value(before, "vms_login_failures_total") == 1
    refused = value(after, "vms_tokens_refused_total", reason="malformed")
    assert refused - value(before, "vms_tokens_refused_total", reason="malformed") == 1
    for result, count in (("miss", 1), ("hit", 2)):
        looked_up = value(after, "vms_cache_lookups_total", cache="vms", result=result)
        assert looked_up - value(before, "vms_cache_lookups_total", cache="vms", result=result) == count
    assert (
        value(during, "vms_websockets_open", channel="vms")
        - value(before, "vms_websockets_open", channel="vms")
        == 1
    )
    assert value(after, "vms_websockets_open", channel="vms") == value(
        before, "vms_websockets_open", channel="vms"
    )
    for name in ("vms_events_published_total", "vms_events_delivered_total"):
        assert value(after, name, channel="vms") - value(during, name, channel="vms") == 1
    assert value(after, "vms_change_log_lag_seconds_count") > value(
        during, "vms_change_log_lag_seconds_count"
    )
    assert value(after, "vms_change_log_last_seq") >= 2
    assert ("vms_forbidden_total", frozenset()) in after
    # vms_db_pool_connections_in_use: test_the_pool_gauge_counts_connections_held_by_requests below;
    # vms_events_dropped_total, vms_listeners_cut_off_total: tests/domain/realtime/test_backpressure.py.


async def test_login_throttles_are_counted_by_limit(tmp_path: Path) -> None:
    """The per-account limit (2 failures here) and the per-address one (6 logins a minute here)."""
    async with server_with(
        tmp_path, metrics_token=SCRAPE_TOKEN, login_rate_limit=6, login_account_failures=2
    ) as server:
        http = server.http
        await sign_in_admin(http)  # the address's first login of the minute
        before = await scrape(http)
        wrong = {"email": ADMIN_EMAIL, "password": "wrong-password"}
        statuses = [(await http.post("/login", json=wrong)).status_code for _ in range(3)]
        assert statuses == [401, 401, 429]
        after_account = await scrape(http)
        nobody = {"email": "nobody@example.com", "password": "wrong-password"}
        for _ in range(20):  # bounded: a new minute may start the address's count over once
            if (limited := await http.post("/login", json=nobody)).status_code == 429:
                break
        assert limited.status_code == 429
        after_address = await scrape(http)

    def moved(earlier: Samples, later: Samples, limit: str) -> float:
        name = "vms_login_throttled_total"
        return value(later, name, limit=limit) - value(earlier, name, limit=limit)

    assert (moved(before, after_account, "account"), moved(before, after_account, "address")) == (1, 0)
    assert (
        moved(after_account, after_address, "account"),
        moved(after_account, after_address, "address"),
    ) == (
        0,
        1,
    )
    failures = value(after_account, "vms_login_failures_total") - value(before, "vms_login_failures_total")
    assert failures == 2  # the throttled attempt was not checked, so it is no failure


@pytest.mark.postgres
async def test_the_pool_gauge_counts_connections_held_by_requests(
    tmp_path: Path, postgres_database: str
) -> None:
    """Lists read the database on every request: with the VM table locked from outside, each of them holds
    a pooled connection while it waits, and a scrape meanwhile (which needs no connection) counts them."""
    await truncate_postgres(postgres_database)
    waiting = 3
    async with server_with(tmp_path, database=postgres_database, metrics_token=SCRAPE_TOKEN) as server:
        http = server.http
        admin = await sign_in_admin(http)
        before = await pool_in_use(http)
        locker = await asyncpg.connect(postgres_database.replace("postgresql+asyncpg://", "postgresql://", 1))
        try:
            lock = locker.transaction()
            await lock.start()
            await locker.execute("LOCK TABLE virtual_machine IN ACCESS EXCLUSIVE MODE")
            lists = [asyncio.create_task(http.get("/vms", headers=admin.headers)) for _ in range(waiting)]
            # Well within the requests' database deadline (5 s), after which they would give up.
            await pool_in_use(http, until=lambda held: held >= before + waiting)
            await lock.commit()
        finally:
            await locker.close()
        assert [(await task).status_code for task in lists] == [200] * waiting
        await pool_in_use(http, until=lambda held: held <= before)  # each gives its connection back


async def pool_in_use(http: Any, until: Callable[[float], bool] = lambda _: True) -> float:
    """``vms_db_pool_connections_in_use`` as scraped, once ``until`` accepts it (within 3 s)."""
    deadline = time.monotonic() + 3
    while True:
        held = value(await scrape(http), "vms_db_pool_connections_in_use")
        if until(held):
            return held
        assert time.monotonic() < deadline, f"the pool gauge stayed at {held}"
        await asyncio.sleep(0.05)


async def test_the_grafana_dashboard_uses_only_metrics_that_exist(tmp_path: Path) -> None:
    dashboard = json.loads((PROJECT_ROOT / "docs" / "grafana-dashboard.json").read_text())
    expressions = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    used = {
        re.sub(r"_(bucket|count|sum)$", "", name)
        for expr in expressions
        for name in re.findall(r"vms_\w+", expr)
    }
    async with server_with(tmp_path, metrics_token=SCRAPE_TOKEN) as server:
        await sign_in_admin(server.http)
        exposed = {re.sub(r"_(bucket|count|sum|created)$", "", name) for name, _ in await scrape(server.http)}
    # The plugin makes its error counter on the first 5xx, which this test does not cause.
    assert used - exposed <= {"vms_requests_error_total"}, used - exposed
    assert len(used) >= 12


async def test_prometheus_multiprocess_mode_gets_a_warning_at_start(tmp_path: Path) -> None:
    """What the README says of ``PROMETHEUS_MULTIPROC_DIR``: the service warns at start, and rightly, since
    in that mode a gauge read at scrape time reads 0 (the change log's last seq, 1 after the start-up
    administrador was created)."""
    directory = tmp_path / "prometheus"
    directory.mkdir()
    env = sqlite_server_env(
        tmp_path / "vms.sqlite3", VMS_METRICS_TOKEN=SCRAPE_TOKEN, PROMETHEUS_MULTIPROC_DIR=str(directory)
    )
    async with server_process(env, tmp_path / "server.log") as server:
        async with httpx.AsyncClient(base_url=server.url) as http:
            scraped = await scrape(http)
        log = server.output()
    assert "PROMETHEUS_MULTIPROC_DIR is set: VMS does not support prometheus_client's multiprocess" in log
    assert value(scraped, "vms_change_log_last_seq") == 0
    async with server_with(tmp_path, metrics_token=SCRAPE_TOKEN) as server:  # the registry, as served
        assert value(await scrape(server.http), "vms_change_log_last_seq") == 1


async def test_a_refused_token_is_counted_as_the_401_it_got(tmp_path: Path) -> None:
    async with server_with(tmp_path, metrics_token=SCRAPE_TOKEN) as server:
        before = await scrape(server.http)
        assert (await server.http.get("/vms", headers=bearer("not.a.token"))).status_code == 401
        after = await scrape(server.http)
    route = {"path": "/vms", "method": "GET"}
    for name, status, moved in (
        ("vms_requests_total", "401", 1),
        ("vms_requests_total", "500", 0),
        ("vms_requests_error_total", "500", 0),
    ):
        assert (
            value(after, name, **route, status_code=status) - value(before, name, **route, status_code=status)
            == moved
        ), (name, status)
