"""PostgreSQL's storage fails under a running VMS: the disk under its database full, the database read-only.

Each test starts its own cluster (tests/helpers/postgres_server.py) and a VMS process on it, and checks the
failure contract: writes answer 503 with a detail that says why, reads go on, ``/health`` reports the
database as not writable for the whole fault (not only until its next check), the log has one line when the
fault starts and one when it ends, writes resume by themselves, and nothing acknowledged is lost.

- Disk full: the database lives in a tablespace on a small tmpfs the test mounts and fills (the WAL stays
  in the data directory, so PostgreSQL refuses the writes that need space instead of stopping). Writes that
  fit in pages already allocated still succeed there, so only a write that needs new space shows the fault.
- Read-only: ``default_transaction_read_only`` set for the database (new connections) and for the server
  (open ones, at reload); at the end it is reset for both, and a connection opened during the fault keeps
  the database's setting for its life, so VMS must drop those (no write meets one afterwards).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import ADMIN_EMAIL, ADMIN_PASSWORD, VM_BODY, bearer, login, private_postgres_server
from tests.helpers.mounts import fill, small_tmpfs
from tests.helpers.postgres_server import PostgresCluster
from tests.helpers.processes import server_process
from tests.helpers.storage_faults import assert_one_line_each_way, assert_storage_refusal, mounted

pytestmark = pytest.mark.faults

HEAL_SECONDS = 10.0
"""How long after the fault ends writes must succeed again."""
CHECKS = 4
"""How many times /health is asked during a fault (each must say not writable)."""


@pytest.fixture
def cluster() -> Iterator[PostgresCluster]:
    with private_postgres_server() as started:
        yield started


def vms_env(database_url: str) -> dict[str, str]:
    return {
        "VMS_DATABASE_URL": database_url,
        "VMS_DB_TIMEOUT_SECONDS": "2",
        "VMS_JWT_SECRET": uuid.uuid4().hex + uuid.uuid4().hex,
        "VMS_ADMIN_EMAIL": ADMIN_EMAIL,
        "VMS_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "VMS_BCRYPT_ROUNDS": "4",
        "VMS_LOGIN_RATE_LIMIT": "100000",
    }


class Writer:
    """Creates VMs (long names, so pages fill quickly), keeping what was acknowledged; never a 500."""

    def __init__(self, http: httpx.AsyncClient, headers: dict[str, str]) -> None:
        self.http, self.headers = http, headers
        self.acknowledged: list[int] = []

    async def write(self) -> httpx.Response:
        body = {**VM_BODY, "name": f"{uuid.uuid4().hex}{'x' * 68}", "os": "y" * 100}
        response = await self.http.post("/vms", json=body, headers=self.headers)
        assert response.status_code in (201, 503), response.text
        if response.status_code == 201:
            self.acknowledged.append(response.json()["id"])
        return response

    async def until(self, wanted: int, seconds: float) -> httpx.Response:
        statuses: Counter[int] = Counter()
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            response = await self.write()
            statuses[response.status_code] += 1
            if response.status_code == wanted:
                return response
            await asyncio.sleep(0.05)
        raise AssertionError(f"no {wanted} within {seconds} s: {dict(statuses)}")

    async def assert_kept(self) -> None:
        response = await self.http.get("/vms", params={"limit": 1000}, headers=self.headers)
        assert response.status_code == 200, response.text
        missing = set(self.acknowledged) - {vm["id"] for vm in response.json()}
        assert not missing, f"acknowledged writes missing: {missing}"


async def health(http: httpx.AsyncClient) -> dict[str, Any]:
    response = await http.get("/health")
    assert response.status_code == 200, response.text  # degraded, not down: reads go on
    body: dict[str, Any] = response.json()
    return body


async def assert_not_writable_throughout(writer: Writer, words: str) -> None:
    """For a while (health checks apart, writes and reads between them): every /health says degraded
    and not writable, every write answers 503 saying ``words``, reads answer."""
    for _ in range(CHECKS):
        state = await health(writer.http)
        assert state["status"] == "degraded", state
        assert state["database"] == "ok", state
        assert state["database_writable"] is False, state
        assert_storage_refusal(await writer.write(), words)
        await writer.assert_kept()
        await asyncio.sleep(0.3)


async def assert_writable_again(writer: Writer) -> None:
    """/health says ok and writable; rounds of concurrent writes all succeed (no connection left over
    from the fault refuses one)."""
    state = await health(writer.http)
    assert state["status"] == "ok", state
    assert state["database_writable"] is True, state
    for _ in range(3):
        responses = await asyncio.gather(*(writer.write() for _ in range(12)))
        statuses = Counter(response.status_code for response in responses)
        assert statuses == {201: 12}, [response.text for response in responses if response.status_code != 201]
        state = await health(writer.http)
        assert state["database_writable"] is True, state


async def signed_in(http: httpx.AsyncClient, url: str) -> Writer:
    return Writer(http, bearer(await login(http, ADMIN_EMAIL, ADMIN_PASSWORD, base_url=url)))


async def test_a_full_disk_under_postgresql_refuses_writes_until_space_returns(
    cluster: PostgresCluster, tmp_path: Path
) -> None:
    """v1 of the probe only asked PostgreSQL whether it was read-only, so the next /health said writable
    again while the disk was still full, and the log said lost, back, lost, back."""
    with mounted(small_tmpfs(24)) as disk:
        url = await asyncio.to_thread(cluster.database_on, disk, "vms")
        log = tmp_path / "server.log"
        async with (
            server_process(vms_env(url), log) as server,
            httpx.AsyncClient(base_url=server.url, timeout=10) as http,
        ):
            writer = await signed_in(http, server.url)
            await writer.until(201, 5)
            filler = await asyncio.to_thread(fill, disk)

            assert_storage_refusal(await writer.until(503, 30), "full")
            await assert_not_writable_throughout(writer, "full")

            filler.unlink()
            await writer.until(201, HEAL_SECONDS)
            await assert_writable_again(writer)
            await writer.assert_kept()
        assert_one_line_each_way(log)


async def concurrent_reads(writer: Writer, count: int) -> None:
    """``count`` reads at once, so the pool holds that many connections (opened now, if it had fewer)."""
    reads = await asyncio.gather(
        *(writer.http.get("/changes", params={"offset": n}, headers=writer.headers) for n in range(count))
    )
    assert {response.status_code for response in reads} == {200}, [response.text for response in reads]


def read_only(cluster: PostgresCluster) -> None:
    """The database read-only: for new connections (the database's setting) and open ones (the server's,
    at reload)."""
    cluster.sql(
        "ALTER DATABASE vms SET default_transaction_read_only = on",
        "ALTER SYSTEM SET default_transaction_read_only = on",
        "SELECT pg_reload_conf()",
    )


def writable(cluster: PostgresCluster) -> None:
    """Both settings reset; a connection opened meanwhile keeps the database's for its life."""
    cluster.sql(
        "SET default_transaction_read_only = off",
        "ALTER SYSTEM RESET default_transaction_read_only",
        "SELECT pg_reload_conf()",
        "ALTER DATABASE vms RESET default_transaction_read_only",
    )


