"""The change log across real server processes: a ``kill -9`` loses nothing acknowledged, and two processes on
one PostgreSQL database and one Redis agree on one order of events.

Every process here is started by the test and stopped by its PID; the shared PostgreSQL and Redis servers
are never stopped (each test has its own database and its own Redis namespace).
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect

from tests.helpers import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    REDIS_URL,
    VM_BODY,
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

EVENT_SECONDS = 10.0


def base_env(tmp_path: Path) -> dict[str, str]:
    return {
        "VMS_JWT_SECRET": uuid.uuid4().hex + uuid.uuid4().hex,
        "VMS_ADMIN_EMAIL": ADMIN_EMAIL,
        "VMS_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "VMS_BCRYPT_ROUNDS": "4",
        "VMS_LOGIN_RATE_LIMIT": "1000",
    }


async def admin_headers(http: httpx.AsyncClient, url: str) -> dict[str, str]:
    return bearer(await login(http, ADMIN_EMAIL, ADMIN_PASSWORD, base_url=url))


async def all_changes(http: httpx.AsyncClient, url: str, headers: dict[str, str], **params: Any) -> list[Any]:
    entries: list[Any] = []
    while True:
        response = await http.get(
            f"{url}/changes", params={**params, "limit": 1000, "offset": len(entries)}, headers=headers
        )
        assert response.status_code == 200, response.text
        entries += response.json()
        if len(response.json()) < 1000:
            return entries


async def receive(socket: ClientConnection, count: int) -> list[dict[str, Any]]:
    return [decode(await asyncio.wait_for(socket.recv(), EVENT_SECONDS)) for _ in range(count)]


async def assert_silent(socket: ClientConnection, seconds: float = 1.0) -> None:
    try:
        message = await asyncio.wait_for(socket.recv(), seconds)
    except TimeoutError:
        return
    raise AssertionError(f"unexpected message: {message!r}")


def ws(server: ServerProcess, path: str, token_headers: dict[str, str]) -> Any:
    url = f"{server.ws_url}{path}"
    return connect(url, additional_headers=token_headers, open_timeout=10, close_timeout=2)


def without_origin(event: dict[str, Any]) -> dict[str, Any]:
    """``origin`` names the process that delivered the event: the one field two processes differ on."""
    return {key: value for key, value in event.items() if key != "origin"}


def assert_strictly_increasing(seqs: list[int]) -> None:
    assert all(a < b for a, b in itertools.pairwise(seqs)), f"not strictly increasing: {seqs}"


# ---------------------------------------------------------------- kill -9


async def test_kill_9_right_after_acknowledged_writes_loses_none_of_them(tmp_path: Path) -> None:
    """Writes are in flight when the process is killed: every one that was answered is in the log (and in
    the table) after a restart on the same file, and a ``since`` resume delivers it."""
    env = {
        **base_env(tmp_path),
        "VMS_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'vms.sqlite3'}",
        "VMS_JWT_SECRET_FILE": str(tmp_path / "jwt-secret"),
    }
    log = tmp_path / "server.log"
    server = start_server_process(env, log)
    acknowledged: list[dict[str, Any]] = []
    try:
        await wait_healthy(server)
        async with httpx.AsyncClient(timeout=10) as http:
            headers = await admin_headers(http, server.url)
            first = await http.post(f"{server.url}/vms", json={**VM_BODY, "name": "before"}, headers=headers)
            assert first.status_code == 201, first.text
            since = (await all_changes(http, server.url, headers))[-1]["seq"]
            killed = asyncio.Event()

            async def write(index: int) -> None:
                try:
                    response = await http.post(
                        f"{server.url}/vms", json={**VM_BODY, "name": f"acked-{index}"}, headers=headers
                    )
                except httpx.TransportError:
                    return  # cut off by the kill: not acknowledged
                if response.status_code == 201 and not killed.is_set():
                    acknowledged.append(response.json())
                    if len(acknowledged) == 12:
                        server.kill_hard()  # right after the 12th answer, with other writes in flight
                        killed.set()

            await asyncio.wait_for(asyncio.gather(*(write(index) for index in range(30))), 60)
            if not killed.is_set():
                server.kill_hard()
    finally:
        server.kill_hard()
    assert server.process.returncode == -9
    assert len(acknowledged) >= 12, acknowledged

    async with server_process(env, log) as restarted, httpx.AsyncClient(timeout=10) as http:
        headers = await admin_headers(http, restarted.url)
        entries = await all_changes(http, restarted.url, headers, entity="vm", since=since)
        logged = {entry["entity_id"]: entry for entry in entries}
        for vm in acknowledged:
            assert vm["id"] in logged, f"acknowledged VM {vm['id']} is not in the change log"
            assert (logged[vm["id"]]["action"], logged[vm["id"]]["after"]) == ("created", vm)
        # What committed without an answer is there too, consistently: the log and the table agree.
        listed = await http.get(f"{restarted.url}/vms", params={"limit": 1000}, headers=headers)
        names = {vm["name"] for vm in listed.json()} - {"before"}
        assert names == {entry["after"]["name"] for entry in entries}
        async with ws(restarted, f"/ws/vms?since={since}", headers) as socket:
            replayed = await receive(socket, len(entries))
            await assert_silent(socket)
        assert [event["seq"] for event in replayed] == [entry["seq"] for entry in entries]
        assert {event["vm"]["id"] for event in replayed} >= {vm["id"] for vm in acknowledged}
        # And the restarted process goes on numbering after what it found.
        created = await http.post(f"{restarted.url}/vms", json={**VM_BODY, "name": "after"}, headers=headers)
        assert created.status_code == 201, created.text
        newest = (await all_changes(http, restarted.url, headers, since=entries[-1]["seq"]))[-1]
        assert (newest["seq"], newest["entity_id"]) == (entries[-1]["seq"] + 1, created.json()["id"])


# ---------------------------------------------------------------- two processes, one log


@pytest.fixture
def shared_database() -> Iterator[str]:
    require("postgres")
    require("redis")
    with scratch_postgres_database("vms_cl_mp") as url:
        yield url


@pytest.mark.postgres
@pytest.mark.redis
async def test_two_processes_deliver_the_same_events_in_one_order(
    shared_database: str, tmp_path: Path
) -> None:
    env = {
        **base_env(tmp_path),
        "VMS_DATABASE_URL": shared_database,
        "VMS_REDIS_URL": REDIS_URL,
        "VMS_REDIS_NAMESPACE": f"vms-cl-mp-{uuid.uuid4().hex[:8]}",
    }
    async with (
        server_process(env, tmp_path / "a.log") as a,
        server_process(env, tmp_path / "b.log") as b,
        httpx.AsyncClient(timeout=20) as http,
    ):
        headers = await admin_headers(http, a.url)
        since = (await all_changes(http, a.url, headers))[-1]["seq"]
        async with ws(a, "/ws/vms", headers) as on_a, ws(b, "/ws/vms", headers) as on_b:
            await asyncio.sleep(0.3)  # both subscribed before the writes begin

            async def create(server: ServerProcess, name: str) -> int:
                body = {**VM_BODY, "name": name}
                response = await http.post(f"{server.url}/vms", json=body, headers=headers)
                assert response.status_code == 201, response.text
                return int(response.json()["id"])

            async def rename(server: ServerProcess, vm_id: int, name: str) -> None:
                response = await http.patch(f"{server.url}/vms/{vm_id}", json={"name": name}, headers=headers)
                assert response.status_code == 200, response.text

            # Alternating, one at a time: a write on A, then one on B, ...
            ids = [await create((a, b)[index % 2], f"alt-{index}") for index in range(12)]
            # Concurrent, on both: creations and updates of the same VMs from both sides at once.
            await asyncio.gather(
                *(create((a, b)[index % 2], f"con-{index}") for index in range(12)),
                *(rename((b, a)[index % 2], vm_id, f"renamed-{index}") for index, vm_id in enumerate(ids)),
            )
            deleted = await http.delete(f"{b.url}/vms/{ids[0]}", headers=headers)
            assert deleted.status_code == 204, deleted.text
            total = 12 + 12 + 12 + 1
            events_a, events_b = await asyncio.gather(receive(on_a, total), receive(on_b, total))
            await asyncio.gather(assert_silent(on_a), assert_silent(on_b))

        seqs = [event["seq"] for event in events_a]
        assert_strictly_increasing(seqs)
        assert [event["seq"] for event in events_b] == seqs
        assert [without_origin(event) for event in events_a] == [without_origin(event) for event in events_b]
        assert {event["origin"] for event in events_a} != {event["origin"] for event in events_b}

        changes_a = await all_changes(http, a.url, headers, since=since)
        changes_b = await all_changes(http, b.url, headers, since=since)
        assert changes_a == changes_b
        assert [entry["seq"] for entry in changes_a] == seqs  # the log holds these changes and no others
        assert seqs == list(range(seqs[0], seqs[0] + total)), "the log has holes"
        for event, entry in zip(events_a, changes_a, strict=True):
            representation = entry["before"] if entry["after"] is None else entry["after"]
            assert (event["event"], event["vm"]) == (f"vm_{entry['action']}", representation)

        # A listener that resumes on either process gets the same history.
        async with ws(a, f"/ws/vms?since={since}", headers) as resumed_a:
            replay_a = await receive(resumed_a, total)
        async with ws(b, f"/ws/vms?since={since}", headers) as resumed_b:
            replay_b = await receive(resumed_b, total)
        assert [without_origin(event) for event in replay_a] == [without_origin(event) for event in events_a]
        assert [without_origin(event) for event in replay_b] == [without_origin(event) for event in events_a]
