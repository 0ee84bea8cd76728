"""PostgreSQL faults under one VMS process: the server stopped (``pg_ctl stop -m fast``, then started), and
frozen (every process of the cluster SIGSTOPped, then SIGCONTed), the latter also under 30 clients, more
than the pool's connections (each request's waits for a connection, the writes ahead and its statement
share one deadline); and its storage: the disk under the database full (a tablespace on a small tmpfs,
filled, then freed; needs root), the database read-only (``default_transaction_read_only`` for the
database and the server, then reset).

Each scenario starts its own cluster (:mod:`bench.postgres_cluster`) and a VMS process on it with
``VMS_DB_TIMEOUT_SECONDS=2``, keeps two clients reading and writing through the fault, and reports: detect
(fault start to the first 503), heal (fault end to the first success; for the storage faults, the first
write that succeeds: reads go on throughout), how every request made from the fault start on ended, and
how many acknowledged writes are missing afterwards.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import httpx

from bench.faults import FaultResult
from bench.http import serve
from bench.postgres_cluster import PostgresCluster, postgres_binaries
from tests.helpers.mounts import fill, small_tmpfs

TIMEOUT_SECONDS = 2.0
FAULT_SECONDS = 6.0
AFTER_SECONDS = 3.0
CLIENTS = 2
LOADED_CLIENTS = 30
EMAIL = "fault-admin@example.com"
PASSWORD = "fault-admin-password"
VM = {"cores": 2, "ram": 2048, "disk": 40, "os": "Debian 12", "status": "running"}


class _Run:
    """What the clients saw, from the fault's start on."""

    def __init__(self) -> None:
        self.fault_started: float | None = None
        self.fault_ended: float | None = None
        self.first_503: float | None = None
        self.first_success_after: float | None = None
        self.outcomes: Counter[str] = Counter()
        self.slowest = 0.0
        self.acknowledged: list[str] = []
        self.done = False
        # What counts as served again after the fault: any success, or for a storage fault a write.
        self.healed_by = {"200", "201"}
        self.health_during: dict[str, object] = {}


async def _client(http: httpx.AsyncClient, headers: dict[str, str], run: _Run, index: int) -> None:
    count = 0
    while not run.done:
        count += 1
        write = count % 2 == 0
        name = f"c{index}-{count}-{uuid.uuid4().hex[:6]}"
        started = time.monotonic()
        try:
            if write:
                response = await http.post("/vms", json={**VM, "name": name}, headers=headers)
            else:
                response = await http.get("/vms", params={"limit": 10}, headers=headers)
            outcome = str(response.status_code)
        except httpx.TimeoutException:
            response, outcome = None, "timeout"
        except httpx.TransportError:
            response, outcome = None, "error"
        answered = time.monotonic()
        if response is not None and response.status_code == 201:
            run.acknowledged.append(name)
        if run.fault_started is not None:
            run.outcomes[outcome] += 1
            run.slowest = max(run.slowest, answered - started)
            if outcome == "503" and run.first_503 is None:
                run.first_503 = answered
            if (
                run.fault_ended is not None
                and started >= run.fault_ended
                and outcome in run.healed_by
                and run.first_success_after is None
            ):
                run.first_success_after = answered
        await asyncio.sleep(0.05)


async def _drive(
    url: str,
    fault: Callable[[], None],
    heal: Callable[[], None],
    clients_count: int,
    *,
    storage: bool = False,
) -> FaultResult:
    run = _Run()
    if storage:
        run.healed_by = {"201"}
    limits = httpx.Limits(max_connections=clients_count + 4)
    async with httpx.AsyncClient(base_url=url, timeout=TIMEOUT_SECONDS + 5, limits=limits) as http:
        response = await http.post("/login", json={"email": EMAIL, "password": PASSWORD})
        response.raise_for_status()
        headers = {"Authorization": f"Bearer {response.json()['access_token']}"}
        clients = [asyncio.create_task(_client(http, headers, run, index)) for index in range(clients_count)]
        try:
            await asyncio.sleep(1.0)
            await asyncio.to_thread(fault)
            run.fault_started = time.monotonic()
            await asyncio.sleep(FAULT_SECONDS)
            run.health_during = (await http.get("/health")).json()
            await asyncio.to_thread(heal)
            run.fault_ended = time.monotonic()
            await asyncio.sleep(AFTER_SECONDS)
        finally:
            run.done = True
            await asyncio.gather(*clients)
        listed = await http.get("/vms", params={"limit": 1000}, headers=headers)
        listed.raise_for_status()
        kept = {item["name"] for item in listed.json()}
    assert run.fault_started is not None
    assert run.fault_ended is not None
    health = f", health at the fault's end: {run.health_during.get('status')}" if storage else ""
    if storage:
        health += f", writable {run.health_during.get('database_writable')}"
    return FaultResult(
        detect_seconds=None if run.first_503 is None else run.first_503 - run.fault_started,
        heal_seconds=None if run.first_success_after is None else run.first_success_after - run.fault_ended,
        outcomes=run.outcomes,
        lost=len(set(run.acknowledged) - kept),
        note=f"VMS_DB_TIMEOUT_SECONDS={TIMEOUT_SECONDS:g}, {clients_count} clients, slowest answer "
        f"{run.slowest:.2f} s{health}",
    )


