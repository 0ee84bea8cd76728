"""Redis stopped under real server processes: the service goes on without it and heals when it returns.

Each test starts its own ``redis-server`` (killed and started again on the same port, by its PID) and its
own server processes; the two-process tests share a PostgreSQL database of their own on the shared server,
which is never stopped. Every wait is bounded, so a failure fails fast instead of hanging.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from app.security.throttle import RETRY_SECONDS
from tests.helpers import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    VM_BODY,
    PrivateRedis,
    ServerProcess,
    bearer,
    decode,
    login,
    require,
    scratch_postgres_database,
    server_process,
    start_server_process,
    wait_healthy,
)

HEAL_SECONDS = 5.0
"""The failure contract: once Redis is back, every listener has every event it missed within this."""
HEALTH_SECONDS = 2.5
"""/health answers within this while Redis is away (the client's timeouts are one second)."""
LOST, BACK = "Redis: lost", "Redis: back"


def base_env(redis: PrivateRedis) -> dict[str, str]:
    return {
        "VMS_JWT_SECRET": uuid.uuid4().hex + uuid.uuid4().hex,
        "VMS_ADMIN_EMAIL": ADMIN_EMAIL,
        "VMS_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "VMS_BCRYPT_ROUNDS": "4",
        "VMS_LOGIN_RATE_LIMIT": "1000",
        "VMS_REDIS_URL": redis.url,
        "VMS_REDIS_NAMESPACE": f"vms-faults-{uuid.uuid4().hex[:8]}",
    }


@pytest.fixture
def shared_database() -> Iterator[str]:
    require("postgres")
    with scratch_postgres_database("vms_redis_faults") as url:
        yield url


@pytest.fixture
async def two_processes(
    shared_database: str, private_redis: PrivateRedis, tmp_path: Path
) -> AsyncIterator[tuple[ServerProcess, ServerProcess]]:
    """Two server processes on one PostgreSQL database and the test's own Redis."""
    env = {**base_env(private_redis), "VMS_DATABASE_URL": shared_database}
    # Started together (the migrations take an advisory lock): one process takes seconds to start here.
    a, b = (start_server_process(env, tmp_path / f"{name}.log") for name in ("a", "b"))
    try:
        await asyncio.gather(wait_healthy(a), wait_healthy(b))
        yield a, b
    finally:
        a.stop()
        b.stop()


# ---------------------------------------------------------------- helpers


async def health(http: httpx.AsyncClient, server: ServerProcess) -> tuple[int, dict[str, Any], float]:
    started = time.monotonic()
    response = await http.get(f"{server.url}/health")
    return response.status_code, response.json(), time.monotonic() - started


async def wait_health(http: httpx.AsyncClient, server: ServerProcess, status: str, seconds: float) -> None:
    async with asyncio.timeout(seconds):
        while True:
            if (await health(http, server))[1]["status"] == status:
                return
            await asyncio.sleep(0.1)


async def create(http: httpx.AsyncClient, server: ServerProcess, headers: dict[str, str], name: str) -> int:
    response = await http.post(f"{server.url}/vms", json={**VM_BODY, "name": name}, headers=headers)
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


def listen(server: ServerProcess, headers: dict[str, str]) -> Any:
    return connect(f"{server.ws_url}/ws/vms", additional_headers=headers, open_timeout=10, close_timeout=2)


async def receive(socket: ClientConnection, count: int) -> list[dict[str, Any]]:
    return [decode(await socket.recv()) for _ in range(count)]


async def closed_within(socket: ClientConnection, seconds: float) -> None:
    """The server closes ``socket`` within ``seconds`` (TimeoutError otherwise)."""
    async with asyncio.timeout(seconds):
        try:
            while True:
                await socket.recv()
        except ConnectionClosed:
            return


def names(events: list[dict[str, Any]]) -> list[str]:
    return [event["vm"]["name"] for event in events]


def assert_in_order(events: list[dict[str, Any]]) -> None:
    seqs = [event["seq"] for event in events]
    assert all(a < b for a, b in itertools.pairwise(seqs)), f"not in seq order: {seqs}"


def assert_one_outage_logged(server: ServerProcess) -> None:
    """One line when Redis was lost, one when it was back; no traceback for any request or retry."""
    text = server.log.read_text(errors="replace")
    lines = text.splitlines()
    assert len([line for line in lines if LOST in line]) == 1, text[-4000:]
    assert len([line for line in lines if BACK in line]) == 1, text[-4000:]
    assert "Traceback" not in text, text[-4000:]


# ---------------------------------------------------------------- a restart with no traffic


@pytest.mark.faults
@pytest.mark.postgres
async def test_after_a_one_second_redis_restart_the_bus_is_back_on_every_process(
    two_processes: tuple[ServerProcess, ServerProcess], private_redis: PrivateRedis
) -> None:
    a, b = two_processes
    async with httpx.AsyncClient(timeout=10) as http:
        headers = bearer(await login(http, ADMIN_EMAIL, ADMIN_PASSWORD, base_url=a.url))
        other_session = bearer(await login(http, ADMIN_EMAIL, ADMIN_PASSWORD, base_url=a.url))
        async with listen(a, headers) as existing, listen(a, other_session) as in_other_session:
            await asyncio.sleep(0.3)  # subscribed before Redis goes
            private_redis.kill()
            await asyncio.sleep(1.0)
            private_redis.restart()
            for server in (a, b):
                await wait_health(http, server, "ok", HEAL_SECONDS)

            written = [await create(http, b, headers, f"after-restart-{index}") for index in range(5)]
            async with asyncio.timeout(HEAL_SECONDS):
                events = await receive(existing, len(written))
            assert [event["vm"]["id"] for event in events] == written
            assert_in_order(events)

            async with listen(a, headers) as new_on_a, listen(b, headers) as new_on_b:
                await asyncio.sleep(0.3)
                live = await create(http, b, headers, "live")
                async with asyncio.timeout(HEAL_SECONDS):
                    got = [decode(await socket.recv()) for socket in (existing, new_on_a, new_on_b)]
                assert [event["vm"]["id"] for event in got] == [live] * 3

            # Only the bus carries an ended session to the other processes (sessions are not in the change
            # log): a logout through B closing a socket on A proves A's subscription is live again.
            assert (await http.post(f"{b.url}/logout", headers=other_session)).status_code == 204
            await closed_within(in_other_session, HEAL_SECONDS)
    for server in (a, b):
        assert_one_outage_logged(server)


# ---------------------------------------------------------------- requests while Redis is down


@pytest.mark.faults
@pytest.mark.postgres
async def test_while_redis_is_down_the_service_goes_on_and_listeners_catch_up_when_it_returns(
    two_processes: tuple[ServerProcess, ServerProcess], private_redis: PrivateRedis
) -> None:
    a, b = two_processes
    async with httpx.AsyncClient(timeout=10) as http:
        headers = bearer(await login(http, ADMIN_EMAIL, ADMIN_PASSWORD, base_url=a.url))
        other_session = bearer(await login(http, ADMIN_EMAIL, ADMIN_PASSWORD, base_url=a.url))
        async with (
            listen(a, headers) as on_a,
            listen(b, headers) as on_b,
            listen(a, other_session) as in_other_session,
        ):
            await asyncio.sleep(0.3)
            private_redis.kill()

            # B serves as usual: a login, a read, writes; /health says degraded, quickly.
            login_on_b = await http.post(
                f"{b.url}/login", json={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}
            )
            assert login_on_b.status_code == 200, login_on_b.text
            b_headers = bearer(login_on_b.json()["access_token"])
            listed = await http.get(f"{b.url}/vms", headers=b_headers)
            assert listed.status_code == 200, listed.text
            during = [await create(http, b, b_headers, f"during-{index}") for index in range(3)]
            status, body, took = await health(http, b)
            assert (status, body["status"], body["channels"]) == (200, "degraded", "unavailable"), body
            assert took < HEALTH_SECONDS, f"/health took {took:.2f} s while Redis was down"

            # B's own listener gets B's writes; A's gets them from its poll of the change log.
            async with asyncio.timeout(HEAL_SECONDS):
                seen_on_b = await receive(on_b, len(during))
                seen_on_a = await receive(on_a, len(during))
            assert [event["vm"]["id"] for event in seen_on_b] == during
            assert [event["vm"]["id"] for event in seen_on_a] == during

            # A logout through B while down: its revocation cannot reach A over the bus now.
            assert (await http.post(f"{b.url}/logout", headers=other_session)).status_code == 204
            # A write on A while down too, then Redis returns: the first requests after it are no 500.
            during.append(await create(http, a, headers, "during-on-a"))
            private_redis.restart()
            returned = time.monotonic()
            first = [
                await http.post(f"{b.url}/login", json={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}),
                await http.get(f"{a.url}/vms", headers=headers),
                await http.get(f"{b.url}/health"),
                await http.get(f"{a.url}/health"),
            ]
            assert [response.status_code for response in first] == [200, 200, 200, 200], [
                response.text for response in first
            ]
            after = [await create(http, (a, b)[index % 2], headers, f"after-{index}") for index in range(4)]

            async with asyncio.timeout(HEAL_SECONDS):
                rest_a = await receive(on_a, 1 + len(after))
                rest_b = await receive(on_b, 1 + len(after))
            # A asks the database which of its sockets' sessions ended while the bus was away.
            await closed_within(in_other_session, HEAL_SECONDS - (time.monotonic() - returned))
            healed = time.monotonic() - returned
            assert healed < HEAL_SECONDS
            events_a, events_b = seen_on_a + rest_a, seen_on_b + rest_b
            assert [event["vm"]["id"] for event in events_a] == [*during, *after]
            assert [event["seq"] for event in events_b] == [event["seq"] for event in events_a]
            assert_in_order(events_a)
            for server in (a, b):
                await wait_health(http, server, "ok", HEAL_SECONDS)
    for server in (a, b):
        assert_one_outage_logged(server)


# ---------------------------------------------------------------- the log of an outage


def redis_state_lines(server: ServerProcess) -> list[str]:
    """Every line saying Redis was lost or is back, whoever noticed (the bus, the login limits)."""
    text = server.log.read_text(errors="replace")
    assert "Traceback" not in text, text[-4000:]
    words = (LOST, BACK, "Redis unreachable", "Redis reachable", "falling back", "shared again")
    return [line for line in text.splitlines() if any(word in line for word in words)]


@pytest.mark.faults
async def test_an_outage_under_traffic_is_logged_once_when_lost_and_once_when_back(
    private_redis: PrivateRedis, tmp_path: Path
) -> None:
    """One process on SQLite: requests of every kind, logins among them, through an outage longer than the
    login limits' retry interval (they try Redis again meanwhile) and after it, no 500 among them; the
    process logs one "lost" line and one "back" line, the latter as soon as Redis is back, not at the next
    login (the bus and both login limits share one view of Redis)."""
    env = {**base_env(private_redis), "VMS_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'vms.sqlite3'}"}
    async with server_process(env, tmp_path / "server.log") as server, httpx.AsyncClient(timeout=10) as http:
        headers = bearer(await login(http, ADMIN_EMAIL, ADMIN_PASSWORD, base_url=server.url))
        credentials = {"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}
        wrong = {"email": ADMIN_EMAIL, "password": "not-the-password"}  # counted by the account limit
        statuses: list[int] = []
        created: list[str] = []

        async def traffic(seconds: float) -> None:
            ends = time.monotonic() + seconds
            while time.monotonic() < ends:
                name = f"t-{len(created)}"
                for response in (
                    await http.post(f"{server.url}/login", json=credentials),
                    await http.post(f"{server.url}/login", json=wrong),
                    await http.get(f"{server.url}/vms", headers=headers),
                    await http.post(f"{server.url}/vms", json={**VM_BODY, "name": name}, headers=headers),
                    await http.get(f"{server.url}/health"),
                ):
                    statuses.append(response.status_code)
                created.append(name)
                await asyncio.sleep(0.1)

        async with listen(server, headers) as socket:
            await asyncio.sleep(0.3)
            private_redis.kill()
            await traffic(RETRY_SECONDS + 1.5)
            private_redis.restart()
            await wait_health(http, server, "ok", HEAL_SECONDS)
            lines = redis_state_lines(server)
            assert len(lines) == 2, lines  # "back" already: no login since Redis returned
            assert LOST in lines[0], lines
            assert BACK in lines[1], lines
            await traffic(1.0)
            async with asyncio.timeout(HEAL_SECONDS):
                events = await receive(socket, len(created))
            assert names(events) == created
        assert set(statuses) <= {200, 201, 401}, statuses
    assert redis_state_lines(server) == lines
