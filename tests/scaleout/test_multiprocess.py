"""Two server processes sharing one PostgreSQL database and one Redis behave as one service."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect

from tests.helpers import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    REDIS_URL,
    bearer,
    decode,
    free_port,
    login,
    require,
    scratch_postgres_database,
)

pytestmark = [pytest.mark.postgres, pytest.mark.redis]
PROJECT_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def shared_database() -> Iterator[str]:
    require("postgres")
    require("redis")
    with scratch_postgres_database("vms_mp") as url:
        yield url


@pytest.fixture
async def two_servers(shared_database: str, tmp_path: Path) -> AsyncIterator[tuple[str, str]]:
    env = {
        **os.environ,
        "VMS_DATABASE_URL": shared_database,
        "VMS_REDIS_URL": REDIS_URL,
        "VMS_REDIS_NAMESPACE": f"vms-mp-{uuid.uuid4().hex[:8]}",
        "VMS_JWT_SECRET": uuid.uuid4().hex + uuid.uuid4().hex,
        "VMS_ADMIN_EMAIL": ADMIN_EMAIL,
        "VMS_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "VMS_BCRYPT_ROUNDS": "4",
        "VMS_LOGIN_RATE_LIMIT": "1000",
    }
    ports = [free_port(), free_port()]
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "--factory",
                "app:create_app",
                "--port",
                str(port),
                "--log-level",
                "warning",
            ],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=(tmp_path / f"server-{port}.log").open("w"),
            stderr=subprocess.STDOUT,
        )
        for port in ports
    ]
    urls = [f"http://127.0.0.1:{port}" for port in ports]
    try:
        async with httpx.AsyncClient(timeout=2) as http:
            for url, process in zip(urls, processes, strict=True):
                for _ in range(300):
                    assert process.poll() is None, (
                        tmp_path / f"server-{url.rsplit(':', 1)[1]}.log"
                    ).read_text()
                    try:
                        if (await http.get(f"{url}/health")).status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    await asyncio.sleep(0.1)
                else:
                    pytest.fail(f"{url} did not start")
        yield urls[0], urls[1]
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()


async def test_events_written_through_b_reach_a_listener_in_order(two_servers: tuple[str, str]) -> None:
    url_a, url_b = two_servers
    async with httpx.AsyncClient(timeout=10) as http:
        token = await login(http, ADMIN_EMAIL, ADMIN_PASSWORD, base_url=url_b)
        headers = bearer(token)
        ws_a = url_a.replace("http://", "ws://") + f"/ws/vms?token={token}"
        async with connect(ws_a) as listener:
            await asyncio.sleep(0.2)  # let the subscription reach Redis before publishing
            created = []
            for index in range(20):
                body = {"name": f"vm-{index}", "cores": 1, "ram": 512, "disk": 10, "os": "Alpine"}
                response = await http.post(f"{url_b}/vms", json=body, headers=headers)
                assert response.status_code == 201, response.text
                created.append(response.json())
            received: list[dict[str, Any]] = []
            while len(received) < len(created):
                received.append(decode(await asyncio.wait_for(listener.recv(), timeout=10)))
    assert [event["event"] for event in received] == ["vm_created"] * len(created)
    assert [event["vm"] for event in received] == created
    seqs = [event["seq"] for event in received]
    assert seqs == sorted(seqs)
    assert len({event["origin"] for event in received}) == 1


async def test_user_deleted_through_a_is_refused_by_b_at_once(two_servers: tuple[str, str]) -> None:
    url_a, url_b = two_servers
    async with httpx.AsyncClient(timeout=10) as http:
        admin = bearer(await login(http, ADMIN_EMAIL, ADMIN_PASSWORD, base_url=url_a))
        body = {"name": "Temp", "email": "temp@example.com", "password": "temp-password-1"}
        created = await http.post(f"{url_a}/users", json=body, headers=admin)
        assert created.status_code == 201, created.text
        user_token = await login(http, body["email"], body["password"], base_url=url_b)
        user = bearer(user_token)
        assert (await http.get(f"{url_b}/users/me", headers=user)).status_code == 200
        assert (await http.delete(f"{url_a}/users/{created.json()['id']}", headers=admin)).status_code == 204
        refused = await http.get(f"{url_b}/users/me", headers=user)
        assert refused.status_code == 401


async def test_concurrent_signups_across_processes_create_one_account(two_servers: tuple[str, str]) -> None:
    url_a, url_b = two_servers
    body = {"name": "Racer", "email": "Racer@Example.com", "password": "racer-password-1"}
    async with httpx.AsyncClient(timeout=20) as http:
        responses = await asyncio.gather(
            *(
                http.post(
                    f"{url}/users",
                    json={**body, "email": body["email"].swapcase() if i % 2 else body["email"]},
                )
                for i, url in enumerate([url_a, url_b] * 6)
            )
        )
    statuses = sorted(response.status_code for response in responses)
    assert statuses.count(201) == 1, statuses
    assert statuses.count(409) == len(responses) - 1, statuses


async def test_vm_changed_through_a_is_read_fresh_through_b(two_servers: tuple[str, str]) -> None:
    """B has read the VM before; A's change and deletion must still show through B at once."""
    url_a, url_b = two_servers
    async with httpx.AsyncClient(timeout=10) as http:
        admin = bearer(await login(http, ADMIN_EMAIL, ADMIN_PASSWORD, base_url=url_a))
        body = {"name": "shared", "cores": 1, "ram": 512, "disk": 10, "os": "Alpine"}
        created = await http.post(f"{url_a}/vms", json=body, headers=admin)
        assert created.status_code == 201, created.text
        path = f"/vms/{created.json()['id']}"
        before = await http.get(url_b + path, headers=admin)
        assert before.json()["name"] == "shared"
        changed = await http.patch(url_a + path, json={"name": "renamed"}, headers=admin)
        assert changed.status_code == 200, changed.text
        after = await http.get(url_b + path, headers=admin)
        assert after.json()["name"] == "renamed"
        assert after.headers["ETag"] == changed.headers["ETag"] != before.headers["ETag"]
        assert (await http.delete(url_a + path, headers=admin)).status_code == 204
        assert (await http.get(url_b + path, headers=admin)).status_code == 404