def _scenario(workdir: Path, kind: str, clients_count: int = CLIENTS) -> FaultResult:
    binaries = postgres_binaries()
    if binaries is None:
        raise RuntimeError("the PostgreSQL server binaries (initdb, pg_ctl) are not installed")
    with ExitStack() as stack:
        cluster = PostgresCluster(binaries)
        stack.callback(cluster.close)
        cluster.start()
        url = cluster.url
        fault, heal = (cluster.stop, cluster.start) if kind == "down" else (cluster.freeze, cluster.thaw)
        if kind == "full":
            disk = stack.enter_context(small_tmpfs(24))
            url = cluster.database_on(disk, "vms")
            filled: list[Path] = []
            fault, heal = (lambda: filled.append(fill(disk))), (lambda: filled.pop().unlink())
        elif kind == "read_only":
            cluster.sql("CREATE DATABASE vms")
            url = cluster.url_of("vms")
            fault, heal = (lambda: _read_only(cluster, on=True)), (lambda: _read_only(cluster, on=False))
        env = {
            "VMS_DATABASE_URL": url,
            "VMS_DB_TIMEOUT_SECONDS": str(TIMEOUT_SECONDS),
            "VMS_JWT_SECRET": uuid.uuid4().hex + uuid.uuid4().hex,
            "VMS_ADMIN_EMAIL": EMAIL,
            "VMS_ADMIN_PASSWORD": PASSWORD,
            "VMS_BCRYPT_ROUNDS": "4",
            "VMS_LOGIN_RATE_LIMIT": "100000",
        }
        server = stack.enter_context(serve("app:create_app", env, workdir))
        storage = kind in ("full", "read_only")
        result = asyncio.run(_drive(server.url, fault, heal, clients_count, storage=storage))
    return result


def _read_only(cluster: PostgresCluster, *, on: bool) -> None:
    """``default_transaction_read_only`` for the database (new connections) and the server (open ones)."""
    if on:
        cluster.sql(
            "ALTER DATABASE vms SET default_transaction_read_only = on",
            "ALTER SYSTEM SET default_transaction_read_only = on",
            "SELECT pg_reload_conf()",
        )
    else:
        cluster.sql(
            "SET default_transaction_read_only = off",
            "ALTER SYSTEM RESET default_transaction_read_only",
            "SELECT pg_reload_conf()",
            "ALTER DATABASE vms RESET default_transaction_read_only",
        )


def postgres_down(workdir: Path) -> FaultResult:
    return _scenario(workdir, "down")


def postgres_frozen(workdir: Path) -> FaultResult:
    return _scenario(workdir, "frozen")


def postgres_frozen_loaded(workdir: Path) -> FaultResult:
    return _scenario(workdir, "frozen", LOADED_CLIENTS)


def postgres_disk_full(workdir: Path) -> FaultResult:
    return _scenario(workdir, "full")


def postgres_read_only(workdir: Path) -> FaultResult:
    return _scenario(workdir, "read_only")


SCENARIOS: dict[str, Callable[[Path], FaultResult]] = {
    "postgres-down": postgres_down,
    "postgres-frozen": postgres_frozen,
    "postgres-frozen-loaded": postgres_frozen_loaded,
    "postgres-disk-full": postgres_disk_full,
    "postgres-read-only": postgres_read_only,
}
