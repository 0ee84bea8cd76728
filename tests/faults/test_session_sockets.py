"""The servers' check of their open sockets' sessions, through faults of Redis and of the database.

- A session ended through one worker while Redis is away still closes its sockets on another worker.
  Sessions are not in the change log and their revocations travel only over Redis, so without the
  servers' own check in the database the socket stayed open until Redis came back. Two server processes
  share a PostgreSQL database of their own and the test's own ``redis-server``, killed by its PID.
- While the database is away the check fails every second: quietly (the outage's two log lines, no
  traceback), and without closing any socket; so does the sessions' pruning. The test's own PostgreSQL
  cluster is stopped and started.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect

from tests.helpers import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    VM_BODY,
    PostgresCluster,
    PrivateRedis,
    bearer,
    login,
    private_postgres_server,
    receive_event,
    require,
    scratch_postgres_database,
    server_process,
    start_server_process,
    wait_closed_with,
    wait_healthy,
)

CLOSE_SECONDS = 5.0
"""A socket of a session ended elsewhere is closed within this: the servers' check runs every second."""
HEAL_SECONDS = 10.0
"""How long after the database is back a write must succeed again."""


@pytest.fixture
def database() -> Iterator[str]:
    require("postgres")
    with scratch_postgres_database("vms_session_sockets") as url:
        yield url


def listen(url: str, headers: dict[str, str]) -> Any:
    return connect(url, additional_headers=headers, open_timeout=10, close_timeout=2)


@pytest.mark.faults
@pytest.mark.postgres
async def test_a_logout_through_another_worker_while_redis_is_down_closes_the_socket(
    database: str, private_redis: PrivateRedis, tmp_path: Path
) -> None:
    env = {
        "VMS_DATABASE_URL": database,
        "VMS_JWT_SECRET": uuid.uuid4().hex + uuid.uuid4().hex,
        "VMS_ADMIN_EMAIL": ADMIN_EMAIL,
        "VMS_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "VMS_BCRYPT_ROUNDS": "4",
        "VMS_LOGIN_RATE_LIMIT": "1000",
        "VMS_REDIS_URL": private_redis.url,
        "VMS_REDIS_NAMESPACE": f"vms-faults-{uuid.uuid4().hex[:8]}",
    }
    a, b = (start_server_process(env, tmp_path / f"{name}.log") for name in ("a", "b"))
    try:
        await asyncio.gather(wait_healthy(a), wait_healthy(b))
        async with httpx.AsyncClient(timeout=10) as http:
            doomed_session = bearer(await login(http, ADMIN_EMAIL, ADMIN_PASSWORD, base_url=a.url))
            kept_session = bearer(await login(http, ADMIN_EMAIL, ADMIN_PASSWORD, base_url=a.url))
            url = f"{a.ws_url}/ws/vms"
            async with (
                listen(url, doomed_session) as doomed,
                listen(url, kept_session) as kept,
            ):
                private_redis.kill()
                response = await http.post(f"{b.url}/logout", headers=doomed_session)
                assert response.status_code == 204, response.text
                await wait_closed_with(doomed, [1008], seconds=CLOSE_SECONDS)
                # The other session's socket stays open (nothing arrives, and it is not closed).
                with pytest.raises(TimeoutError):
                    await asyncio.wait_for(kept.recv(), 1.5)
            private_redis.restart()  # the processes stop promptly with their Redis back
    finally:
        a.stop()
        b.stop()
    for server in (a, b):
        assert "Traceback" not in server.output(), server.output()


@pytest.fixture
def cluster() -> Iterator[PostgresCluster]:
    with private_postgres_server() as started:
        yield started


@pytest.mark.faults
async def test_the_check_and_the_pruning_meet_a_database_outage_quietly_and_close_no_socket(
    cluster: PostgresCluster, tmp_path: Path
) -> None:
    env = {
        "VMS_DATABASE_URL": cluster.url,
        "VMS_DB_TIMEOUT_SECONDS": "2",
        "VMS_JWT_SECRET": uuid.uuid4().hex + uuid.uuid4().hex,
        "VMS_ADMIN_EMAIL": ADMIN_EMAIL,
        "VMS_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "VMS_BCRYPT_ROUNDS": "4",
        "VMS_SESSION_PRUNE_SECONDS": "1",  # the sessions' pruning meets the outage quietly too
    }
    async with server_process(env, tmp_path / "vms.log") as server, httpx.AsyncClient(timeout=10) as http:
        headers = bearer(await login(http, ADMIN_EMAIL, ADMIN_PASSWORD, base_url=server.url))
        async with listen(f"{server.ws_url}/ws/vms", headers) as socket:
            offset = server.log.stat().st_size
            cluster.stop()
            await asyncio.sleep(3.5)  # about three checks meet the outage
            cluster.start()
            async with asyncio.timeout(HEAL_SECONDS):
                while (
                    response := await http.post(f"{server.url}/vms", json=VM_BODY, headers=headers)
                ).status_code != 201:
                    assert response.status_code == 503, response.text
                    await asyncio.sleep(0.2)
            assert (await receive_event(socket))["vm"] == response.json()  # still open
    text = server.log.read_bytes()[offset:].decode(errors="replace")
    assert "Traceback" not in text, text[-3000:]
    assert "could not check" not in text, text[-3000:]
    assert "could not prune" not in text, text[-3000:]
    lost = [
        line for line in text.splitlines() if "database unreachable" in line and '"state":"started"' in line
    ]
    assert len(lost) == 1, text[-3000:]
