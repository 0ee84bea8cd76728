"""PostgreSQL stopped or frozen under a running VMS: 503 within the timeout, one log line each way, recovery.

Each test starts its own PostgreSQL cluster (tests/helpers/postgres_server.py) and a VMS uvicorn process on
it with ``VMS_DB_TIMEOUT_SECONDS=2``; both are stopped by their PIDs afterwards. The shared PostgreSQL and
Redis servers are never touched. Every wait is bounded, so a failing scenario fails within seconds.

The stopped-server test runs one process without Redis (the user and session caches on); the frozen-server
test gives VMS a private Redis, which turns the caches off, so every request's authentication reads the
database as it does with several workers.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.helpers import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    VM_BODY,
    PostgresCluster,
    PrivateRedis,
    ServerProcess,
    bearer,
    private_postgres_server,
    server_process,
)

pytestmark = pytest.mark.faults

TIMEOUT = 2.0
"""VMS_DB_TIMEOUT_SECONDS for these tests."""
BOUND = TIMEOUT + 1.0
"""How long any request may take to be answered during a fault."""
HEAL_SECONDS = 10.0
"""How long after the fault ends every request must succeed again."""
STARTED = '"state":"started"'
ENDED = '"state":"ended"'


@pytest.fixture
def cluster() -> Iterator[PostgresCluster]:
    with private_postgres_server() as started:
        yield started


def vms_env(cluster: PostgresCluster, redis_url: str | None = None) -> dict[str, str]:
    env = {
        "VMS_DATABASE_URL": cluster.url,
        "VMS_DB_TIMEOUT_SECONDS": str(TIMEOUT),
        "VMS_JWT_SECRET": uuid.uuid4().hex + uuid.uuid4().hex,
        "VMS_ADMIN_EMAIL": ADMIN_EMAIL,
        "VMS_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "VMS_BCRYPT_ROUNDS": "4",
        "VMS_LOGIN_RATE_LIMIT": "100000",
    }
    if redis_url is not None:
        env["VMS_REDIS_URL"] = redis_url
        env["VMS_REDIS_NAMESPACE"] = f"vms-fault-{uuid.uuid4().hex[:8]}"
    return env


@asynccontextmanager
async def vms_on(env: dict[str, str], log: Path) -> AsyncIterator[tuple[ServerProcess, httpx.AsyncClient]]:
    async with (
        server_process(env, log) as server,
        httpx.AsyncClient(base_url=server.url, timeout=BOUND + 2) as http,
    ):
        yield server, http


class Client:
    """The requests a user makes: sign in, list, create; each timed."""

    def __init__(self, http: httpx.AsyncClient, headers: dict[str, str]) -> None:
        self.http = http
        self.headers = headers

    def login(self) -> Awaitable[httpx.Response]:
        return self.http.post("/login", json={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD})

    def list_vms(self) -> Awaitable[httpx.Response]:
        return self.http.get("/vms", headers=self.headers)

    def create_vm(self) -> Awaitable[httpx.Response]:
        body = {**VM_BODY, "name": f"vm-{uuid.uuid4().hex[:8]}"}
        return self.http.post("/vms", json=body, headers=self.headers)

    def health(self) -> Awaitable[httpx.Response]:
        return self.http.get("/health")

    def calls(self) -> dict[str, Callable[[], Awaitable[httpx.Response]]]:
        return {"login": self.login, "list": self.list_vms, "create": self.create_vm, "health": self.health}


async def signed_in(http: httpx.AsyncClient) -> Client:
    response = await http.post("/login", json={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD})
    assert response.status_code == 200, response.text
    return Client(http, bearer(response.json()["access_token"]))


async def timed(call: Callable[[], Awaitable[httpx.Response]]) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = await call()
    return response, time.monotonic() - started


async def assert_all_unavailable(client: Client) -> None:
    """Every request answers 503 within the bound: JSON detail and Retry-After, /health its own body."""
    for name, call in client.calls().items():
        response, seconds = await timed(call)
        assert response.status_code == 503, f"{name}: {response.status_code} {response.text}"
        assert seconds <= BOUND, f"{name} took {seconds:.2f} s"
        body = response.json()
        if name == "health":
            assert body["status"] == "unavailable", body
            assert body["database"] == "unavailable", body
        else:
            assert response.headers["Retry-After"] == "5", name
            assert body["status_code"] == 503, body
            assert "database" in body["detail"].lower(), body


async def assert_heals(client: Client) -> tuple[float, list[str]]:
    """Rounds of every request until one round all succeeds; never a 500 meanwhile. Returns how long it
    took and the VMs created on the way (each acknowledged with 201)."""
    started = time.monotonic()
    created: list[str] = []
    while True:
        statuses: dict[str, int] = {}
        for name, call in client.calls().items():
            response, seconds = await timed(call)
            statuses[name] = response.status_code
            assert response.status_code in (200, 201, 503), f"{name}: {response.status_code} {response.text}"
            assert seconds <= BOUND, f"{name} took {seconds:.2f} s"
            if name == "create" and response.status_code == 201:
                created.append(response.json()["name"])
        if all(status in (200, 201) for status in statuses.values()):
            return time.monotonic() - started, created
        assert time.monotonic() - started < HEAL_SECONDS, f"not healed after {HEAL_SECONDS} s: {statuses}"
        await asyncio.sleep(0.1)


async def assert_ws_closed_try_again_later(server: ServerProcess, client: Client) -> None:
    """A WebSocket connect (with a ``since`` replay, which reads the log) is closed within the bound with
    1013 "try again later", never left hanging in the handshake."""
    started = time.monotonic()
    with pytest.raises(ConnectionClosed) as closed:  # a TimeoutError here: it hung
        async with (
            asyncio.timeout(BOUND),
            connect(f"{server.ws_url}/ws/vms?since=0", additional_headers=client.headers) as socket,
        ):
            await socket.recv()
    assert time.monotonic() - started <= BOUND + 0.5
    received = closed.value.rcvd
    assert received is not None, "closed without a close frame"
    assert received.code == 1013, received
    assert "database" in received.reason.lower(), received


def log_since(server: ServerProcess, offset: int) -> str:
    return server.log.read_bytes()[offset:].decode(errors="replace")


def assert_one_line_each_way(text: str) -> None:
    """The log during the fault: no traceback, no "unhandled error"; one line when the database became
    unreachable, one when it came back."""
    assert "Traceback" not in text, text[-3000:]
    assert "unhandled error" not in text, text[-3000:]
    started = [line for line in text.splitlines() if STARTED in line and "database unreachable" in line]
    ended = [line for line in text.splitlines() if ENDED in line and "database unreachable" in line]
    assert len(started) == 1, text[-3000:]
    assert "database unreachable: " in started[0], started
    assert len(ended) == 1, text[-3000:]
    assert "database unreachable: back" in ended[0], ended


async def assert_kept(client: Client, vm: dict[str, Any], names: list[str]) -> None:
    response = await client.http.get(f"/vms/{vm['id']}", headers=client.headers)
    assert response.status_code == 200, response.text
    assert response.json()["name"] == vm["name"], response.text
    listed = await client.http.get("/vms", params={"limit": 1000}, headers=client.headers)
    assert listed.status_code == 200, listed.text
    missing = set(names) - {item["name"] for item in listed.json()}
    assert not missing, f"acknowledged writes missing: {missing}"


async def test_stopped_server_answers_503_at_once_and_heals_without_a_restart(
    cluster: PostgresCluster, tmp_path: Path
) -> None:
    """``pg_ctl stop``: login, reads, writes answer 503 (Retry-After, JSON detail) within the timeout,
    /health 503, a WebSocket is closed with 1013; after ``pg_ctl start`` every request succeeds again with
    no 500 (the pooled connections the stop killed are never used), the write made before is still there,
    and the log holds one line for the outage's start and one for its end, no traceback."""
    async with vms_on(vms_env(cluster), tmp_path / "vms.log") as (server, http):
        client = await signed_in(http)
        before = await client.create_vm()
        assert before.status_code == 201, before.text
        offset = server.log.stat().st_size

        cluster.stop()
        await assert_all_unavailable(client)
        await assert_all_unavailable(client)
        await assert_ws_closed_try_again_later(server, client)

        cluster.start()
        _, created = await assert_heals(client)
        await assert_kept(client, before.json(), created)
        await asyncio.sleep(1.0)  # a poll of the change feed or two, after the outage
        assert_one_line_each_way(log_since(server, offset))