async def assert_no_write_refused(writer: Writer) -> None:
    """Writes one after another, three times round the pool (one connection each): none is refused."""
    for _ in range(30):
        response = await writer.write()
        assert response.status_code == 201, response.text
    await assert_writable_again(writer)
    await writer.assert_kept()


@pytest.mark.parametrize("noticed_by", ["health", "writes"])
async def test_a_read_only_postgresql_database_refuses_writes_and_no_connection_outlives_the_fault(
    cluster: PostgresCluster, tmp_path: Path, noticed_by: str
) -> None:
    """v1 dropped read-only connections on SQLite only: on PostgreSQL the ones opened during the fault kept
    refusing writes after it ended, and each refusal logged the fault again.

    The pool hands out connections oldest first: ten opened before the fault, then a few opened during it
    (after the last refusal, which dropped only those opened before it). The end of the fault is noticed
    by /health's probe or by a write, each on an old connection; the ones from the fault come up after."""
    await asyncio.to_thread(cluster.sql, "CREATE DATABASE vms")
    log = tmp_path / "server.log"
    async with (
        server_process(vms_env(cluster.url_of("vms")), log) as server,
        httpx.AsyncClient(base_url=server.url, timeout=10) as http,
    ):
        writer = await signed_in(http, server.url)
        await writer.until(201, 5)
        await concurrent_reads(writer, 10)
        started = (await asyncio.to_thread(cluster.sql, "SELECT now()")).strip()
        await asyncio.to_thread(read_only, cluster)

        assert_storage_refusal(await writer.until(503, 10), "read-only")
        await assert_not_writable_throughout(writer, "read-only")
        assert_storage_refusal(await writer.write(), "read-only")
        await concurrent_reads(writer, 3)
        opened = await asyncio.to_thread(
            cluster.sql,
            "SELECT count(*) FROM pg_stat_activity WHERE datname = 'vms' "  # noqa: S608 (the server's now())
            f"AND backend_start > '{started}'",
        )
        assert int(opened) >= 3, opened  # connections opened during the fault, still open

        await asyncio.to_thread(writable, cluster)
        if noticed_by == "health":
            healed = time.monotonic() + HEAL_SECONDS
            while not (await health(http))["database_writable"]:
                assert time.monotonic() < healed, "still not writable"
                await asyncio.sleep(0.2)
        else:
            await writer.until(201, HEAL_SECONDS)
        await assert_no_write_refused(writer)
    assert_one_line_each_way(log)


async def test_vms_started_on_a_read_only_postgresql_database_writes_once_it_is_writable(
    cluster: PostgresCluster, tmp_path: Path
) -> None:
    """Every pooled connection was opened read-only, and nothing asks /health after the fault: the writes
    alone get VMS writing again, at the second write at the latest (a write refused by a connection from
    the fault drops every pooled connection, not only its own)."""
    await asyncio.to_thread(cluster.sql, "CREATE DATABASE vms")
    env = vms_env(cluster.url_of("vms"))
    async with (
        server_process(env, tmp_path / "first.log") as server,
        httpx.AsyncClient(base_url=server.url, timeout=10) as http,
    ):
        first = await signed_in(http, server.url)
        await first.until(201, 5)
    await asyncio.to_thread(read_only, cluster)
    log = tmp_path / "server.log"
    async with server_process(env, log) as server, httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        writer = Writer(http, first.headers)  # signing in is a write: the session made before serves
        writer.acknowledged = list(first.acknowledged)
        await assert_not_writable_throughout(writer, "read-only")
        await concurrent_reads(writer, 10)

        await asyncio.to_thread(writable, cluster)
        first_write = await writer.write()
        if first_write.status_code == 503:  # it met a connection from the fault, and dropped them all
            assert_storage_refusal(first_write, "read-only")
            second_write = await writer.write()
            assert second_write.status_code == 201, second_write.text
        await assert_no_write_refused(writer)
    assert_one_line_each_way(log)
