"""Deployments sharing one Redis server stay apart: every key and channel is under VMS_REDIS_NAMESPACE."""

from __future__ import annotations

import asyncio
import base64
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import msgspec
import pytest
import redis.asyncio

from app import create_app
from tests.helpers import (
    REDIS_URL,
    LiveServer,
    PrivateRedis,
    admin_account,
    assert_silent,
    create_account,
    create_vm,
    make_settings,
    receive_event,
    require,
    run_server,
    settings_of,
    ws_connect,
)

pytestmark = pytest.mark.redis

# What the app subscribes to on Redis: "the log has more" and ended sessions (events come from the log).
CHANNEL_NAMES = ("changes", "revocations")


@asynccontextmanager
async def deployment(tmp_path: Path, name: str, **overrides: Any) -> AsyncIterator[LiveServer]:
    """One deployment: its own fresh SQLite file (so ids start at 1), its own namespace, Redis channels."""
    directory = tmp_path / name
    directory.mkdir()
    app = create_app(make_settings(directory, channels="redis", **overrides))
    async with run_server(app) as server:
        yield server


def namespace_of(server: LiveServer) -> str:
    return str(settings_of(server).redis_namespace)


def jti_of(token: str) -> str:
    claims = token.split(".")[1]
    decoded: dict[str, Any] = msgspec.json.decode(base64.urlsafe_b64decode(claims + "=" * (-len(claims) % 4)))
    return str(decoded["jti"])


async def test_a_vm_event_reaches_only_its_own_deployment(tmp_path: Path) -> None:
    require("redis")
    async with deployment(tmp_path, "a") as a, deployment(tmp_path, "b") as b:
        assert namespace_of(a) != namespace_of(b)
        admin_a, admin_b = await admin_account(a), await admin_account(b)
        async with (
            ws_connect(a, "/ws/vms", admin_a.token) as socket_a,
            ws_connect(b, "/ws/vms", admin_b.token) as socket_b,
        ):
            created = await create_vm(a.http, admin_a, name="only-in-a")
            event = await receive_event(socket_a)
            assert event["event"] == "vm_created"
            assert event["vm"] == created
            await assert_silent(socket_b, 1.0)


async def test_deleting_user_n_elsewhere_does_not_close_this_deployments_user_n(tmp_path: Path) -> None:
    require("redis")
    async with deployment(tmp_path, "a") as a, deployment(tmp_path, "b") as b:
        admin_a, admin_b = await admin_account(a), await admin_account(b)
        cliente_a = await create_account(a.http, admin_a)
        cliente_b = await create_account(b.http, admin_b)
        assert cliente_a.id == cliente_b.id  # fresh databases: the same id names two people
        async with ws_connect(a, "/ws/vms", cliente_a.token) as socket_a:
            response = await b.http.delete(f"/users/{cliente_b.id}", headers=admin_b.headers)
            assert response.status_code == 204, response.text
            await assert_silent(socket_a, 1.0)  # not closed
            created = await create_vm(a.http, admin_a, name="still-listening")
            assert (await receive_event(socket_a))["vm"] == created


async def test_foreign_publishes_on_the_shared_server_reach_no_listener(tmp_path: Path) -> None:
    """Anything else on the server (another deployment, a stray redis-cli) may publish on any name."""
    require("redis")
    async with deployment(tmp_path, "a") as server:
        admin = await admin_account(server)
        other = f"vms-other-{uuid.uuid4().hex[:8]}"
        async with (
            ws_connect(server, "/ws/vms", admin.token) as vms_socket,
            ws_connect(server, "/ws/users", admin.token) as users_socket,
        ):
            vm = {"id": 1, "name": "forged", "cores": 1, "ram": 1, "disk": 1, "os": "x", "status": "running"}
            user = {"id": admin.id, "name": "x", "email": "x@example.com", "rol": "cliente"}
            common = {"seq": 1, "at": "2024-01-01T00:00:00Z", "actor_id": None, "origin": "elsewhere"}
            payloads = {
                "vms": msgspec.json.encode({"event": "vm_created", "vm": vm, **common}),
                "users": msgspec.json.encode({"event": "user_deleted", "user": user, **common}),
                # Would close the admin's sockets if it were believed.
                "revocations": msgspec.json.encode({"jti": jti_of(admin.token)}),
            }
            client = redis.asyncio.Redis.from_url(REDIS_URL)
            try:
                for prefix in ("", f"{other}:", "vms:"):
                    for name, payload in payloads.items():
                        await client.publish(f"{prefix}{name}", payload)
            finally:
                await client.aclose()
            await assert_silent(vms_socket, 1.0)
            await assert_silent(users_socket, 0.2)
            created = await create_vm(server.http, admin, name="the-real-one")
            assert (await receive_event(vms_socket))["vm"] == created


async def test_everything_the_app_puts_in_redis_is_under_its_namespace(
    tmp_path: Path, private_redis: PrivateRedis
) -> None:
    """On a Redis server of its own, so every key and channel there was made by this app."""
    async with deployment(tmp_path, "a", redis_url=private_redis.url) as server:
        namespace = namespace_of(server)
        admin = await admin_account(server)
        cliente = await create_account(server.http, admin)
        async with (
            ws_connect(server, "/ws/vms", admin.token),
            ws_connect(server, "/ws/users", admin.token),
        ):
            await create_vm(server.http, admin)
            failed = await server.http.post("/login", json={"email": cliente.email, "password": "wrong-pw"})
            assert failed.status_code == 401
            logout = await server.http.post("/logout", headers=cliente.headers)
            assert logout.status_code == 204
            await asyncio.sleep(0.2)
            client = redis.asyncio.Redis.from_url(private_redis.url, decode_responses=True)
            try:
                keys = [key async for key in client.scan_iter(count=1000)]
                channels = await client.pubsub_channels()
            finally:
                await client.aclose()
        assert keys, "the app stored nothing: the test did not exercise the stores"
        assert {f"{namespace}:{name}" for name in CHANNEL_NAMES} <= set(channels), channels
        outside = [name for name in [*keys, *channels] if not name.startswith(f"{namespace}:")]
        assert not outside, f"outside the namespace {namespace!r}: {outside}"