async def test_frozen_server_answers_503_within_the_timeout_and_heals_after_sigcont(
    cluster: PostgresCluster, private_redis: PrivateRedis, tmp_path: Path
) -> None:
    """Every process of the cluster SIGSTOPped for about 6 s (open connections hang, new ones get no
    answer), with the caches off (Redis configured: every request reads its user and session): each request
    and /health answers 503 within the timeout + 1 s, not when the freeze ends, and a WebSocket is closed
    with 1013; after SIGCONT every request
    succeeds again with no 500; one log line each way, no traceback."""
    async with vms_on(vms_env(cluster, private_redis.url), tmp_path / "vms.log") as (server, http):
        client = await signed_in(http)
        before = await client.create_vm()
        assert before.status_code == 201, before.text
        offset = server.log.stat().st_size

        cluster.freeze()
        frozen_at = time.monotonic()
        try:
            await assert_all_unavailable(client)
            await assert_ws_closed_try_again_later(server, client)
            await asyncio.sleep(max(0.0, 6.0 - (time.monotonic() - frozen_at)))
        finally:
            cluster.thaw()

        _, created = await assert_heals(client)
        await assert_kept(client, before.json(), created)
        await asyncio.sleep(1.0)
        assert_one_line_each_way(log_since(server, offset))


