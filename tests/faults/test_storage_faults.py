"""SQLite's storage fails under a running server: a full disk, and database files that are read-only.

Each test runs the server as a real process on storage it made itself (a small tmpfs it fills, a bind
mount it flips to read-only), and checks the failure contract: writes 503 with a detail that says why,
reads go on, ``/health`` reports the database as not writable, writes resume by themselves once space or
permission returns, nothing acknowledged is lost, and the log has one line for the fault's start and one
for its end rather than a traceback per request.
"""

from __future__ import annotations

import sqlite3
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import ADMIN_EMAIL, ADMIN_PASSWORD, VM_BODY, bearer, login
from tests.helpers.mounts import bind_mount, fill, small_tmpfs
from tests.helpers.processes import server_process, sqlite_server_env
from tests.helpers.storage_faults import assert_one_line_each_way, assert_storage_refusal, mounted

pytestmark = pytest.mark.faults

HEAL_SECONDS = 10.0


def base_env(database: Path) -> dict[str, str]:
    return sqlite_server_env(database, VMS_LOGIN_RATE_LIMIT="1000", VMS_DB_TIMEOUT_SECONDS="2")


async def write_until_answered(
    http: httpx.AsyncClient, url: str, headers: dict[str, str], wanted: int, seconds: float
) -> tuple[httpx.Response, Counter[int], list[int]]:
    """POST /vms until one answers ``wanted``; every other answer must be 201 or 503 (never a 500)."""
    statuses: Counter[int] = Counter()
    created: list[int] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        response = await http.post(
            f"{url}/vms", json={**VM_BODY, "name": "x" * 100, "os": "y" * 100}, headers=headers
        )
        statuses[response.status_code] += 1
        assert response.status_code in (201, 503), response.text
        if response.status_code == 201:
            created.append(response.json()["id"])
        if response.status_code == wanted:
            return response, statuses, created
    raise AssertionError(f"no {wanted} within {seconds} s: {dict(statuses)}")


async def listed_ids(http: httpx.AsyncClient, url: str, headers: dict[str, str]) -> set[int]:
    response = await http.get(f"{url}/vms", params={"limit": 1000}, headers=headers)
    assert response.status_code == 200, response.text
    return {vm["id"] for vm in response.json()}


async def health(http: httpx.AsyncClient, url: str) -> dict[str, Any]:
    response = await http.get(f"{url}/health")
    assert response.status_code == 200, response.text  # degraded, not down: reads go on
    body: dict[str, Any] = response.json()
    return body


async def test_a_full_disk_refuses_writes_with_503_and_heals_by_itself(tmp_path: Path) -> None:
    with mounted(small_tmpfs(32)) as disk:
        log = tmp_path / "server.log"
        async with (
            server_process(base_env(disk / "vms.sqlite3"), log) as server,
            httpx.AsyncClient(timeout=10) as http,
        ):
            headers = bearer(await login(http, ADMIN_EMAIL, ADMIN_PASSWORD, base_url=server.url))
            _, _, acknowledged = await write_until_answered(http, server.url, headers, 201, 5)
            filler = fill(disk)

            refused, _, more = await write_until_answered(http, server.url, headers, 503, 20)
            acknowledged += more
            assert_storage_refusal(refused, "full")
            assert set(acknowledged) <= await listed_ids(http, server.url, headers)  # reads go on
            state = await health(http, server.url)
            assert state["status"] == "degraded", state
            assert state["database_writable"] is False, state
            again = await http.post(f"{server.url}/vms", json=VM_BODY, headers=headers)
            assert_storage_refusal(again, "full")

            filler.unlink()
            started = time.monotonic()
            _, _, more = await write_until_answered(http, server.url, headers, 201, HEAL_SECONDS)
            acknowledged += more
            assert time.monotonic() - started < HEAL_SECONDS
            state = await health(http, server.url)
            assert state["status"] == "ok", state
            assert state["database_writable"] is True, state
            assert set(acknowledged) <= await listed_ids(http, server.url, headers)
        assert_one_line_each_way(log)


async def test_read_only_database_files_refuse_writes_and_heal_when_writable(tmp_path: Path) -> None:
    """The files are read-only when the server starts (v1: 500 for every write, until a restart, even
    after the permission came back). SQLite keeps a file it opened read-only read-only for good, so the
    server must drop those connections and open new ones."""
    data = tmp_path / "data"
    data.mkdir()
    with mounted(bind_mount(data)) as mount:
        env = base_env(mount.view / "vms.sqlite3")
        prepare_log, log = tmp_path / "prepare.log", tmp_path / "server.log"
        async with server_process(env, prepare_log) as server, httpx.AsyncClient(timeout=10) as http:
            token = await login(http, ADMIN_EMAIL, ADMIN_PASSWORD, base_url=server.url)
            headers = bearer(token)
            _, _, acknowledged = await write_until_answered(http, server.url, headers, 201, 5)
        # A reader elsewhere keeps the WAL's files in place, as on a live host (without them SQLite
        # cannot read a WAL database on read-only storage at all).
        keeper = sqlite3.connect(data / "vms.sqlite3")
        try:
            keeper.execute("SELECT count(*) FROM virtual_machine").fetchone()
            mount.read_only()
            async with server_process(env, log) as server, httpx.AsyncClient(timeout=10) as http:
                state = await health(http, server.url)  # reported before any write meets it
                assert state["status"] == "degraded", state
                assert state["database_writable"] is False, state
                assert set(acknowledged) <= await listed_ids(http, server.url, headers)  # reads go on
                refused = await http.post(f"{server.url}/vms", json=VM_BODY, headers=headers)
                assert_storage_refusal(refused, "read-only")

                mount.writable()
                _, _, created = await write_until_answered(http, server.url, headers, 201, HEAL_SECONDS)
                state = await health(http, server.url)
                assert state["status"] == "ok", state
                assert state["database_writable"] is True, state
                assert set(acknowledged + created) <= await listed_ids(http, server.url, headers)
        finally:
            keeper.close()
        assert_one_line_each_way(log)