async def test_frozen_server_under_concurrent_load_answers_every_request_within_the_timeout(
    cluster: PostgresCluster, tmp_path: Path
) -> None:
    """More concurrent clients (30) than the pool's connections (20), reading and writing through a 7 s
    freeze: every request ends within the timeout + 1.5 s, though it may wait for a pooled connection or
    for the commits ahead and then for its own statement (one deadline for all of them), none with a 500,
    none held until the freeze ends; one log line each way, no traceback."""
    bound = TIMEOUT + 1.5
    async with vms_on(vms_env(cluster), tmp_path / "vms.log") as (server, _):
        limits = httpx.Limits(max_connections=64)
        async with httpx.AsyncClient(base_url=server.url, timeout=bound + 2, limits=limits) as http:
            client = await signed_in(http)
            offset = server.log.stat().st_size
            answered: list[tuple[float, float, int]] = []  # (started, seconds, status)
            running = True

            async def user(index: int) -> None:
                call = client.create_vm if index % 2 else client.list_vms
                while running:
                    response, seconds = await timed(call)
                    answered.append((time.monotonic(), seconds, response.status_code))

            users = [asyncio.create_task(user(index)) for index in range(30)]
            try:
                await asyncio.sleep(1.0)
                cluster.freeze()
                frozen_at = time.monotonic()
                try:
                    await asyncio.sleep(7.0)  # longer than the bound: a request held by it fails
                finally:
                    cluster.thaw()
                await asyncio.sleep(2.0)
            finally:
                running = False
                await asyncio.gather(*users)
            await assert_heals(client)
        during = [entry for entry in answered if entry[0] >= frozen_at]
        assert any(status == 503 for _, _, status in during), during
        assert all(status in (200, 201, 503) for _, _, status in answered), Counter(s for *_, s in answered)
        slowest = max(seconds for _, seconds, _ in answered)
        assert slowest <= bound, f"slowest answer {slowest:.2f} s"
        await asyncio.sleep(1.0)
        assert_one_line_each_way(log_since(server, offset))


async def oldest_seq(client: Client) -> int:
    response = await client.http.get("/changes", params={"limit": 1}, headers=client.headers)
    assert response.status_code == 200, response.text
    entries: list[dict[str, Any]] = response.json()
    return int(entries[0]["seq"]) if entries else 0


async def test_retention_waits_out_an_outage_quietly_and_prunes_again_after_it(
    cluster: PostgresCluster, tmp_path: Path
) -> None:
    """The change log's pruning (every second here, keeping 5 entries) meets a stopped server on every
    run during a 4 s outage: no traceback and no warning per attempt, only the outage's two lines; once
    the server is back it prunes again by itself."""
    env = {**vms_env(cluster), "VMS_CHANGE_LOG_MAX_ENTRIES": "5", "VMS_CHANGE_LOG_PRUNE_SECONDS": "1"}
    async with vms_on(env, tmp_path / "vms.log") as (server, http):
        client = await signed_in(http)
        for _ in range(10):
            assert (await client.create_vm()).status_code == 201
        await eventually(lambda: oldest_seq(client), lambda seq: seq > 5)
        offset = server.log.stat().st_size

        cluster.stop()
        await asyncio.sleep(4.0)  # about four pruning runs meet the outage
        cluster.start()

        await assert_heals(client)
        before = await oldest_seq(client)
        for _ in range(10):
            assert (await client.create_vm()).status_code == 201
        await eventually(lambda: oldest_seq(client), lambda seq: seq > before + 5)
        text = log_since(server, offset)
        assert "could not prune" not in text, text[-3000:]
        assert_one_line_each_way(text)


async def eventually(
    read: Callable[[], Awaitable[int]], holds: Callable[[int], bool], seconds: float = HEAL_SECONDS
) -> None:
    started = time.monotonic()
    while not holds(value := await read()):
        assert time.monotonic() - started < seconds, f"still {value} after {seconds} s"
        await asyncio.sleep(0.2)
